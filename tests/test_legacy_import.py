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
    # Row 1 is a prefix of row 2 (the same chat, cut earlier): folded, and reported.
    assert len(rows) == 2 and _file(report, "pairs.jsonl")["changed"] == [
        {"where": f"{FIXTURES}/pairs.jsonl:1", "what": f"folded into {FIXTURES}/pairs.jsonl:2 (the same chat, cut earlier)"}]
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
        ("bot_named_sam.txt", r"bot_named_sam.txt: speaker labels not in .*: Sam \(3 lines\)"),
    ],
)
def test_strict_stops_at_the_first_problem_with_file_and_line(tmp_path, name, error):
    with pytest.raises(TimError, match=error):
        _import(tmp_path, name, extra=["--strict", "true"])
    assert not (tmp_path / "train.jsonl").exists()  # nothing half-written


def test_missing_input_stops_even_when_not_strict(tmp_path):
    with pytest.raises(TimError, match=r"input not found: .*missing.txt"):
        _import(tmp_path, "missing.txt")


def _file(report, name):
    return report["files"][str(FIXTURES / name)]


def test_untidy_logs_import_and_the_report_says_what_changed(tmp_path):
    names = ["bad_ends_with_user.txt", "bad_starts_with_tutor.txt", "bad_pairs.jsonl", "bad_json.jsonl",
             "bad_before_label.txt", "bot_named_sam.txt"]  # fmt: skip
    report, rows = _import(tmp_path, *names)
    by_source = {r["meta"]["source"].rsplit("/", 1)[1]: _turns(r) for r in rows}
    # The student's last line with no reply is dropped, the rest kept.
    assert by_source["bad_ends_with_user.txt:1"] == [("user", "hi"), ("assistant", "Hello! What shall we learn?")]
    assert _file(report, "bad_ends_with_user.txt")["changed"] == [
        {"where": f"{FIXTURES}/bad_ends_with_user.txt:3", "what": "dropped the last student line (no reply)"}]
    # The bot's greeting before the student spoke is dropped.
    assert by_source["bad_starts_with_tutor.txt:1"] == [("user", "maths"), ("assistant", "Great.")]
    # Two tutor lines in a row in a prompt: the completion goes on with the prompt's tutor turn.
    assert by_source["bad_pairs.jsonl:2"] == [("user", "hi"), ("assistant", "Hello!\nAnyone there?")]
    assert _file(report, "bad_pairs.jsonl")["changed"] == [
        {"where": f"{FIXTURES}/bad_pairs.jsonl:2", "what": "joined the completion to the prompt's last tutor turn"}]
    # A row that is not JSON is skipped with its line; the good row of the file is kept.
    assert _file(report, "bad_json.jsonl")["skipped"] == [
        {"where": f"{FIXTURES}/bad_json.jsonl:2", "reason": "not valid JSON (Expecting value)"}]
    assert _file(report, "bad_json.jsonl")["imported"] == 1
    # Text before any label: that conversation is skipped, named by line.
    assert _file(report, "bad_before_label.txt")["skipped"][0]["where"] == f"{FIXTURES}/bad_before_label.txt:1"
    # A bot with another name: the whole file is skipped, with the label to add.
    sam = _file(report, "bot_named_sam.txt")
    assert sam["imported"] == 0 and "Sam (3 lines)" in sam["skipped"][0]["reason"]
    assert report["conversations"] == len(rows) == 5
    assert report["skipped"] == 3 and json.loads((tmp_path / "report.json").read_text())["files"] == report["files"]
    # Told what to add, the same file imports whole.
    report, rows = _import(tmp_path, "bot_named_sam.txt", extra=["--tutor_labels", "TIM", "Sam"])
    assert report["conversations"] == 2 and report["skipped"] == 0
    assert _turns(rows[0])[1] == ("assistant", "I'm Tim! What shall we learn today?")


def test_nothing_importable_is_an_error_with_the_report_written(tmp_path):
    with pytest.raises(TimError, match=r"no conversation could be imported \(1 skipped\); the reasons are in"):
        _import(tmp_path, "bot_named_sam.txt")
    assert json.loads((tmp_path / "report.json").read_text())["skipped"] == 1
    assert not (tmp_path / "train.jsonl").exists()


