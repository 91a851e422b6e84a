"""Transcripts in real SQLite: roles, search, export/delete, retention, audit, persistence."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from serve.transcripts import SCHEMA_VERSION, Transcripts


def test_transcripts(tmp_path):
    db = tmp_path / "t.sqlite"
    store = Transcripts(db)
    a = store.start_chat("amy")
    store.add_message(a, "user", "what is a noun")
    store.add_message(a, "assistant", "A word for a thing. Can you name one?")
    b = store.start_chat("ben")
    store.add_message(b, "user", "i'm so hungry", ("hunger",))
    assert [c["student"] for c in store.chats(staff="ms.lee")] == ["ben", "amy"]  # flagged first
    assert [c["student"] for c in store.chats(staff="ms.lee", search="noun")] == ["amy"]
    # A student reads only their own chat.
    assert store.messages(a, viewer="amy", staff=False)[0]["content"] == "what is a noun"
    with pytest.raises(PermissionError):
        store.messages(b, viewer="amy", staff=False)
    exported = json.loads(store.export_student("ben", staff="ms.lee"))
    assert exported["chats"][0]["flagged"] and exported["chats"][0]["messages"][0]["flags"] == ["hunger"]
    assert store.delete_student("ben", staff="ms.lee") == 1
    assert [c["student"] for c in store.chats(staff="ms.lee")] == ["amy"]
    store.close()
    # Everything above survived a reopen (a server restart), WAL on, every staff action audited.
    store = Transcripts(db)
    assert store.messages(a, viewer="amy", staff=False)[1]["role"] == "assistant"
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    actions = [(e["staff"], e["action"]) for e in store.audit_log()]
    assert ("ms.lee", "export") in actions and ("ms.lee", "delete") in actions and ("ms.lee", "list") in actions
    # Retention: chats started before the cutoff go, newer ones stay.
    store._write("UPDATE chats SET started_at = ? WHERE id = ?", (time.time() - 40 * 86400, a))
    assert store.purge(retention_days=30) == 1 and store.chats(staff="ms.lee") == []


def test_tim_transcripts_command(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    db = tmp_path / "t.sqlite"
    store = Transcripts(db)
    old, new = store.start_chat("amy"), store.start_chat("amy")
    store.add_message(new, "user", "hello")
    store._write("UPDATE chats SET started_at = ? WHERE id = ?", (time.time() - 400 * 86400, old))
    tim = [str(Path(sys.executable).parent / "tim"), "transcripts"]
    r = subprocess.run([*tim, "purge", "--db", str(db), "--retention_days", "365"], capture_output=True, text=True)
    assert r.returncode == 0 and "purged 1 chats" in r.stderr
    r = subprocess.run([*tim, "export", "amy", "--db", str(db)], capture_output=True, text=True)
    assert [c["chat"] for c in json.loads(r.stdout)["chats"]] == [new]
    copy = tmp_path / "backup.sqlite"
    r = subprocess.run([*tim, "backup", str(copy), "--db", str(db)], capture_output=True, text=True)
    assert r.returncode == 0 and (copy.stat().st_mode & 0o777) == 0o600
    assert sqlite3.connect(copy).execute("SELECT content FROM messages").fetchall() == [("hello",)]
    r = subprocess.run([*tim, "backup", str(copy), "--db", str(db)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == f"tim: error: {copy} already exists; back up to a new file"
    r = subprocess.run([*tim, "delete", "amy", "--db", str(db)], capture_output=True, text=True)
    assert "deleted 1 chats of amy" in r.stderr and Transcripts(db).student_chats("amy") == []
    assert [(e["action"], e["target"]) for e in Transcripts(db).audit_log()] == [
        ("export", "student:amy"), ("backup", str(copy)), ("delete", "student:amy")]
    r = subprocess.run([*tim, "purge", "--db", str(tmp_path / "none.sqlite")], capture_output=True, text=True)
    assert r.returncode == 2 and "no transcripts database" in r.stderr


def test_an_older_file_is_migrated_without_losing_a_message_and_ids_are_never_reused(tmp_path):
    import sqlite3

    db = tmp_path / "old.sqlite"
    old = sqlite3.connect(db)  # the schema before user_version: chat ids could be reused, no endings
    old.executescript(
        """CREATE TABLE chats (id INTEGER PRIMARY KEY, student TEXT NOT NULL, started_at REAL NOT NULL,
                               flagged INTEGER NOT NULL DEFAULT 0);
           CREATE TABLE messages (id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
                                  role TEXT NOT NULL, content TEXT NOT NULL, flags TEXT NOT NULL DEFAULT '',
                                  created_at REAL NOT NULL);
           INSERT INTO chats VALUES (1, 'amy', 1.0, 1), (2, 'ben', 2.0, 0);
           INSERT INTO messages VALUES (1, 1, 'user', 'i have no food', 'hunger', 1.0), (2, 2, 'user', 'hi', '', 2.0);"""
    )
    old.commit()
    old.close()
    store = Transcripts(db)
    assert store._read("PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert [(m["content"], m["flags"], m["ending"]) for m in store.history(1)] == [("i have no food", ["hunger"], "complete")]
    assert store.history(2)[0]["content"] == "hi"
    store.delete_student("ben", staff="lee")
    assert store.start_chat("cat") == 3  # ben's chat 2 is gone, and its id does not come back
    store.close()
    # A version-1 file gains the column for what safeguarding decided; its messages have none.
    v1 = sqlite3.connect(db)
    v1.executescript("ALTER TABLE messages DROP COLUMN safeguarding; PRAGMA user_version=1;")
    v1.close()
    store = Transcripts(db)
    assert store._read("PRAGMA user_version") == [(SCHEMA_VERSION,)] and store.history(1)[0]["safeguarding"] is None
    store.add_message(1, "user", "no food again", ("neglect",), safeguarding={"tier": "concern", "layer": "guard"})
    assert store.history(1)[-1]["safeguarding"] == {"tier": "concern", "layer": "guard"}
    assert [(a["tier"], a["categories"]) for a in store.attention(staff="lee")] == [("concern", ["neglect"])]  # the queue
    assert Transcripts(db).history(1)[0]["content"] == "i have no food"  # opening again changes nothing


def _queued_together(store: Transcripts, calls: list) -> list:
    """Submit `calls` while the writer is held up, so they reach it as one batch; their futures."""
    import threading

    gate = threading.Event()
    store.submit(gate.wait, 30)  # the writer takes this alone and waits on it
    time.sleep(0.2)
    futures = [store.submit(fn, *args) for fn, *args in calls]
    gate.set()
    return futures


def test_writes_queued_together_share_one_commit_and_fail_alone(tmp_path):
    """A class sending at once: the writer commits what is queued together once (one fsync, not
    one per message); a call that fails (a chat that is not there) fails alone, the others are
    stored; a read in the batch sees the writes queued before it; nothing is handed back before
    the commit."""
    db = tmp_path / "t.sqlite"
    store = Transcripts(db)
    chat = store.start_chat("amy")
    statements = []
    store._db.set_trace_callback(statements.append)  # our own connection: count its commits
    calls = [(store.add_message, chat, "user", f"message {i}") for i in range(20)]
    calls.insert(10, (store.add_message, 999, "user", "to a chat that is not there"))
    calls.append((store.history, chat))
    futures = _queued_together(store, calls)
    results = [f.exception(timeout=30) or f.result() for f in futures]
    assert [type(r).__name__ for r in results[9:12]] == ["int", "TranscriptsError", "int"]
    assert [m["content"] for m in results[-1]] == [f"message {i}" for i in range(20)]
    assert [s.split()[0] for s in statements].count("COMMIT") == 1
    # Another connection (a restarted server) sees all 20.
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 20


def test_a_batch_on_a_read_only_file_acknowledges_nothing(tmp_path):
    """The transaction cannot commit: every call runs alone and gets its own error; reads still
    answer. (chattr +i: chmod does not stop root, which runs these tests.)"""
    import subprocess

    db = tmp_path / "t.sqlite"
    store = Transcripts(db)
    chat = store.start_chat("amy")
    frozen = [str(db), f"{db}-wal"]
    if subprocess.run(["chattr", "+i", *frozen], capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root with CAP_LINUX_IMMUTABLE on ext2/3/4, xfs or btrfs")
    try:
        futures = _queued_together(store, [(store.add_message, chat, "user", f"m{i}") for i in range(5)]
                                   + [(store.history, chat)])  # fmt: skip
        outcomes = [f.exception(timeout=30) for f in futures]
    finally:
        subprocess.run(["chattr", "-i", *frozen], check=True)
    assert [type(e).__name__ for e in outcomes[:5]] == ["TranscriptsError"] * 5 and outcomes[5] is None
    assert futures[5].result() == []
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
