"""Accounts: hashed passwords, roles, and the `tim users` command."""

from __future__ import annotations

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
    assert b"pencil42" not in stored and len(stored) == 64  # only a salted scrypt hash is kept
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
