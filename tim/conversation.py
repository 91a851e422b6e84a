"""The conversation schema that every stage hands to the next.

A dataset file is JSONL, one conversation a line:

    {"messages": [{"role": "system", "content": "..."},      # optional, first only
                  {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."},   # "" = Tim stays silent
                  ...],
     "meta": {...}}                                         # optional: topic, backend, seed ...

After the optional system message, user and assistant turns alternate, starting with the user,
and at least one assistant turn is present. An assistant turn with empty content is a *silent*
turn (Tim declines to answer an abusive user): training teaches it as just the end-of-turn token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from tim import TimError

ROLES = ("system", "user", "assistant")


def validate_messages(messages, where: str) -> None:
    """Raise TimError naming `where` (file:line) if `messages` breaks the schema."""
    if not isinstance(messages, list) or not messages:
        raise TimError(f"{where}: 'messages' must be a non-empty list")
    expected = "user"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content"} or "role" not in message:
            raise TimError(f"{where}: message {i} must be an object with 'role' and 'content'")
        role, content = message["role"], message.get("content")
        if role not in ROLES:
            raise TimError(f"{where}: message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise TimError(f"{where}: message {i} ({role}) content must be a string, got {type(content).__name__}")
        if role == "system":
            if i != 0:
                raise TimError(f"{where}: message {i} is a system message; only the first message may be")
            continue
        if role != expected:
            raise TimError(f"{where}: message {i} is {role!r} but {expected!r} was expected (turns must alternate)")
        if role == "user" and not content.strip():
            raise TimError(f"{where}: message {i} (user) is empty")
        expected = "assistant" if role == "user" else "user"
    if not any(m["role"] == "assistant" for m in messages):
        raise TimError(f"{where}: conversation has no assistant turn")


def iter_jsonl(path: str | Path):
    """(where, row) for each non-blank line of a JSONL file; `where` is "file:line"."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise TimError(f"{where}: not valid JSON ({e.msg})") from None


def read_conversations(path: str | Path) -> list[dict]:
    """Read and validate a `messages` JSONL file; errors name file and line."""
    path = Path(path)
    if not path.is_file():
        raise TimError(f"dataset file not found: {path}")
    rows = []
    for where, row in iter_jsonl(path):
        if not isinstance(row, dict) or "messages" not in row:
            raise TimError(f"{where}: row must be an object with a 'messages' list")
        validate_messages(row["messages"], where)
        rows.append(row)
    if not rows:
        raise TimError(f"{path}: no conversations (empty file)")
    return rows


def write_conversations(path: str | Path, rows: Iterable[dict]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


# A line that begins another speaker's turn ("Student: ...", "Tim: ...", "User: ...").
SPEAKERS = ("student", "tim", "tutor", "user", "assistant", "teacher", "me", "you")
SPEAKER_LINE = re.compile(rf"^\s*\**\s*({'|'.join(SPEAKERS)})\s*\**\s*:", re.I)


def clean_reply(text: str) -> str:
    """Keep only the speaker's own words: drop a leading label, stop where another speaker starts."""
    lines = text.strip().splitlines()
    if lines and SPEAKER_LINE.match(lines[0]):
        lines[0] = SPEAKER_LINE.sub("", lines[0], count=1)
    kept = [lines[0]] if lines else []
    for line in lines[1:]:
        if SPEAKER_LINE.match(line):
            break
        kept.append(line)
    # Stray markdown emphasis left where the model stopped ("... great!\n**").
    return "\n".join(kept).strip().strip('"').strip().rstrip("*").strip()


def may_become_speaker_label(text: str) -> bool:
    """True while a reply streamed so far could still turn into a leading label ("Tim:"), which
    clean_reply would then remove: text already sent to a client cannot be taken back."""
    if "\n" in text.strip():
        return False
    word = text.strip().strip("*").strip().lower()
    return any(s.startswith(word) for s in SPEAKERS)


def starts_other_speaker(text: str) -> bool:
    """True once a line after the first begins another speaker's turn."""
    return any(SPEAKER_LINE.match(line) for line in text.strip().splitlines()[1:])
