"""Student and staff accounts, their browser sessions and API keys, in the same SQLite file as
the transcripts.

    tim users add NAME --role student|staff [--password_stdin true]   (asks for the password)
    tim users import roster.csv --passwords_out FILE   many at once: CSV columns name,role; new
                              passwords are generated and written once to FILE (0600) to hand out
    tim users passwd NAME     a new password (asks for it); ends NAME's sessions
    tim users role NAME --role staff|student             ends NAME's sessions
    tim users remove NAME     the account, its sessions and keys go; the name is never reused
                              (its chats stay for staff under that name until deleted or purged)
    tim users list
    tim users key NAME        prints a new API key for NAME (for /v1/chat/completions)
    tim users keys NAME       NAME's keys (id, created); tim users revoke KEY_ID

Passwords are stored only as argon2id hashes (parameters inside each hash; scrypt hashes from
older files still verify and are replaced at the next login), API keys and session tokens only
as SHA-256 hashes (32 random bytes each, so a fast hash is enough). Every account has an
`epoch`: a new password, a new role or removal bump it, and a session made under an older epoch
is over (checked on every request), as is one older than the server's session lifetime.
A write to a database file that is no longer at its path raises DatabaseError (serve/database.py).
"""

from __future__ import annotations

import csv
import getpass
import hashlib
import hmac
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from serve.database import Database
from tutorkit import TimError, run_main
from tutorkit.config import ConfigParser

ROLES = ("student", "staff")
MIN_PASSWORD = 6
# argon2id at OWASP's minimum (19 MiB, 2 passes, 1 lane): ~30 ms here, so a class logging in
# at once is not a queue, while a stolen file still costs a guesser 19 MiB per try.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
_DUMMY = HASHER.hash("not a password")  # verified against for unknown names: the same time either way
SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # the hashes of files before argon2id


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_name(name: str) -> None:
    if not name or not name.replace(".", "").replace("-", "").replace("_", "").isalnum():
        raise TimError(f"user name {name!r}: use letters, digits, '.', '-' or '_'")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise TimError(f"password too short: at least {MIN_PASSWORD} characters")


