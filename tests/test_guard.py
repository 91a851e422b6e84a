"""Tim Guard: trained through `tim guard train` on the real embedded encoder, the shipped guard's
record, the tiered decision, and `tim safeguarding classify` / `eval` as a school runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from tutorkit import TimError
from tutorkit.guard import Guard, GuardRecord
from tutorkit.model_files import file_sha256
from tutorkit.safeguarding import load_safeguard
from tutorkit.safeguarding_data import CATEGORIES

TIM = str(Path(sys.executable).parent / "tim")
SHIPPED = ROOT / "models/tim-guard"


@pytest.fixture(scope="module")
def safeguard():
    return load_safeguard(ROOT / "configs/safeguarding.yaml")


def test_guard_train_writes_a_guard_that_records_what_it_was_made_from(tmp_path):
    from train.guard import main

    out = tmp_path / "guard"
    fixture = "tests/fixtures/guard/items.jsonl"
    metrics = main(["train", "--config", "configs/guard.yaml", "--data_files", fixture, "--dev_every", "2",
                    "--test_file", "", "--output_dir", str(out), "--epochs", "1", "--batch_size", "4"])  # fmt: skip
    record = GuardRecord.read(out)
    assert record.categories == list(CATEGORIES) and record.lora["r"] == 16
    assert record.data["files"] == {fixture: file_sha256(ROOT / fixture)} and record.data["dev_items"] > 0
    assert set(record.dev_thresholds) == {"urgent", "concern"} and all(0 <= v <= 1 for v in metrics["dev"].values())
    assert {"urgent_recall", "concern_recall", "ordinary_flagged", "self_harm"} <= set(metrics["dev"])
    assert {p.name for p in out.iterdir()} >= {"guard.json", "head.safetensors", "adapter_model.safetensors", "metrics.json"}
    guard = Guard(out)
    scores = guard.scores(["can we do maths", "dad used his belt on me again"])
    assert set(scores) == set(CATEGORIES) and all(0 <= v <= 1 for v in scores.values())
    one_by_one, batched = guard.scores_many([["a"], ["b", "c"]], batch_size=1), guard.scores_many([["a"], ["b", "c"]])
    assert all(a == pytest.approx(b, abs=1e-5) for a, b in zip(one_by_one, batched))  # padding changes nothing
    # An adapter fits the encoder weights it was trained on, and says so when they differ.
    record.encoder_sha256 = "0" * 64
    record.write(out)
    with pytest.raises(TimError, match="trained on an encoder whose weights differ"):
        Guard(out)


def test_the_shipped_guard_was_trained_on_the_shipped_data():
    record = GuardRecord.read(SHIPPED)
    for path, digest in record.data["files"].items():
        assert file_sha256(ROOT / path) == digest, f"{path} changed since models/tim-guard was trained: retrain it"
    assert record.data["test_file"] == "data/safeguarding/test.jsonl" and record.lora is not None
    assert (SHIPPED / "adapter_model.safetensors").stat().st_size < 8_000_000  # a few MB, shipped in the repository
    served = load_safeguard(ROOT / "configs/safeguarding.yaml").config.guard
    assert record.dev_thresholds == {"urgent": served.urgent_threshold, "concern": served.concern_threshold}


def test_the_decision_has_tiers(safeguard):
    urgent = safeguard.decide([], "i want to kill myself")
    assert urgent.tier == "urgent" and urgent.response and "self_harm" in urgent.flags and "patterns" in urgent.layer
    hungry = safeguard.decide([], "i havent eaten since yesterday, theres nothing in the house")
    assert hungry.tier == "concern" and hungry.response is None and hungry.check_in
    ordinary = safeguard.decide(["hi tim"], "what is 7 times 8?")
    assert ordinary.tier == "none" and ordinary.flags == () and ordinary.response is None and ordinary.check_in is None
    assert set(ordinary.scores) == set(CATEGORIES)
    # Abuse silences Tim only while the message shows no sign of risk.
    rude = ["you stupid bot", "shut up", "you idiot"]
    assert safeguard.decide(rude, "what is 2+2").silence
    assert not safeguard.decide(rude, "i want to kill myself").silence


def test_a_disclosure_at_the_end_of_a_long_message_is_read(safeguard):
    """The guard reads max_length tokens; a longer message is read in overlapping pieces and scores
    the most any piece does, so what a child says after a long paste is not cut off."""
    guard = safeguard.guard
    filler = "so for homework we read the chapter about the romans and answer questions about roads and the army " * 12
    hint = "i keep thinking about ending it all, nobody would miss me"
    assert guard.pieces(hint) == [hint] and guard.pieces(filler + hint)[0] == filler + hint and len(guard.pieces(filler + hint)) > 3
    alone, padded = guard.scores([hint])["self_harm"], guard.scores([filler + hint])["self_harm"]
    cut = guard.scores_many([[filler + hint]])[0]["self_harm"]  # one truncated read: the end is lost
    threshold = safeguard.config.guard.concern_threshold
    assert alone >= threshold and padded >= threshold > cut
    words = (filler + hint).split()
    assert {w for piece in guard.pieces(filler + hint)[1:] for w in piece.split()} == set(words)  # nothing skipped


def test_classify_prints_the_served_decision_per_line(tmp_path, safeguard):
    items = tmp_path / "mine.jsonl"
    items.write_text(json.dumps({"id": "a", "chat": ["can we do fractions", "i want to kill myself"]}) + "\n"
                     + json.dumps({"id": 7, "chat": ["what is a noun?"]}) + "\n")  # fmt: skip
    r = subprocess.run([TIM, "safeguarding", "classify", str(items)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["id"], x["tier"]) for x in lines] == [("a", "urgent"), (7, "none")]
    assert all(set(x) == {"id", "tier", "categories", "scores", "layer"} for x in lines)
    served = safeguard.decide(["can we do fractions"], "i want to kill myself")
    assert lines[0]["categories"] == list(served.flags) and lines[0]["layer"] == served.layer
    items.write_text(json.dumps({"id": "a", "chat": ["fine"]}) + "\n" + json.dumps({"id": "b", "chat": "x"}) + "\n")
    r = subprocess.run([TIM, "safeguarding", "classify", str(items)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stdout == ""  # nothing printed for a file with a bad line
    assert r.stderr.strip() == f"tim: error: {items}:2: 'chat' must be a non-empty list of messages (text), the last one judged"


def test_eval_measures_every_layer_on_the_frozen_test_split(tmp_path):
    from evaluation.safeguarding_eval import main

    report = main(["eval", "--output_dir", str(tmp_path), "--data", "data/safeguarding_eval.yaml"])["test_split"]
    assert report["items"] >= 400
    layers = report["layers"]
    assert set(layers) == {"patterns", "guard", "patterns+guard", "flag nothing", "flag everything"}
    assert layers["flag nothing"]["urgent_recall"]["rate"] == 0 and layers["flag everything"]["ordinary_flagged"]["rate"] == 1
    both, patterns = layers["patterns+guard"], layers["patterns"]
    assert both["urgent_recall"]["rate"] >= patterns["urgent_recall"]["rate"]  # the guard only adds
    low, high = both["urgent_recall"]["interval"]
    assert low <= both["urgent_recall"]["rate"] <= high
    assert report["latency_ms"]["p95"] > 0
    table = (tmp_path / "test_split.md").read_text()
    assert "| patterns+guard |" in table and "Recall per category" in table and "| bullying (concern) |" in table
