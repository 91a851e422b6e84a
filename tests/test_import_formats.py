"""`tim import` on the common chat-dataset formats: each hand-written fixture holds the same
conversations as tests/fixtures/formats/expected*.jsonl, written the way that format writes them
(with the untidiness real exports have), and must import to exactly those rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synth import legacy_import
from tutorkit import TimError
from tutorkit.conversation import read_conversations

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "formats"


def _import(out: Path, *inputs, extra=()):
    args = ["--config", "configs/import.yaml", "--output_dir", str(out), "--validation_fraction", "0",
            "--inputs", *map(str, inputs), *extra]  # fmt: skip
    report = legacy_import.main(args)
    rows = read_conversations(out / "train.jsonl")
    assert all(r["messages"][0]["role"] == "system" and "Tim" in r["messages"][0]["content"] for r in rows)
    return report, [[m for m in r["messages"] if m["role"] != "system"] for r in rows]


def _expected(name="expected.jsonl"):
    return [json.loads(line)["messages"] for line in (FIXTURES / name).read_text().splitlines()]


def _sharegpt_rows():
    return json.loads((FIXTURES / "sharegpt.json").read_text())


def test_openai_messages_jsonl(tmp_path):
    report, rows = _import(tmp_path, FIXTURES / "openai.jsonl")
    assert rows == _expected()
    entry = report["files"][str(FIXTURES / "openai.jsonl")]
    assert entry["format"] == "openai" and entry["imported"] == 3 and entry["skipped"] == []
    where = f"{FIXTURES}/openai.jsonl"
    assert entry["changed"] == [
        {"where": f"{where}:1", "what": "dropped the source's system prompt (Tim's persona prompt is used)"},
        {"where": f"{where}:2", "what": "joined to the user turn above (same speaker)"},
        {"where": f"{where}:3", "what": "dropped the tutor's turn before the student's first line"},
        {"where": f"{where}:3", "what": "dropped the last student line (no reply)"},
    ]


def test_sharegpt_json(tmp_path):
    report, rows = _import(tmp_path, FIXTURES / "sharegpt.json")
    assert rows == _expected() and report["files"][str(FIXTURES / "sharegpt.json")]["format"] == "sharegpt"


def test_output_has_a_hub_dataset_card_that_datasets_loads(tmp_path):
    import datasets
    import yaml

    legacy = FIXTURES.parent / "legacy"
    legacy_import.main(["--config", "configs/import.yaml", "--output_dir", str(tmp_path), "--validation_fraction", "0.5",
                        "--inputs", str(FIXTURES / "sharegpt.json"), str(legacy / "transcripts.txt")])  # fmt: skip
    card = (tmp_path / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "other" and header["size_categories"] == ["n<1K"]
    assert header["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "train.jsonl"}, {"split": "validation", "path": "validation.jsonl"}]}]
    assert f"| {FIXTURES / 'sharegpt.json'} | sharegpt | 3 | 0 | 1 |" in card and "## Sample rows" in card
    loaded = datasets.load_dataset(str(tmp_path), cache_dir=str(tmp_path / "hf-cache"))  # no other run's cache
    written = {n: read_conversations(tmp_path / f"{n}.jsonl") for n in ("train", "validation")}
    assert {n: loaded[n].num_rows for n in loaded} == {n: len(r) for n, r in written.items()}
    assert loaded["train"][0]["messages"] == written["train"][0]["messages"]


def test_alpaca_json(tmp_path):
    report, rows = _import(tmp_path, FIXTURES / "alpaca.json")
    assert rows == _expected("expected_alpaca.jsonl")
    assert report["files"][str(FIXTURES / "alpaca.json")]["format"] == "alpaca"


def test_parquet_file_and_hub_style_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    hub = tmp_path / "hub"
    (hub / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(_sharegpt_rows()), hub / "data" / "train-00000-of-00001.parquet")
    report, rows = _import(tmp_path / "a", hub / "data" / "train-00000-of-00001.parquet")
    assert rows == _expected()
    report, rows = _import(tmp_path / "b", hub)
    assert rows == _expected() and report["files"][str(hub)]["format"] == "sharegpt"


def test_dataset_saved_with_save_to_disk(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(_sharegpt_rows())}).save_to_disk(str(tmp_path / "saved"))
    report, rows = _import(tmp_path / "out", tmp_path / "saved")
    assert rows == _expected()
    assert [r["meta"]["source"] for r in read_conversations(tmp_path / "out" / "train.jsonl")] == [
        f"{tmp_path / 'saved'}/train[{i}]" for i in range(3)]  # fmt: skip


def test_format_named_and_rows_that_do_not_fit(tmp_path):
    rows = [*_sharegpt_rows(), {"conversations": [{"from": "human", "value": "hi"}, {"from": "function", "value": "{}"}]},
            {"text": "not a chat"}]  # fmt: skip
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report, imported = _import(tmp_path / "out", path, extra=["--format", "sharegpt"])
    assert imported == _expected()
    assert report["files"][str(path)]["skipped"] == [
        {"where": f"{path}:4", "reason": "conversations[1]: speaker 'function' is neither the user nor the tutor"},
        {"where": f"{path}:5", "reason": "'conversations' must be a non-empty list"},
    ]
    with pytest.raises(TimError, match=rf"{path}:4: conversations\[1\]: speaker 'function'"):
        _import(tmp_path / "strict", path, extra=["--format", "sharegpt", "--strict", "true"])


def test_unknown_rows_name_their_keys(tmp_path):
    path = tmp_path / "other.jsonl"
    path.write_text('{"text": "Q: hi A: hello"}\n')
    with pytest.raises(TimError, match="no conversation could be imported"):
        _import(tmp_path / "out", path)
    reason = json.loads((tmp_path / "out" / "report.json").read_text())["files"][str(path)]["skipped"][0]["reason"]
    assert reason == "rows are none of the known formats (first row's keys: ['text']); name one with --format"
    with pytest.raises(TimError, match="format: 'csv' is none of auto, transcript"):
        _import(tmp_path / "out", path, extra=["--format", "csv"])