class Accounts:
    def __init__(self, path: str | Path):
        self._database = Database(path)
        self._db = self._database.connection
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript(
                """CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT NULL, salt BLOB NOT NULL,
                                                     hash BLOB NOT NULL, created_at REAL NOT NULL);
                   CREATE TABLE IF NOT EXISTS api_keys (hash TEXT PRIMARY KEY, name TEXT NOT NULL, created_at REAL NOT NULL);
                   CREATE TABLE IF NOT EXISTS sessions (hash TEXT PRIMARY KEY, name TEXT NOT NULL, epoch INTEGER NOT NULL,
                                                        created_at REAL NOT NULL);
                   CREATE TABLE IF NOT EXISTS removed_users (name TEXT PRIMARY KEY, removed_at REAL NOT NULL);"""
            )
            if "epoch" not in {row[1] for row in self._db.execute("PRAGMA table_info(users)")}:
                self._db.execute("ALTER TABLE users ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0")

    def _one(self, sql: str, args=()):
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _run(self, sql: str, args=()) -> int:
        with self._lock:
            self._database.check()
            return self._db.execute(sql, args).rowcount

    # --- accounts

    def add(self, name: str, role: str, password: str) -> None:
        if role not in ROLES:
            raise TimError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        _check_name(name)
        _check_password(password)
        removed = self._one("SELECT removed_at FROM removed_users WHERE name = ?", (name,))
        if removed:
            when = time.strftime("%Y-%m-%d", time.localtime(removed[0]))
            # A new holder of the name would inherit the old holder's chats (they are filed by name).
            raise TimError(f"user name {name!r} belonged to an account removed on {when}; names are not reused. "
                           "Choose another name")  # fmt: skip
        encoded = HASHER.hash(password).encode()
        try:
            self._run("INSERT INTO users (name, role, salt, hash, created_at) VALUES (?, ?, ?, ?, ?)",
                      (name, role, b"", encoded, time.time()))  # fmt: skip
        except Exception as e:  # sqlite3.IntegrityError: the primary key
            if "UNIQUE" in str(e):
                raise TimError(f"user {name!r} already exists") from None
            raise

    def remove(self, name: str) -> bool:
        with self._lock:
            self._database.check()
            if self._db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                return False
            self._db.execute("DELETE FROM api_keys WHERE name = ?", (name,))
            self._db.execute("DELETE FROM sessions WHERE name = ?", (name,))
            self._db.execute("INSERT OR REPLACE INTO removed_users VALUES (?, ?)", (name, time.time()))
        return True

    def set_password(self, name: str, password: str) -> None:
        _check_password(password)
        if not self._run("UPDATE users SET hash = ?, salt = ?, epoch = epoch + 1 WHERE name = ?",
                         (HASHER.hash(password).encode(), b"", name)):  # fmt: skip
            raise TimError(f"no user {name!r}")
        self._run("DELETE FROM sessions WHERE name = ?", (name,))

    def set_role(self, name: str, role: str) -> None:
        if role not in ROLES:
            raise TimError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if not self._run("UPDATE users SET role = ?, epoch = epoch + 1 WHERE name = ?", (role, name)):
            raise TimError(f"no user {name!r}")
        self._run("DELETE FROM sessions WHERE name = ?", (name,))

    def role(self, name: str) -> str | None:
        row = self._one("SELECT role FROM users WHERE name = ?", (name,))
        return row[0] if row else None

    def list(self) -> list[tuple[str, str]]:
        with self._lock:
            return self._db.execute("SELECT name, role FROM users ORDER BY role, name").fetchall()

    def verify(self, name: str, password: str) -> str | None:
        """The user's role if the password is right, else None. Slow on purpose (argon2id): call
        it off the event loop. An unknown name costs the same time as a wrong password."""
        row = self._one("SELECT role, salt, hash FROM users WHERE name = ?", (name,))
        role, salt, stored = row if row else (None, b"", _DUMMY.encode())
        if stored.startswith(b"$argon2"):
            try:
                HASHER.verify(stored.decode(), password)
            except (VerificationError, InvalidHashError):
                return None
            return role
        if not hmac.compare_digest(hashlib.scrypt(password.encode(), salt=salt, **SCRYPT), stored):
            return None
        # an older file's scrypt hash: replaced by argon2id now that the password is known
        self._run("UPDATE users SET hash = ?, salt = ? WHERE name = ?", (HASHER.hash(password).encode(), b"", name))
        return role

    # --- browser sessions

    def open_session(self, name: str) -> str:
        """A new session token for `name` (after a successful login); only its hash is stored."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._database.check()
            epoch = self._db.execute("SELECT epoch FROM users WHERE name = ?", (name,)).fetchone()
            if epoch is None:
                raise TimError(f"no user {name!r}")
            self._db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (_sha256(token), name, epoch[0], time.time()))
        return token

    def session_user(self, token: str, lifetime_s: float) -> tuple[str, str] | None:
        """(name, role) of a live session: the account still there, its epoch unchanged since
        login, and the session younger than `lifetime_s`."""
        if not token:
            return None
        row = self._one(
            """SELECT u.name, u.role FROM sessions s JOIN users u ON u.name = s.name
               WHERE s.hash = ? AND s.epoch = u.epoch AND s.created_at > ?""",
            (_sha256(token), time.time() - lifetime_s),
        )
        return tuple(row) if row else None

    def close_session(self, token: str) -> None:
        self._run("DELETE FROM sessions WHERE hash = ?", (_sha256(token),))

    def purge_sessions(self, lifetime_s: float) -> int:
        return self._run("DELETE FROM sessions WHERE created_at <= ?", (time.time() - lifetime_s,))

    # --- API keys

    def new_api_key(self, name: str) -> str:
        if self.role(name) is None:
            raise TimError(f"no user {name!r}")
        key = "tim-" + secrets.token_urlsafe(32)
        self._run("INSERT INTO api_keys VALUES (?, ?, ?)", (_sha256(key), name, time.time()))
        return key

    def api_keys(self, name: str) -> list[tuple[str, float]]:
        """(key id, created_at) of NAME's keys; the id is the first 12 hex digits of the key's hash."""
        with self._lock:
            rows = self._db.execute("SELECT hash, created_at FROM api_keys WHERE name = ? ORDER BY created_at", (name,))
            return [(h[:12], t) for h, t in rows.fetchall()]

    def revoke_api_key(self, key_id: str) -> str:
        """Revoke the key whose id is `key_id`; returns its owner."""
        if len(key_id) < 12 or not all(c in "0123456789abcdef" for c in key_id):
            raise TimError(f"key id {key_id!r}: 12 hex digits, as `tim users keys NAME` lists them")
        with self._lock:
            self._database.check()
            rows = self._db.execute("SELECT hash, name FROM api_keys WHERE hash LIKE ?", (key_id + "%",)).fetchall()
            if len(rows) != 1:
                raise TimError(f"no API key {key_id!r}")
            self._db.execute("DELETE FROM api_keys WHERE hash = ?", (rows[0][0],))
        return rows[0][1]

    def user_for_key(self, key: str) -> tuple[str, str] | None:
        """(name, role) of the API key's owner, or None."""
        row = self._one("SELECT u.name, u.role FROM api_keys k JOIN users u ON u.name = k.name WHERE k.hash = ?",
                        (_sha256(key),))  # fmt: skip
        return tuple(row) if row else None


