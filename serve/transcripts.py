"""Transcripts in SQLite (WAL): every student message is written before Tim's reply is shown,
with its safeguarding flags; staff views, exports and deletes are audited; a retention period
purges old chats.

    tim transcripts purge --retention_days 365     (also done each time `tim serve` starts)
    tim transcripts export NAME > NAME.json        (audited as the operating-system user)
    tim transcripts delete NAME
    tim transcripts backup FILE                    a consistent copy to a new file, safe while serving

Tables: chats(id, student, started_at, flagged), messages(id, chat_id, role, content, flags,
created_at, ending, safeguarding), audit(id, staff, action, target, at), alerts(id, message_id,
chat_id, tier, categories, created_at, acknowledged_by, acknowledged_at, note): the staff queue,
one row per student message safeguarding put at the urgent or concern tier, written in the same
transaction as the message; deliveries(alert_id, channel, attempts, next_try, delivered_at,
last_error): each urgent alert's sending through each configured channel (serve/alerts.py),
kept until it succeeds. Times are Unix seconds (UTC). A student message's `safeguarding` is what safeguarding decided for it, as JSON: its tier
("urgent", "concern", "none"), the layer that found the sign, the guard's score per category.
A message's `ending` says how it ended: "complete"; for Tim's replies also "silent" (he said
nothing on purpose), "stopped" (the student left mid-reply; the text is what was shown),
"failed" (the model could not answer; the text is what came before the failure) or "refused"
(a limit refused the turn; the text is what the student was told). A student message's flags
are safeguarding's: disclosure categories and "abusive".

The server writes through one writer thread (`run`, `submit`), so a transcript write never
waits behind generation in a shared pool, and writes land in the order they were made. Calls
queued together (a class sending at once) share one commit: one fsync instead of one per call,
each call in its own savepoint, every result handed back only after the commit. A write that
cannot be made (the file deleted, replaced or read-only, the disk full) raises TranscriptsError: the
server tells the client, never acknowledges a message it did not store.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import queue
import sqlite3
import sys
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from serve.database import Database, DatabaseError
from tutorkit import TimError, run_main
from tutorkit.config import ConfigParser
from tutorkit.safeguarding import ABUSIVE

SCHEMA = """
CREATE TABLE IF NOT EXISTS chats (
    id INTEGER PRIMARY KEY AUTOINCREMENT, student TEXT NOT NULL, started_at REAL NOT NULL, flagged INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    role TEXT NOT NULL, content TEXT NOT NULL, flags TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL,
    ending TEXT NOT NULL DEFAULT 'complete', safeguarding TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, staff TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE, tier TEXT NOT NULL, categories TEXT NOT NULL,
    created_at REAL NOT NULL, acknowledged_by TEXT, acknowledged_at REAL, note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS deliveries (
    alert_id INTEGER NOT NULL REFERENCES alerts(id) ON DELETE CASCADE, channel TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL, delivered_at REAL, last_error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (alert_id, channel)
);
CREATE INDEX IF NOT EXISTS messages_by_chat ON messages(chat_id);
CREATE INDEX IF NOT EXISTS chats_by_student ON chats(student);
"""
# PRAGMA user_version of the file. 1: chat ids never reused (AUTOINCREMENT: a deleted chat's id
# must not come back as someone else's), messages.ending. 2: messages.safeguarding. 3: alerts,
# deliveries (new tables: CREATE IF NOT EXISTS makes them).
SCHEMA_VERSION = 3
TIERS_QUEUED = ("urgent", "concern")  # safeguarding tiers that put a message in the staff queue
ALERT_GROUP_S = 600.0  # a student's urgent messages within this of an alert sent share that alert's messages
ENDINGS = ("complete", "silent", "stopped", "failed", "refused")


# At most this many queued calls share a commit (a class sending at once queues ~4 per student).
BATCH = 128


def _write_loop(jobs: queue.SimpleQueue, owner: weakref.ref) -> None:
    """The writer thread: what is queued together runs in one transaction (Transcripts._run_batch);
    a lone call, or a batch whose transaction fails, runs call by call in autocommit."""
    while (job := jobs.get()) is not None:
        batch = [job]
        while len(batch) < BATCH:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                jobs.put(None)  # stop after this batch
                break
            batch.append(job)
        store = owner()  # alive: the queued calls are its bound methods
        if len(batch) == 1 or store is None or not store._run_batch(batch):
            for future, fn, args in batch:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args))
                    except BaseException as e:
                        future.set_exception(e)
        del store, batch, job


def _stop_writer(jobs: queue.SimpleQueue, writer: threading.Thread) -> None:
    jobs.put(None)
    if writer is not threading.current_thread():
        writer.join(timeout=60)


class TranscriptsError(DatabaseError):
    """The transcripts cannot be written (the file gone, replaced or read-only, the disk full)."""


class Transcripts:
    def __init__(self, path: str | Path, alert_channels: tuple[str, ...] = ()):
        """`alert_channels`: the channels (serve/alerts.py) each urgent alert is sent through."""
        self.path = Path(path)
        self.alert_channels = tuple(alert_channels)
        # One connection shared by Gradio's worker threads, serialized by a lock: writes are tiny.
        # Re-entrant: the writer holds it across a batch whose calls take it again.
        self._database = Database(self.path)
        self._db = self._database.connection
        self._lock = threading.RLock()
        with self._lock:
            self._migrate()
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()  # (future, fn, args), or None to stop
        # The thread holds this object weakly, so a store nobody uses is collected and its thread
        # ends; at exit, queued writes are finished first (the finalizer waits for the thread).
        self._writer = threading.Thread(target=_write_loop, args=(self._jobs, weakref.ref(self)),
                                        name="tim-transcripts", daemon=True)  # fmt: skip
        self._writer.start()
        self._stop = weakref.finalize(self, _stop_writer, self._jobs, self._writer)

    def _migrate(self) -> None:
        """Bring a file from an older version up to SCHEMA_VERSION (foreign keys off: rebuilding
        `chats` must not cascade to the messages)."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version >= SCHEMA_VERSION or "chats" not in tables:
            return
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(messages)")}
        if "safeguarding" not in columns:
            self._db.execute("ALTER TABLE messages ADD COLUMN safeguarding TEXT NOT NULL DEFAULT ''")
        if version >= 1:
            return
        self._db.executescript(
            ("" if "ending" in columns else "ALTER TABLE messages ADD COLUMN ending TEXT NOT NULL DEFAULT 'complete';")
            + """BEGIN;
            CREATE TABLE chats_v1 (id INTEGER PRIMARY KEY AUTOINCREMENT, student TEXT NOT NULL,
                                   started_at REAL NOT NULL, flagged INTEGER NOT NULL DEFAULT 0);
            INSERT INTO chats_v1 SELECT id, student, started_at, flagged FROM chats;
            DROP TABLE chats;
            ALTER TABLE chats_v1 RENAME TO chats;
            COMMIT;"""
        )

    async def run(self, fn, *args):
        """`fn(*args)` (a method of this object) on the writer thread, awaited."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def submit(self, fn, *args) -> Future:
        """`fn(*args)` queued on the writer thread, not awaited (from code that cannot await)."""
        future: Future = Future()
        self._jobs.put((future, fn, args))
        return future

    def _run_batch(self, batch: list) -> bool:
        """The calls in one transaction, each in a savepoint (a call that fails undoes only its
        own writes); results handed back after the commit. False (nothing written, nothing
        handed back) if the transaction itself fails, e.g. a read-only file: the caller then
        runs each call alone, so each gets its own result or error."""
        outcomes = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for future, fn, args in batch:
                    self._db.execute("SAVEPOINT call")
                    try:
                        outcomes.append((future, fn(*args), None))
                    except Exception as e:
                        self._db.execute("ROLLBACK TO call")
                        outcomes.append((future, None, e))
                    self._db.execute("RELEASE call")
                self._db.execute("COMMIT")
            except sqlite3.Error:
                with contextlib.suppress(sqlite3.Error):
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                return False
        for future, result, error in outcomes:
            if future.set_running_or_notify_cancel():
                future.set_exception(error) if error is not None else future.set_result(result)
        return True

    def _write(self, sql: str, args=()) -> int:
        # SQLite keeps writing to an open file that was deleted or replaced: check, or a chat
        # would be acknowledged and then lost with the file.
        if not self._database.same_file():
            raise TranscriptsError(f"the transcripts file {self.path} is gone or was replaced since it was opened")
        try:
            with self._lock:
                cursor = self._db.execute(sql, args)
                return cursor.lastrowid
        except sqlite3.Error as e:  # read-only, disk full, locked beyond the timeout, the chat deleted meanwhile
            raise TranscriptsError(f"cannot write {self.path}: {e}") from None

    @contextlib.contextmanager
    def _atomic(self):
        """The writes inside happen together or not at all (a savepoint: its own transaction in
        autocommit, nested inside the writer's batch)."""
        with self._lock:
            outermost = not self._db.in_transaction

            def undo():
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK TO atomic")
                    self._db.execute("RELEASE atomic")
                if outermost and self._db.in_transaction:  # never leave the shared connection mid-transaction
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")

            try:
                self._db.execute("SAVEPOINT atomic")
            except sqlite3.Error as e:
                raise TranscriptsError(f"cannot write {self.path}: {e}") from None
            try:
                yield
            except BaseException:
                undo()
                raise
            try:
                self._db.execute("RELEASE atomic")
            except sqlite3.Error as e:
                undo()
                raise TranscriptsError(f"cannot write {self.path}: {e}") from None

    def _read(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def start_chat(self, student: str) -> int:
        return self._write("INSERT INTO chats (student, started_at) VALUES (?, ?)", (student, time.time()))

    def add_message(self, chat_id: int, role: str, content: str, flags: tuple[str, ...] = (), ending: str = "complete",
                    safeguarding: dict | None = None) -> int:  # fmt: skip
        """On disk before the reply is shown: called directly it commits before returning
        (autocommit); through `run` / `submit` its result is handed back after the batch's commit.
        `safeguarding`: what safeguarding decided for a student message (tier, layer, scores)."""
        if ending not in ENDINGS:
            raise ValueError(f"ending must be one of {', '.join(ENDINGS)}, got {ending!r}")
        with self._atomic():  # the message and its alert together, or neither
            return self._add_message(chat_id, role, content, flags, ending, safeguarding)

    def _add_message(self, chat_id, role, content, flags, ending, safeguarding) -> int:
        message_id = self._write(
            "INSERT INTO messages (chat_id, role, content, flags, created_at, ending, safeguarding) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (chat_id, role, content, ",".join(flags), time.time(), ending, json.dumps(safeguarding) if safeguarding else ""),
        )
        if flags:
            self.flag_chat(chat_id)
        tier = (safeguarding or {}).get("tier")
        if role == "user" and tier in TIERS_QUEUED:
            now = time.time()
            alert_id = self._write("INSERT INTO alerts (message_id, chat_id, tier, categories, created_at) VALUES (?, ?, ?, ?, ?)",
                                   (message_id, chat_id, tier, ",".join(f for f in flags if f != ABUSIVE), now))  # fmt: skip
            for channel in self.alert_channels if tier == "urgent" and not self._alerted_lately(chat_id, now) else ():
                self._write("INSERT INTO deliveries (alert_id, channel, next_try) VALUES (?, ?, ?)", (alert_id, channel, now))
        return message_id

    def _alerted_lately(self, chat_id: int, now: float) -> bool:
        """The chat's student had an urgent alert sent (or being sent) within ALERT_GROUP_S: this
        one waits in the queue without a message of its own (one student cannot flood the
        channels, and the first message already brought staff to the chat)."""
        return bool(self._read(
            """SELECT 1 FROM alerts a JOIN chats c ON c.id = a.chat_id JOIN deliveries d ON d.alert_id = a.id
               WHERE c.student = (SELECT student FROM chats WHERE id = ?) AND a.created_at >= ? LIMIT 1""",
            (chat_id, now - ALERT_GROUP_S),
        ))  # fmt: skip

    def attention(self, staff: str) -> list[dict]:
        """The staff queue: alerts not yet acknowledged, urgent first, newest first, each with its
        deliveries. Audited (it names students)."""
        self.audit(staff, "list", "attention")
        rows = self._read(
            """SELECT a.id, a.tier, c.student, a.chat_id, a.categories, a.created_at FROM alerts a
               JOIN chats c ON c.id = a.chat_id WHERE a.acknowledged_at IS NULL
               ORDER BY a.tier = 'urgent' DESC, a.created_at DESC, a.id DESC""",
        )
        alerts = [dict(zip(("id", "tier", "student", "chat_id", "categories", "created_at"), r)) for r in rows]
        for alert in alerts:
            alert["categories"] = [c for c in alert["categories"].split(",") if c]
            alert["deliveries"] = self.deliveries(alert["id"])
        return alerts

    def deliveries(self, alert_id: int) -> list[dict]:
        rows = self._read("SELECT channel, attempts, delivered_at, last_error FROM deliveries WHERE alert_id = ? "
                          "ORDER BY channel", (alert_id,))  # fmt: skip
        return [dict(zip(("channel", "attempts", "delivered_at", "last_error"), r)) for r in rows]

    def undelivered(self) -> int:
        """Alert deliveries not yet made (acknowledged alerts included: the channel is still failing)."""
        return self._read("SELECT COUNT(*) FROM deliveries WHERE delivered_at IS NULL")[0][0]

    def acknowledge(self, alert_id: int, staff: str, note: str) -> None:
        """A staff member has dealt with an alert; the note says what they did. Audited."""
        if not note.strip():
            raise ValueError("say in a note what was done")
        with self._atomic():
            if not self._read("SELECT 1 FROM alerts WHERE id = ? AND acknowledged_at IS NULL", (alert_id,)):
                raise KeyError(f"no open alert {alert_id}")
            self._write("UPDATE alerts SET acknowledged_by = ?, acknowledged_at = ?, note = ? WHERE id = ?",
                        (staff, time.time(), note.strip(), alert_id))  # fmt: skip
            self.audit(staff, "acknowledge", f"alert:{alert_id}")

    def due_deliveries(self, now: float) -> list[dict]:
        """Deliveries to try now: not made yet, their next try due."""
        rows = self._read(
            """SELECT d.alert_id, d.channel, d.attempts, a.tier, a.categories, a.chat_id, c.student, a.created_at
               FROM deliveries d JOIN alerts a ON a.id = d.alert_id JOIN chats c ON c.id = a.chat_id
               WHERE d.delivered_at IS NULL AND d.next_try <= ? ORDER BY a.created_at""",
            (now,),
        )
        keys = ("alert_id", "channel", "attempts", "tier", "categories", "chat_id", "student", "created_at")
        return [dict(zip(keys, r), categories=[c for c in r[4].split(",") if c]) for r in rows]

    def delivery_result(self, alert_id: int, channel: str, error: str, next_try: float) -> None:
        """One try of a delivery: made (error '') or failed (tried again from `next_try`)."""
        if error:
            self._write("UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_try = ? "
                        "WHERE alert_id = ? AND channel = ?", (error, next_try, alert_id, channel))  # fmt: skip
        else:
            self._write("UPDATE deliveries SET attempts = attempts + 1, last_error = '', delivered_at = ? "
                        "WHERE alert_id = ? AND channel = ?", (time.time(), alert_id, channel))  # fmt: skip

    def writable(self) -> bool:
        """For /health, without writing or waiting for the writer: the file this server opened is
        still at the path and may be written."""
        return self._database.writable()

    def backup(self, destination: str | Path) -> None:
        """A consistent copy of the whole database (accounts too) at `destination`, a new file."""
        with self._lock:
            self._database.backup(destination)

    def chat_for(self, student: str, chat_id: int | None) -> int:
        """`chat_id` if it is `student`'s and still there, else a new chat of theirs (the first
        turn, or staff deleted the chat while the student was in it)."""
        if chat_id is not None and self._read("SELECT 1 FROM chats WHERE id = ? AND student = ?", (chat_id, student)):
            return chat_id
        return self.start_chat(student)

    def abusive_count(self, student: str, since: float) -> int:
        """The student's messages flagged abusive since `since` (Unix s), across their chats."""
        return self._read(
            """SELECT COUNT(*) FROM messages m JOIN chats c ON c.id = m.chat_id WHERE c.student = ? AND m.role = 'user'
               AND m.created_at >= ? AND (',' || m.flags || ',') LIKE ?""",
            (student, since, f"%,{ABUSIVE},%"),
        )[0][0]

    def flag_chat(self, chat_id: int) -> None:
        self._write("UPDATE chats SET flagged = 1 WHERE id = ?", (chat_id,))

    def chats(self, staff: str, search: str = "") -> list[dict]:
        """Chats for the staff page: flagged first, newest first; `search` matches student or text."""
        self.audit(staff, "list", search or "*")
        rows = self._read(
            """SELECT c.id, c.student, c.started_at, c.flagged, COUNT(m.id)
               FROM chats c LEFT JOIN messages m ON m.chat_id = c.id
               WHERE ? = '' OR c.student LIKE ? OR c.id IN (SELECT chat_id FROM messages WHERE content LIKE ?)
               GROUP BY c.id ORDER BY c.flagged DESC, c.started_at DESC""",
            (search, f"%{search}%", f"%{search}%"),
        )
        return [dict(zip(("id", "student", "started_at", "flagged", "messages"), r)) for r in rows]

    def student_chats(self, student: str) -> list[dict]:
        """One student's own chats, newest first (what the student's "My chats" tab lists)."""
        rows = self._read(
            """SELECT c.id, c.started_at, COUNT(m.id) FROM chats c LEFT JOIN messages m ON m.chat_id = c.id
               WHERE c.student = ? GROUP BY c.id ORDER BY c.started_at DESC, c.id DESC""",
            (student,),
        )
        return [dict(zip(("id", "started_at", "messages"), r)) for r in rows]

    def _messages(self, chat_id: int) -> list[dict]:
        rows = self._read("SELECT role, content, flags, created_at, ending, safeguarding FROM messages WHERE chat_id = ? "
                          "ORDER BY id", (chat_id,))  # fmt: skip
        return [{"role": r, "content": c, "flags": [f for f in fl.split(",") if f], "created_at": t, "ending": e,
                 "safeguarding": json.loads(sg) if sg else None} for r, c, fl, t, e, sg in rows]  # fmt: skip

    def history(self, chat_id: int) -> list[dict]:
        """A chat's messages for the tutor itself (the model's context, safeguarding's count);
        no permission check or audit: only the server calls it, for the chat it is answering."""
        return self._messages(chat_id)

    def messages(self, chat_id: int, viewer: str, staff: bool) -> list[dict]:
        """A chat's messages. Students may read only their own chats; staff reads are audited."""
        owner = self._read("SELECT student FROM chats WHERE id = ?", (chat_id,))
        if not owner or (not staff and owner[0][0] != viewer):
            raise PermissionError(f"{viewer} may not read chat {chat_id}")
        if staff:
            self.audit(viewer, "view", f"chat:{chat_id}")
        return self._messages(chat_id)

    def export_student(self, student: str, staff: str) -> str:
        """Every chat of one student as JSON (for a parent's or the student's request)."""
        self.audit(staff, "export", f"student:{student}")
        chats = self._read("SELECT id, started_at, flagged FROM chats WHERE student = ? ORDER BY id", (student,))
        out = []
        for chat_id, started, flagged in chats:
            out.append({"chat": chat_id, "started_at": started, "flagged": bool(flagged), "messages": self._messages(chat_id)})
        return json.dumps({"student": student, "chats": out}, indent=2)

    def delete_student(self, student: str, staff: str) -> int:
        self.audit(staff, "delete", f"student:{student}")
        with self._lock:
            n = self._db.execute("SELECT COUNT(*) FROM chats WHERE student = ?", (student,)).fetchone()[0]
            self._db.execute("DELETE FROM chats WHERE student = ?", (student,))
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the deleted rows' old copies leave the WAL too
        return n

    def purge(self, retention_days: float) -> int:
        """Delete chats started more than `retention_days` ago; returns how many."""
        cutoff = time.time() - retention_days * 86400
        with self._lock:
            n = self._db.execute("SELECT COUNT(*) FROM chats WHERE started_at < ?", (cutoff,)).fetchone()[0]
            self._db.execute("DELETE FROM chats WHERE started_at < ?", (cutoff,))
            if n:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return n

    def audit(self, staff: str, action: str, target: str) -> None:
        self._write("INSERT INTO audit (staff, action, target, at) VALUES (?, ?, ?, ?)", (staff, action, target, time.time()))

    def audit_log(self) -> list[dict]:
        rows = self._read("SELECT staff, action, target, at FROM audit ORDER BY id")
        return [dict(zip(("staff", "action", "target", "at"), r)) for r in rows]

    def close(self) -> None:
        self._stop()
        with self._lock:
            self._db.close()


@dataclass
class TranscriptsConfig:
    db: str = field(default="runs/serve/transcripts.sqlite", metadata={"help": "The serving SQLite file."})
    retention_days: float = field(default=365.0, metadata={"help": "purge: chats older than this go."})


def make_parser() -> ConfigParser:
    parser = ConfigParser(TranscriptsConfig, prog="tim transcripts", doc=__doc__)
    parser.add_argument("action", choices=["purge", "export", "delete", "backup"])
    parser.add_argument("name", nargs="?", default=None, help="the student (backup: the new file)")
    return parser


def main(args=None) -> None:
    cfg, extra = make_parser().parse(args)
    if not Path(cfg.db).is_file():
        raise TimError(f"no transcripts database at {cfg.db}")
    store = Transcripts(cfg.db)
    operator = f"cli:{getpass.getuser()}"
    if extra.action == "purge":
        print(f"purged {store.purge(cfg.retention_days)} chats older than {cfg.retention_days} days", file=sys.stderr)
        return
    if not extra.name:
        raise TimError(f"transcripts {extra.action} needs {'a new FILE' if extra.action == 'backup' else 'a student NAME'}")
    if extra.action == "backup":
        store.backup(extra.name)
        store.audit(operator, "backup", extra.name)
        print(f"backed up {cfg.db} to {extra.name}", file=sys.stderr)
    elif extra.action == "export":
        print(store.export_student(extra.name, staff=operator))
    else:
        print(f"deleted {store.delete_student(extra.name, staff=operator)} chats of {extra.name}", file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
