"""`tim eval --human_labels`: the rule checks scored against people's labels (MRBench / BEA 2025
files, here a small hand-written fixture in their format) with agreement per dimension."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation import evaluate
from tutorkit.tutor_labels import read_labelled
from tutorkit import TimError
from tutorkit.stats import agreement

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests/fixtures/human_labels.json"


def test_agreement_figures():
    same = agreement([True, True, False, False], [True, True, False, False])
    assert same["accuracy"] == same["macro_f1"] == same["kappa"] == 1.0
    chance = agreement([True, True, False, False], [True, False, True, False])
    assert chance["accuracy"] == 0.5 and chance["kappa"] == 0.0
    assert chance["confusion"] == {"no_said_no": 1, "no_said_yes": 1, "yes_said_no": 1, "yes_said_yes": 1}
    # Always "yes" on a set that is mostly yes: high accuracy, macro-F1 and kappa show it is nothing.
    lazy = agreement([True] * 9 + [False], [True] * 10)
    assert lazy["accuracy"] == 0.9 and lazy["kappa"] == 0.0 and lazy["macro_f1"] < 0.5


def test_both_file_formats_read_with_the_answer_and_the_turns():
    items = read_labelled(FIXTURE)
    assert [i.tutor for i in items] == ["Expert", "ModelA", "ModelB", "Novice", "Expert", "ModelC"]
    assert items[0].answer() == "12" and items[3].answer() is None  # Bridge has no solution
    assert items[0].turns()[-1] == ("student", "3 + 4 = 7, so 7 apples.")
    assert {i.split for i in items} <= {"dev", "test"}


def test_human_labels_mode_prints_agreement_per_dimension(tmp_path):
    r = subprocess.run([str(Path(sys.executable).parent / "tim"), "eval", "--config", "configs/eval.yaml",
                        "--human_labels", str(FIXTURE), "--human_split", "all", "--output_dir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| mistake_identification | does_not_confirm | 6 |" in r.stderr
    dims = json.loads((tmp_path / "human_labels.json").read_text())["dimensions"]
    # These replies are clear-cut: the checks agree with the labels on every one of them.
    assert dims["mistake_identification"]["accuracy"] == 1.0
    assert dims["revealing_of_the_answer"] == {**dims["revealing_of_the_answer"], "n": 3, "skipped": 2, "accuracy": 1.0}
    assert dims["tutor_tone_offensive"]["confusion"]["yes_said_yes"] == 1
    assert (tmp_path / "human_labels.md").is_file()


def test_bad_human_label_files_name_the_problem(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"conversation_history": "Tutor: hi", "tutor_responses": {"X": {"response": "hi"}}}]))
    with pytest.raises(TimError, match="dialogue 0, tutor X: needs response and annotation"):
        evaluate.main(["--config", "configs/eval.yaml", "--human_labels", str(bad), "--output_dir", str(tmp_path)])
    with pytest.raises(TimError, match="human_split: 'train' is not one of dev, test, all"):
        evaluate.main(["--config", "configs/eval.yaml", "--human_labels", str(FIXTURE), "--human_split", "train",
                       "--output_dir", str(tmp_path)])  # fmt: skip


def test_judge_trains_on_the_dev_half_only_and_is_scored_beside_the_rules(tmp_path):
    """`tim judge train` on a small fixture (12 dialogues: 5 in the dev half, 7 in the test half):
    it reads the dev half only, records what it was made from, and `--judge` scores it on the test
    half next to the rule checks."""
    from train.judge import main as judge_main
    from tutorkit.guard import Guard, GuardRecord
    from tutorkit.tutor_labels import JUDGE_DIMENSIONS

    labels = "tests/fixtures/judge_labels.json"
    out = tmp_path / "judge"
    metrics = judge_main(["train", "--config", "configs/judge.yaml", "--label_files", labels, "--choose_every", "2",
                          "--epochs", "1", "--batch_size", "4", "--max_length", "64", "--output_dir", str(out)])  # fmt: skip
    record = GuardRecord.read(out)
    assert record.categories == list(JUDGE_DIMENSIONS) and set(record.dev_thresholds) == set(JUDGE_DIMENSIONS)
    assert (record.data["train_items"], record.data["choose_items"]) == (9, 6)  # 15 dev replies; 21 test never read
    assert set(metrics["choose"]) == set(JUDGE_DIMENSIONS)
    assert Guard(out).categories == tuple(JUDGE_DIMENSIONS)
    report = evaluate.main(["--config", "configs/eval.yaml", "--human_labels", labels, "--judge", str(out),
                            "--output_dir", str(tmp_path / "eval")])  # fmt: skip
    assert set(report["judge"]) == set(JUDGE_DIMENSIONS) and report["judge"]["mistake_identification"]["n"] == 21
    assert "| mistake_identification | judge | 21 |" in (tmp_path / "eval/human_labels.md").read_text()
    with pytest.raises(TimError, match="no labelled replies in the dev half"):
        judge_main(["train", "--config", "configs/judge.yaml", "--label_files", str(FIXTURE), "--output_dir", str(out)])


def test_the_shipped_judge_was_trained_on_the_shipped_labels_and_scores_replies():
    from tutorkit.guard import Guard, GuardRecord
    from tutorkit.model_files import file_sha256
    from tutorkit.tutor_labels import JUDGE_DIMENSIONS

    shipped = ROOT / "models/tim-judge"
    record = GuardRecord.read(shipped)
    for path, digest in record.data["files"].items():
        assert file_sha256(ROOT / path) == digest, f"{path} changed since models/tim-judge was trained: retrain it"
    assert record.categories == list(JUDGE_DIMENSIONS) and (shipped / "adapter_model.safetensors").stat().st_size < 8_000_000
    judge = Guard(shipped)
    pointed, confirmed = judge.scores_many([
        ["What is 6 x 7?", "48", "Not quite: 6 x 7 is six sevens. Try 6 x 5 first, then add one more 7?"],
        ["What is 6 x 7?", "48", "Great job, 48 is correct!"]])  # fmt: skip
    assert pointed["mistake_identification"] > confirmed["mistake_identification"]


REPLY_FIXTURE = ROOT / "tests/fixtures/probe_reply_labels.jsonl"


def test_people_labels_on_tim_replies_are_scored_per_category(tmp_path):
    """A .jsonl of Tim's replies to probes with a person's pass/fail: the category's checks against
    the label, per category and overall, and each source's pass rate by people and by checks."""
    report = evaluate.main(["--config", "configs/eval.yaml", "--human_labels", str(REPLY_FIXTURE),
                            "--output_dir", str(tmp_path)])  # fmt: skip
    overall = report["overall"]
    assert (overall["n"], overall["people_pass"], overall["checks_pass"]) == (6, 3, 4)
    assert overall["confusion"] == {"no_said_no": 2, "no_said_yes": 1, "yes_said_no": 0, "yes_said_yes": 3}
    assert report["categories"]["identity"]["kappa"] == 1.0
    assert [w["reply"] for w in report["checks_pass_people_fail"]] == ["That's right. What is 15?"]
    assert report["sources"]["model"]["people"] == 0.5
    assert "| **all** | 6 | 3 | 4 |" in (tmp_path / "human_labels.md").read_text()


