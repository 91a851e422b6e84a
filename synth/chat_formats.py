"""Rows of the common chat-dataset formats, read as Tim's turns: what `tim import` takes besides
legacy transcripts (legacy_import.py does the reporting and writing).

    openai      {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}]}
                (OpenAI chat fine-tuning JSONL; also TRL's and Hugging Face's `messages`)
    sharegpt    {"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}]}
    alpaca      {"instruction": "...", "input": "...", "output": "..."}  -> one exchange

Where rows come from: `.jsonl` (a row a line), `.json` (a list of rows), `.parquet`, or a folder
(a Hugging Face dataset saved with `save_to_disk`, or a folder of parquet / JSON / JSONL files as
on the Hub; each split in it is read). The format is found from the first row's keys unless the
config names it. A source system prompt is dropped (Tim's persona prompt replaces it), and said
so in the report.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

USER_ROLES = {"user", "human"}
TUTOR_ROLES = {"assistant", "gpt", "model", "bot", "chatgpt"}
SYSTEM_ROLES = {"system"}
DATA_FILES = (".parquet", ".jsonl", ".json")


class RowError(ValueError):
    """This row cannot be read as a conversation; the message is the reason for the report."""


def detect(row: object) -> str | None:
    """The format a row is written in, from its keys; None when it is none of them."""
    if not isinstance(row, dict):
        return None
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if "messages" in row:
        return "openai"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    return None


def _text(value: object, what: str) -> str:
    """A turn's text: a string, or OpenAI's list of {"type": "text", "text": ...} parts."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "\n".join(str(p.get("text", "")) for p in value).strip()
    raise RowError(f"{what} is not text (only text turns can be imported)")


def _turns(items: object, key: str, role_key: str, text_key: str) -> tuple[list[dict], list[str]]:
    if not isinstance(items, list) or not items:
        raise RowError(f"'{key}' must be a non-empty list")
    turns, notes = [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or role_key not in item or text_key not in item:
            raise RowError(f"{key}[{i}] must be an object with '{role_key}' and '{text_key}'")
        role = str(item[role_key]).lower()
        if role in SYSTEM_ROLES:
            notes.append("dropped the source's system prompt (Tim's persona prompt is used)")
            continue
        if role not in USER_ROLES | TUTOR_ROLES:
            raise RowError(f"{key}[{i}]: speaker '{item[role_key]}' is neither the user nor the tutor")
        text = _text(item[text_key], f"{key}[{i}].{text_key}")
        turns.append({"role": "user" if role in USER_ROLES else "assistant", "content": text})
    return turns, notes


def row_turns(fmt: str, row: dict) -> tuple[list[dict], list[str]]:
    """(turns in the source's order, notes of what was changed) for one row of `fmt`."""
    if fmt == "openai":
        return _turns(row.get("messages"), "messages", "role", "content")
    if fmt == "sharegpt":
        return _turns(row.get("conversations"), "conversations", "from", "value")
    if fmt == "alpaca":
        parts = [row.get("instruction"), row.get("input") or ""]
        if not all(isinstance(p, str) for p in parts) or not isinstance(row.get("output"), str):
            raise RowError("'instruction', 'input' and 'output' must be strings")
        question = "\n\n".join(p.strip() for p in parts if p.strip())
        return [{"role": "user", "content": question}, {"role": "assistant", "content": row["output"].strip()}], []
    raise RowError(f"unknown format '{fmt}'")


def data_files(folder: Path) -> list[Path]:
    """The data files of a Hub-style dataset folder, in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.suffix in DATA_FILES and p.is_file() and not p.name.startswith("."))


def iter_rows(path: Path) -> Iterator[tuple[str, object]]:
    """(where, row) for every row of a file or dataset folder; `where` is file:line for JSONL and
    file[index] otherwise. A JSONL line that is not JSON comes as (where, RowError)."""
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            yield from _saved_dataset(path)
            return
        for file in data_files(path):
            yield from iter_rows(file)
        return
    if path.suffix == ".jsonl":
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    yield f"{path}:{lineno}", json.loads(line)
                except json.JSONDecodeError as e:
                    yield f"{path}:{lineno}", RowError(f"not valid JSON ({e.msg})")
    elif path.suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            yield f"{path}:{e.lineno}", RowError(f"not valid JSON ({e.msg})")
            return
        rows = rows if isinstance(rows, list) else [rows]
        for i, row in enumerate(rows):
            yield f"{path}[{i}]", row
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq  # only for parquet input

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path}[{i}]", row


def _saved_dataset(path: Path) -> Iterator[tuple[str, object]]:
    import datasets  # only for a dataset saved with save_to_disk

    loaded = datasets.load_from_disk(str(path))
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
    for split, dataset in splits:
        for i, row in enumerate(dataset):
            yield (f"{path}/{split}[{i}]" if split else f"{path}[{i}]"), row
