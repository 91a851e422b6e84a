"""The conversation schema that every stage hands to the next.

A dataset file is JSONL, one conversation a line:

    {"messages": [{"role": "system", "content": "..."},      # optional, first only
                  {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."},   # "" = Tim stays silent
                  {"role": "assistant", "content": "...", "weight": 0},  # optional: context, not learned
                  ...],
     "meta": {...}}                                         # optional: topic, backend, seed ...

After the optional system message, user and assistant turns alternate, starting with the user,
and at least one assistant turn is present. An assistant turn with empty content is a *silent*
turn (Tim declines to answer an abusive user): it is context, never trained (as if its weight were
0), because silence is the serving layer's decision (safeguarding's abuse rule), not a habit for
the model to learn: trained, the end-of-turn token alone taught it to answer ordinary openers with
nothing. `weight` (assistant turns only, OpenAI's fine-tuning convention): 1 (the default) trains
the turn, 0 keeps it as context the model reads but is not trained to say. `tim synth` writes 0 on a turn
whose kept candidate failed one of its checks (`mask_failed_turns`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from pathlib import Path

from tutorkit import TimError

ROLES = ("system", "user", "assistant")


def validate_messages(messages, where: str) -> None:
    """Raise TimError naming `where` (file:line) if `messages` breaks the schema."""
    if not isinstance(messages, list) or not messages:
        raise TimError(f"{where}: 'messages' must be a non-empty list")
    expected = "user"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content", "weight"} or "role" not in message:
            raise TimError(f"{where}: message {i} must be an object with 'role' and 'content' (and 'weight')")
        role, content = message["role"], message.get("content")
        if "weight" in message and (role != "assistant" or type(message["weight"]) is not int or message["weight"] not in (0, 1)):
            raise TimError(f"{where}: message {i} ({role}) has weight {message['weight']!r}; only assistant turns "
                           "take a weight, 0 or 1")
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
    if not any(m["role"] == "assistant" and trained(m) for m in messages):
        raise TimError(f"{where}: every assistant turn is silent or has weight 0, so there is nothing to learn")


def trained(message: dict) -> bool:
    """Whether training learns this assistant turn: its `weight` is not 0 and it is not silent."""
    return message.get("weight", 1) != 0 and bool((message.get("content") or "").strip())


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


def read_preferences(path: str | Path) -> list[dict]:
    """Read and validate preference pairs (TRL's conversational format, as `tim synth` writes them):
    {"prompt": [messages ending with the student's], "chosen": [one assistant message],
     "rejected": [one assistant message], "meta": {...}?}. Errors name file and line."""
    path = Path(path)
    if not path.is_file():
        raise TimError(f"preference file not found: {path}")
    rows = []
    for where, row in iter_jsonl(path):
        if not isinstance(row, dict) or not {"prompt", "chosen", "rejected"} <= set(row) or set(row) - {"prompt", "chosen", "rejected", "meta"}:
            raise TimError(f"{where}: a pair has 'prompt', 'chosen' and 'rejected' (and optional 'meta')")
        prompt = row["prompt"]
        if not isinstance(prompt, list) or not prompt or not isinstance(prompt[-1], dict) or prompt[-1].get("role") != "user":
            raise TimError(f"{where}: 'prompt' must be a list of messages ending with the student's (role 'user')")
        validate_messages([*prompt, {"role": "assistant", "content": "(the reply)"}], f"{where}: prompt")
        for side in ("chosen", "rejected"):
            reply = row[side]
            if not (isinstance(reply, list) and len(reply) == 1 and isinstance(reply[0], dict)
                    and reply[0].get("role") == "assistant" and isinstance(reply[0].get("content"), str)):  # fmt: skip
                raise TimError(f"{where}: '{side}' must be one assistant message [{{\"role\": \"assistant\", \"content\": ...}}]")
        if row["chosen"] == row["rejected"]:
            raise TimError(f"{where}: 'chosen' and 'rejected' are the same reply")
        rows.append(row)
    if not rows:
        raise TimError(f"{path}: no preference pairs (empty file)")
    return rows


def read_splits(train: Path, validation: Path, read, keep: tuple[str, ...],
                limit: int = 0) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """A training file and its optional validation file through `read` (read_conversations or
    read_preferences: validated, errors with file:line), before any model loads. The first `limit`
    training rows (0 = all); a missing or blank validation file is no validation. Only the `keep`
    fields of each row go on (`meta` stays in the files)."""
    rows = read(train)
    if limit:
        rows = rows[:limit]
    has_validation = validation.is_file() and validation.read_text(encoding="utf-8").strip()
    held_out = read(validation) if has_validation else []
    return [{k: r[k] for k in keep} for r in rows], [{k: r[k] for k in keep} for r in held_out]


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """One JSON object a line (datasets, preference pairs); returns how many rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def _hash(key: str) -> int:
    return zlib.crc32(key.encode()) % 10_000


def split_of(key: str, validation_fraction: float) -> str:
    """"train" or "validation" for a conversation, decided by its key alone (a hash), so a
    conversation's split never changes across resumes, reruns or larger datasets."""
    return "validation" if _hash(key) < validation_fraction * 10_000 else "train"


def split_rows(rows: list[dict], key_of, validation_fraction: float) -> dict[str, list[dict]]:
    """{"train": [...], "validation": [...]} by `split_of(key_of(row))`. A small dataset can miss
    the validation range altogether: then the row whose key hashes nearest to it moves over, so
    any dataset of two or more rows has a validation row when the fraction is above zero."""
    split = {"train": [], "validation": []}
    for row in rows:
        split[split_of(key_of(row), validation_fraction)].append(row)
    if validation_fraction > 0 and not split["validation"] and len(split["train"]) >= 2:
        nearest = min(split["train"], key=lambda row: _hash(key_of(row)))
        split["train"].remove(nearest)
        split["validation"].append(nearest)
    return split
