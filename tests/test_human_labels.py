"""`tim eval --human_labels`: the rule checks scored against people's labels (MRBench / BEA 2025
files, here a small hand-written fixture in their format) with agreement per dimension."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation import evaluate
from evaluation.human_labels import read_labelled
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