def import_roster(accounts: Accounts, roster: Path, passwords_out: Path) -> int:
    """Accounts for every row of a CSV roster (columns name, role), each with a generated
    password, written once to `passwords_out` (0600, refused if it exists). All rows are checked
    before any account is made: a bad row stops the import with its line."""
    if passwords_out.exists():
        raise TimError(f"{passwords_out} already exists; the passwords file is written once, to a new path")
    try:
        with roster.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise TimError(f"{roster}: cannot read: {e.strerror}") from None
    people = []
    for line, row in enumerate(rows, start=2):
        name, role = (row.get("name") or "").strip(), (row.get("role") or "student").strip()
        try:
            _check_name(name)
            if role not in ROLES:
                raise TimError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
            if accounts.role(name) is not None:
                raise TimError(f"user {name!r} already exists")
        except TimError as e:
            raise TimError(f"{roster}:{line}: {e}") from None
        people.append((name, role, secrets.token_urlsafe(9)))
    fd = os.open(passwords_out, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["name", "role", "password"])
        for name, role, password in people:
            accounts.add(name, role, password)
            out.writerow([name, role, password])
    return len(people)


@dataclass
class UsersConfig:
    db: str = field(default="runs/serve/transcripts.sqlite", metadata={"help": "The serving SQLite file."})
    role: str = field(default="student", metadata={"help": "add, role: student | staff"})
    password_stdin: bool = field(default=False, metadata={"help": "add, passwd: read the password from standard input."})
    passwords_out: str = field(default="", metadata={"help": "import: where the generated passwords go (new file)."})


def make_parser() -> ConfigParser:
    parser = ConfigParser(UsersConfig, prog="tim users", doc=__doc__)
    parser.add_argument("action", choices=["add", "import", "passwd", "role", "remove", "list", "key", "keys", "revoke"])
    parser.add_argument("name", nargs="?", default=None, help="the user (import: the roster CSV; revoke: the key id)")
    return parser


def _password(cfg: UsersConfig, name: str) -> str:
    return sys.stdin.readline().rstrip("\n") if cfg.password_stdin else getpass.getpass(f"password for {name}: ")


def main(args=None) -> None:
    cfg, extra = make_parser().parse(args)
    accounts = Accounts(cfg.db)
    if extra.action == "list":
        for name, role in accounts.list():
            print(f"{name}\t{role}")
        return
    if not extra.name:
        raise TimError(f"users {extra.action} needs a {'ROSTER.csv' if extra.action == 'import' else 'NAME'}")
    name = extra.name
    if extra.action == "import":
        if not cfg.passwords_out:
            raise TimError("users import needs --passwords_out FILE (the generated passwords, to hand out)")
        n = import_roster(accounts, Path(name), Path(cfg.passwords_out))
        print(f"added {n} accounts; their passwords are in {cfg.passwords_out} (readable by you only)")
    elif extra.action == "key":
        print(accounts.new_api_key(name))
    elif extra.action == "keys":
        for key_id, created in accounts.api_keys(name):
            print(f"{key_id}\t{time.strftime('%Y-%m-%d %H:%M', time.localtime(created))}")
    elif extra.action == "revoke":
        print(f"revoked a key of {accounts.revoke_api_key(name)}")
    elif extra.action == "remove":
        if not accounts.remove(name):
            raise TimError(f"no user {name!r}")
        print(f"removed {name}; the name will not be given again (chats stay for staff: tim transcripts delete {name})")
    elif extra.action == "passwd":
        accounts.set_password(name, _password(cfg, name))
        print(f"new password for {name}; their sessions are over")
    elif extra.action == "role":
        accounts.set_role(name, cfg.role)
        print(f"{name} is {cfg.role} now; their sessions are over")
    else:
        accounts.add(name, cfg.role, _password(cfg, name))
        print(f"added {name} ({cfg.role})")


if __name__ == "__main__":
    run_main(main)