def test_report_counts_per_file(tmp_path):
    report, _ = _import(tmp_path, "transcripts.txt", "pairs.jsonl")
    assert report["conversations"] == 4
    files = json.loads((tmp_path / "report.json").read_text())["files"]
    assert {k: (v["format"], v["imported"], len(v["skipped"])) for k, v in files.items()} == {
        str(FIXTURES / "transcripts.txt"): ("transcript", 2, 0),
        str(FIXTURES / "pairs.jsonl"): ("prompt_completion", 2, 0),
    }


def _generated_logs(folder: Path, n: int) -> tuple[list[str], dict[str, object]]:
    """n files of real-shaped logs mixing every untidy case; returns (paths, expected), where
    expected maps each conversation's file:line to its turns after import, or to "skipped"."""
    expected: dict[str, object] = {}
    paths = []
    for i in range(n):
        kind = i % 7
        lesson = [("user", f"what is {i} plus {i}"), ("assistant", f"What do you get if you count on {i} from {i}?"),
                  ("user", f"{2 * i}"), ("assistant", f"Yes, {2 * i}. Well done!")]  # fmt: skip
        label = {"user": "User", "assistant": "TIM"}
        if kind == 5:  # prompt/completion rows: a good one, one with two tutor lines in a row, broken JSON
            path = folder / f"log{i:03}.jsonl"
            path.write_text("\n".join([
                json.dumps({"prompt": f"User: {lesson[0][1]}\nTIM:", "completion": lesson[1][1]}),
                json.dumps({"prompt": f"User: hi {i}\nTIM: Hello!\nTIM:", "completion": "Still there?"}),
                '{"prompt": "User: hi", "completion": ',
            ]) + "\n")  # fmt: skip
            expected[f"{path}:1"] = lesson[:2]
            expected[f"{path}:2"] = [("user", f"hi {i}"), ("assistant", "Hello!\nStill there?")]
            expected[f"{path}:3"] = "skipped"
            paths.append(str(path))
            continue
        lines, turns = [], list(lesson)
        if kind == 1:  # the student's last line got no reply
            lines_extra_user = f"User: bye {i}"
        if kind == 2:  # the bot greets first
            lines.append("TIM: Hi! What shall we learn today?")
        if kind == 3:  # the student sends two lines in a row
            lines.append(f"User: hello {i}")
            turns[0] = ("user", f"hello {i}\n{lesson[0][1]}")
        lines += [f"{label[role]}: {text}" for role, text in lesson]
        if kind == 1:
            lines.append(lines_extra_user)
        if kind == 4:  # the bot has another name (in the whole file)
            turns = "skipped"
        if kind == 6:  # an exported header before the first label
            lines.insert(0, "Exported chat log")
            turns = "skipped"
        path = folder / f"log{i:03}.txt"
        text = "\n".join(lines) + "\n---\n" + f"User: second chat {i}\nTIM: Sure, let's go.\n"
        path.write_text(text.replace("TIM:", "Robo:") if kind == 4 else text)
        expected[f"{path}:1"] = turns
        expected[f"{path}:{len(lines) + 2}"] = "skipped" if kind == 4 else [("user", f"second chat {i}"), ("assistant", "Sure, let's go.")]
        paths.append(str(path))
    return paths, expected


def test_a_few_hundred_mixed_logs_every_conversation_accounted_for(tmp_path):
    (tmp_path / "logs").mkdir()
    paths, expected = _generated_logs(tmp_path / "logs", 280)
    out = tmp_path / "out"
    report = legacy_import.main(["--config", "configs/import.yaml", "--output_dir", str(out), "--validation_fraction",
                                 "0.1", "--inputs", *paths])  # fmt: skip
    rows = read_conversations(out / "train.jsonl") + read_conversations(out / "validation.jsonl")
    imported = {r["meta"]["source"]: _turns(r) for r in rows}
    skipped = {s["where"] for f in report["files"].values() for s in f["skipped"]}
    assert set(report["files"]) == set(paths)  # every file has its entry
    for where, turns in expected.items():
        if turns == "skipped":
            file = where.rsplit(":", 1)[0]
            assert where in skipped or file in skipped, where  # a skipped conversation, or its whole file
        else:
            assert imported.get(where) == turns, where
    assert len(rows) == report["conversations"] == sum(f["imported"] for f in report["files"].values())
    assert len(imported) == sum(1 for t in expected.values() if t != "skipped")
    # The bot called Robo: each such file skipped once, naming the label to add.
    robo = [f for f in report["files"].values() if f["imported"] == 0]
    assert robo and all("Robo (" in f["skipped"][0]["reason"] for f in robo)
