"""The serving database file (accounts and transcripts share it): the one way the server and every
`tim users` / `tim transcripts` command open it, safe while another process has it open.

SQLite keeps its locks as POSIX advisory locks, and a process loses all of those on a file when it
closes *any* descriptor of that file. So nothing here opens the file outside SQLite once it exists:
a new file is made exclusively (no connection of this process can hold it yet) with owner-only
permissions before SQLite opens it, an existing one is only chmod-ed. Otherwise the next process to
close its connection believes it is the last one, checkpoints and deletes the write-ahead log, and
the server goes on writing into a log nobody else sees.

A connection remembers which file (device, inode) it opened: `same_file` says whether the
configured path still names it (deleted, or replaced while serving: writes would go to a file no
other process sees).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tutorkit import TimError


class DatabaseError(Exception):
    """The serving database cannot be written (the file gone, replaced, read-only, the disk full)."""


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Database:
    """One SQLite connection to the serving file (WAL, autocommit, secure_delete), readable by its
    owner only: the folder 0700 when made here, the file 0600 (SQLite gives its -wal and -shm
    files the same); deleted rows overwritten, not left readable in free pages."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:  # exclusive: only a file that did not exist, which no connection here can hold
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                pass
            for file in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
                if file.exists():
                    os.chmod(file, 0o600)
            self.connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA secure_delete=ON")
        except (OSError, sqlite3.Error) as e:  # read-only file or disk, a folder that cannot be made
            raise TimError(f"cannot open the serving database {self.path} for writing: "
                           f"{getattr(e, 'strerror', None) or e}") from None  # fmt: skip
        self._file = _identity(self.path)

    def same_file(self) -> bool:
        """The configured path still names the file this connection opened."""
        return self._file is not None and _identity(self.path) == self._file

    def check(self) -> None:
        """Before a write: raise DatabaseError if the path no longer names the open file."""
        if not self.same_file():
            raise DatabaseError(f"the database file {self.path} is gone or was replaced since it was opened")

    def writable(self) -> bool:
        """For /health, without writing: the open file is still the one at the path, and it and
        its write-ahead log may be written (permissions, a read-only mount, an immutable flag)."""
        wal = Path(f"{self.path}-wal")
        return self.same_file() and os.access(self.path, os.W_OK) and (not wal.exists() or os.access(wal, os.W_OK))

    def backup(self, destination: str | Path) -> None:
        """A consistent copy at `destination` (a new file, 0600) through SQLite's online backup:
        safe while the server writes, the write-ahead log's newest pages included."""
        destination = Path(destination)
        try:
            os.close(os.open(destination, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise TimError(f"{destination} already exists; back up to a new file") from None
        except OSError as e:
            raise TimError(f"cannot write {destination}: {e.strerror}") from None
        target = sqlite3.connect(destination)
        try:
            self.connection.backup(target)
        except sqlite3.Error as e:
            target.close()
            destination.unlink(missing_ok=True)
            raise TimError(f"backup to {destination} failed: {e}") from None
        target.close()

    def close(self) -> None:
        self.connection.close()
