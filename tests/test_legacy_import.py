"""`tim import` on hand-written legacy fixtures: both formats, and clear file:line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synth import legacy_import
from tutorkit import TimError
from tutorkit.conversation import read_conversations

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy"


def _import(tmp_path, *files, extra=()):
    args = ["--config", "configs/import.yaml", "--output_dir", str(tmp_path), "--validation_fraction", "0",
            "--inputs", *[str(FIXTURES / f) for f in files], *extra]  # fmt: skip
    report = legacy_import.main(args)
    return report, read_conversations(tmp_path / "train.jsonl")


def _turns(row):
    return [(m["role"], m["content"]) for m in row["messages"] if m["role"] != "system"]


def test_plain_text_transcripts(tmp_path):
    report, rows = _import(tmp_path, "transcripts.txt")
    assert report["conversations"] == 2 and len(rows) == 2
    first, second = (_turns(r) for r in rows)
    assert [r for r, _ in first] == ["user", "assistant"] * 3
    # A tutor turn that runs on over several lines, with a blank line inside, stays one turn.
    assert first[3][1] == (
        "Fractions can feel tricky at first.\nThink of a pizza cut into 4 slices.\n\n"
        "If you eat 1 slice, you ate 1/4 of the pizza.\nWhat would 2 slices be?"
    )
    assert second[-1] == ("assistant", "")  # an empty tutor line is a silent turn
    assert rows[0]["messages"][0]["role"] == "system" and "Tim" in rows[0]["messages"][0]["content"]
    assert rows[0]["meta"]["source"].endswith("transcripts.txt:1")


def test_tutor_named_otherwise_becomes_tim(tmp_path):
    _, rows = _import(tmp_path, "other_name.txt", extra=["--tutor_labels", "TIM", "SAM"])
    turns = _turns(rows[0])
    assert turns[1] == ("assistant", "I'm Tim, your tutor. What would you like to learn?")
    assert "Tim loves them!" in turns[3][1] and "Sam" not in turns[3][1]


def test_prompt_completion_pairs(tmp_path):
    report, rows = _import(tmp_path, "pairs.jsonl")
    # Row 1 is a prefix of row 2 (the same chat, cut earlier): folded, and counted.
    assert report["folded_prefix_rows"] == 1 and len(rows) == 2
    noun = _turns(rows[0])
    assert noun == [
        ("user", "what is a noun"),
        ("assistant", "A noun is a word for a person, place or thing. Can you name one?"),
        ("user", "dog?"),
        ("assistant", "Yes, dog is a noun! Can you find one in this room?"),
    ]
    assert _turns(rows[1])[1][1] == "That sounds hard. Have you eaten today?\nA teacher or the school office can help you get food."


@pytest.mark.parametrize(
    "name, error",
    [
        ("bad_before_label.txt", r"bad_before_label.txt:1: text before the first speaker label"),
        ("bad_ends_with_user.txt", r"bad_ends_with_user.txt:3: the conversation ends with a user turn"),
        ("bad_starts_with_tutor.txt", r"bad_starts_with_tutor.txt:1: the conversation starts with the tutor"),
        ("bad_pairs.jsonl", r"bad_pairs.jsonl:2: the prompt must end with a user turn"),
        ("bad_json.jsonl", r"bad_json.jsonl:2: not valid JSON"),
        ("missing.txt", r"input file not found: .*missing.txt"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, name, error):
    with pytest.raises(TimError, match=error):
        _import(tmp_path, name)
    assert not (tmp_path / "train.jsonl").exists()  # nothing half-written


def test_report_counts_per_file(tmp_path):
    report, _ = _import(tmp_path, "transcripts.txt", "pairs.jsonl")
    assert report["conversations"] == 4
    assert json.loads((tmp_path / "report.json").read_text())["per_file"] == {
        str(FIXTURES / "transcripts.txt"): 2,
        str(FIXTURES / "pairs.jsonl"): 2,
    }