@pytest.mark.parametrize("line, message", [
    ('{"probe": "identity-t01"}', r"bad.jsonl:2: probe_file: missing"),
    ('{"probe": "identity-t01", "probe_file": "data/probes_test.yaml", "source": "x", "reply": "hi", '
     '"label": "ok", "why": "-"}', r"bad.jsonl:2: label: 'ok' is not pass or fail"),
    ('{"probe": "nope-t01", "probe_file": "data/probes_test.yaml", "source": "x", "reply": "hi", '
     '"label": "fail", "why": "-"}', r"bad.jsonl:2: probe: no probe 'nope-t01'"),
    ("{not json", r"bad.jsonl:2: not valid JSON"),
])  # fmt: skip
def test_bad_reply_label_files_name_the_line_and_field(tmp_path, line, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(REPLY_FIXTURE.read_text().splitlines()[0] + "\n" + line + "\n")
    with pytest.raises(TimError, match=message):
        evaluate.main(["--config", "configs/eval.yaml", "--human_labels", str(bad), "--output_dir", str(tmp_path)])


def test_shipped_reply_labels_cover_every_category_with_twenty_replies():
    from collections import Counter

    from evaluation.human_labels import read_probe_replies
    from evaluation.probes import load_probes

    rows = read_probe_replies(ROOT / "data/labels/probe_replies.jsonl")
    categories, probes = load_probes(ROOT / "data/probes_test.yaml")
    category = {p.id: p.category for p in probes}
    counts = Counter(category[r["probe"]] for r in rows)
    assert set(counts) == set(categories) and min(counts.values()) >= 20, counts
    assert all(r["why"].strip() for r in rows)
