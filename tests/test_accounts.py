"""Accounts: hashed passwords, roles, and the `tim users` command."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from serve.accounts import Accounts
from tutorkit import TimError

ROOT = Path(__file__).resolve().parent.parent


def test_accounts(tmp_path):
    db = tmp_path / "s.sqlite"
    accounts = Accounts(db)
    accounts.add("amy", "student", "pencil42")
    accounts.add("ms.lee", "staff", "chalkboard")
    assert accounts.verify("amy", "pencil42") == "student" and accounts.verify("ms.lee", "chalkboard") == "staff"
    assert accounts.verify("amy", "Pencil42") is None and accounts.verify("nobody", "x") is None
    stored = sqlite3.connect(db).execute("SELECT hash FROM users WHERE name='amy'").fetchone()[0]
    assert b"pencil42" not in stored and stored.startswith(b"$argon2id$")  # only an argon2id hash, with its parameters
    with pytest.raises(TimError, match="already exists"):
        accounts.add("amy", "student", "another1")
    with pytest.raises(TimError, match="too short"):
        accounts.add("ben", "student", "abc")
    with pytest.raises(TimError, match="role must be one of"):
        accounts.add("ben", "admin", "abcdefg")
    assert accounts.list() == [("ms.lee", "staff"), ("amy", "student")]
    assert accounts.remove("amy") and not accounts.remove("amy")


def test_tim_users_command(tmp_path):
    tim = str(Path(sys.executable).parent / "tim")
    db = str(tmp_path / "s.sqlite")
    r = subprocess.run([tim, "users", "add", "ms.lee", "--role", "staff", "--password_stdin", "true", "--db", db],
                       input="chalkboard\n", capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = subprocess.run([tim, "users", "list", "--db", db], capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.split() == ["ms.lee", "staff"]
    r = subprocess.run([tim, "users", "remove", "nobody", "--db", db], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.strip() == "tim: error: no user 'nobody'"
    assert Accounts(db).verify("ms.lee", "chalkboard") == "staff"


def test_api_keys(tmp_path):
    db = tmp_path / "s.sqlite"
    accounts = Accounts(db)
    accounts.add("amy", "student", "pencil42")
    key = accounts.new_api_key("amy")
    assert accounts.user_for_key(key) == ("amy", "student")
    assert accounts.user_for_key(key + "x") is None and accounts.user_for_key("") is None
    assert key not in str(sqlite3.connect(db).execute("SELECT * FROM api_keys").fetchall())  # hashed
    with pytest.raises(TimError, match="no user"):
        accounts.new_api_key("nobody")
    accounts.remove("amy")
    assert accounts.user_for_key(key) is None  # a removed user's keys stop working
    tim = str(Path(sys.executable).parent / "tim")
    accounts.add("ben", "student", "eraser42")
    r = subprocess.run([tim, "users", "key", "ben", "--db", str(db)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and Accounts(db).user_for_key(r.stdout.strip()) == ("ben", "student")


def test_a_new_password_a_new_role_or_removal_ends_sessions(tmp_path):
    accounts = Accounts(tmp_path / "s.sqlite")
    accounts.add("amy", "student", "pencil42")
    day = 8 * 3600
    token = accounts.open_session("amy")
    assert accounts.session_user(token, day) == ("amy", "student")
    assert accounts.session_user(token + "x", day) is None and accounts.session_user("", day) is None
    assert accounts.session_user(token, lifetime_s=0) is None  # past the session lifetime
    accounts.set_password("amy", "crayon99")
    assert accounts.session_user(token, day) is None and accounts.verify("amy", "pencil42") is None
    token = accounts.open_session("amy")
    accounts.set_role("amy", "staff")
    assert accounts.session_user(token, day) is None
    token = accounts.open_session("amy")
    accounts.close_session(token)  # logout
    assert accounts.session_user(token, day) is None
    token = accounts.open_session("amy")
    assert accounts.remove("amy") and accounts.session_user(token, day) is None
    # The name is not given again: a new "amy" would inherit the old one's chats (filed by name).
    with pytest.raises(TimError, match="belonged to an account removed on .* names are not reused"):
        accounts.add("amy", "student", "pencil42")


def test_an_older_files_scrypt_hash_still_logs_in_and_becomes_argon2id(tmp_path):
    import hashlib

    db = tmp_path / "s.sqlite"
    old = sqlite3.connect(db)
    old.execute("CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, salt BLOB NOT NULL, hash BLOB NOT NULL, "
                "created_at REAL NOT NULL)")  # fmt: skip
    salt = b"0123456789abcdef"
    old.execute("INSERT INTO users VALUES ('amy', 'student', ?, ?, 0)",
                (salt, hashlib.scrypt(b"pencil42", salt=salt, n=2**14, r=8, p=1)))  # fmt: skip
    old.commit()
    accounts = Accounts(db)
    assert accounts.verify("amy", "wrong!!") is None and accounts.verify("amy", "pencil42") == "student"
    assert sqlite3.connect(db).execute("SELECT hash FROM users").fetchone()[0].startswith(b"$argon2id$")
    assert accounts.verify("amy", "pencil42") == "student"


def test_keys_are_listed_and_revoked_one_by_one(tmp_path):
    accounts = Accounts(tmp_path / "s.sqlite")
    accounts.add("amy", "student", "pencil42")
    first, second = accounts.new_api_key("amy"), accounts.new_api_key("amy")
    ids = [key_id for key_id, _ in accounts.api_keys("amy")]
    assert len(ids) == 2 and all(len(i) == 12 for i in ids)
    revoked = next(i for i in ids if hashlib.sha256(first.encode()).hexdigest().startswith(i))
    assert accounts.revoke_api_key(revoked) == "amy"
    assert accounts.user_for_key(first) is None and accounts.user_for_key(second) == ("amy", "student")
    with pytest.raises(TimError, match="no API key"):
        accounts.revoke_api_key(revoked)


def test_roster_import_generates_passwords_written_once(tmp_path):
    import csv
    import stat

    db = tmp_path / "s.sqlite"
    roster = tmp_path / "roster.csv"
    roster.write_text("name,role\namy,student\nms.lee,staff\nben,\n", encoding="utf-8")
    out = tmp_path / "passwords.csv"
    tim = str(Path(sys.executable).parent / "tim")
    r = subprocess.run([tim, "users", "import", str(roster), "--passwords_out", str(out), "--db", str(db)],
                       capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rows = list(csv.DictReader(out.open()))
    accounts = Accounts(db)
    assert [(row["name"], row["role"]) for row in rows] == [("amy", "student"), ("ms.lee", "staff"), ("ben", "student")]
    assert all(accounts.verify(row["name"], row["password"]) == row["role"] for row in rows)
    r = subprocess.run([tim, "users", "import", str(roster), "--passwords_out", str(out), "--db", str(db)],
                       capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert r.returncode == 2 and "already exists; the passwords file is written once" in r.stderr
    roster.write_text("name,role\ncat,student\nbad name!,student\n", encoding="utf-8")
    with pytest.raises(TimError, match=rf"^{roster}:3: user name 'bad name!'"):
        from serve.accounts import import_roster

        import_roster(accounts, roster, tmp_path / "new.csv")
    assert accounts.role("cat") is None and not (tmp_path / "new.csv").exists()  # nothing half done


def test_database_files_are_private(tmp_path):
    import stat

    db = tmp_path / "serve" / "s.sqlite"
    accounts = Accounts(db)
    accounts.add("amy", "student", "pencil42")
    for path in (db, Path(f"{db}-wal")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
