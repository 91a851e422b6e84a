"""Transcripts in real SQLite: roles, search, export/delete, retention, audit, persistence."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from serve.transcripts import Transcripts


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
    r = subprocess.run([*tim, "delete", "amy", "--db", str(db)], capture_output=True, text=True)
    assert "deleted 1 chats of amy" in r.stderr and Transcripts(db).student_chats("amy") == []
    assert [e["action"] for e in Transcripts(db).audit_log()] == ["export", "delete"]
    r = subprocess.run([*tim, "purge", "--db", str(tmp_path / "none.sqlite")], capture_output=True, text=True)
    assert r.returncode == 2 and "no transcripts database" in r.stderr
