"""Student and staff accounts, in the same SQLite file as the transcripts.

    tim users add NAME --role student|staff [--password_stdin true]   (asks for the password)
    tim users remove NAME
    tim users list
    tim users key NAME        prints a new API key for NAME (for /v1/chat/completions)

Passwords are stored only as salted scrypt hashes, API keys only as SHA-256 hashes (a key is
32 random bytes, so a fast hash is enough).
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import secrets
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tutorkit import TimError, run_main
from tutorkit.config import ConfigParser

ROLES = ("student", "staff")
MIN_PASSWORD = 6
# scrypt cost: ~50 ms per check on one core; enough against offline guessing of a stolen file.
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Accounts:
    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT NULL, "
                "salt BLOB NOT NULL, hash BLOB NOT NULL, created_at REAL NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS api_keys (hash TEXT PRIMARY KEY, name TEXT NOT NULL, created_at REAL NOT NULL)"
            )

    def add(self, name: str, role: str, password: str) -> None:
        if role not in ROLES:
            raise TimError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if not name or not name.replace(".", "").replace("-", "").replace("_", "").isalnum():
            raise TimError(f"user name {name!r}: use letters, digits, '.', '-' or '_'")
        if len(password) < MIN_PASSWORD:
            raise TimError(f"password too short: at least {MIN_PASSWORD} characters")
        salt = os.urandom(16)
        try:
            with self._lock:
                self._db.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?)", (name, role, salt, _hash(password, salt), time.time()))
        except sqlite3.IntegrityError:
            raise TimError(f"user {name!r} already exists") from None

    def remove(self, name: str) -> bool:
        with self._lock:
            self._db.execute("DELETE FROM api_keys WHERE name = ?", (name,))
            return self._db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0

    def new_api_key(self, name: str) -> str:
        if self.role(name) is None:
            raise TimError(f"no user {name!r}")
        key = "tim-" + secrets.token_urlsafe(32)
        with self._lock:
            self._db.execute("INSERT INTO api_keys VALUES (?, ?, ?)", (_key_hash(key), name, time.time()))
        return key

    def user_for_key(self, key: str) -> tuple[str, str] | None:
        """(name, role) of the API key's owner, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT u.name, u.role FROM api_keys k JOIN users u ON u.name = k.name WHERE k.hash = ?", (_key_hash(key),)
            ).fetchone()
        return tuple(row) if row else None

    def role(self, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT role FROM users WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def list(self) -> list[tuple[str, str]]:
        with self._lock:
            return self._db.execute("SELECT name, role FROM users ORDER BY role, name").fetchall()

    def verify(self, name: str, password: str) -> str | None:
        """The user's role if the password is right, else None."""
        with self._lock:
            row = self._db.execute("SELECT role, salt, hash FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        role, salt, stored = row
        return role if hmac.compare_digest(_hash(password, salt), stored) else None


@dataclass
class UsersConfig:
    db: str = field(default="runs/serve/transcripts.sqlite", metadata={"help": "The serving SQLite file."})
    role: str = field(default="student", metadata={"help": "add: student | staff"})
    password_stdin: bool = field(default=False, metadata={"help": "add: read the password from standard input."})


def make_parser() -> ConfigParser:
    parser = ConfigParser(UsersConfig, prog="tim users", doc=__doc__)
    parser.add_argument("action", choices=["add", "remove", "list", "key"])
    parser.add_argument("name", nargs="?", default=None)
    return parser


def main(args=None) -> None:
    cfg, extra = make_parser().parse(args)
    accounts = Accounts(cfg.db)
    if extra.action == "list":
        for name, role in accounts.list():
            print(f"{name}\t{role}")
        return
    if not extra.name:
        raise TimError(f"users {extra.action} needs a NAME")
    if extra.action == "key":
        print(accounts.new_api_key(extra.name))
        return
    if extra.action == "remove":
        if not accounts.remove(extra.name):
            raise TimError(f"no user {extra.name!r}")
        print(f"removed {extra.name}")
        return
    password = sys.stdin.readline().rstrip("\n") if cfg.password_stdin else getpass.getpass(f"password for {extra.name}: ")
    accounts.add(extra.name, cfg.role, password)
    print(f"added {extra.name} ({cfg.role})")


if __name__ == "__main__":
    run_main(main)
