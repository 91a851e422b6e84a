"""Synthesis against the project's real vLLM server on the embedded model (never mocked HTTP),
and with the in-process transformers fallback."""

from __future__ import annotations

import json

from synth import synthesize
from tim import generator_server
from tim.conversation import read_conversations


def _check_output(out, requested):
    report = json.loads((out / "report.json").read_text())
    assert report["requested"] == requested
    assert report["written"] + sum(report["rejected"].values()) == requested
    train = read_conversations(out / "train.jsonl")  # validates the schema of every row
    validation = read_conversations(out / "validation.jsonl") if report["validation"] else []
    assert len(train) == report["train"] and len(validation) == report["validation"]
    assert report["train"] + report["validation"] == report["written"] > 0
    for row in train + validation:
        assert row["messages"][0]["role"] == "system" and "Tim" in row["messages"][0]["content"]
        assert row["meta"]["topic"] and row["meta"]["mode"] == "roleplay"
        for m in row["messages"][1:]:
            assert m["content"].strip(), "a non-silent turn is empty"
            assert not m["content"].lower().startswith(("tim:", "student:", "user:"))
    return report


def test_synth_through_local_vllm_server(vllm_server, tmp_path):
    cfg, url = vllm_server
    assert generator_server.status(cfg).startswith("running")
    out = tmp_path / "synth"
    synthesize.main(
        ["--config", "configs/synth.yaml", "--output_dir", str(out), "--base_url", url,
         "--model", cfg.served_model_name, "--max_conversations", "6", "--turns", "2",
         "--tim_max_tokens", "48", "--student_max_tokens", "32", "--validation_fraction", "0.2"]
    )  # fmt: skip
    report = _check_output(out, 6)
    assert report["backend"] == {"backend": "openai", "model": cfg.served_model_name}
    rows = read_conversations(out / "train.jsonl")
    assert all(len(r["messages"]) == 5 for r in rows)  # system + 2 x (student, Tim)


def test_synth_with_in_process_transformers(tmp_path, embedded_model_dir):
    out = tmp_path / "synth"
    synthesize.main(
        ["--config", "configs/synth.yaml", "--output_dir", str(out), "--backend", "transformers",
         "--max_conversations", "1", "--turns", "1", "--tim_max_tokens", "24", "--student_max_tokens", "16"]
    )  # fmt: skip
    report = _check_output(out, 1)
    assert report["backend"]["backend"] == "transformers"


def test_generator_server_stop_and_status(tmp_path):
    cfg = generator_server.GeneratorConfig(run_dir=str(tmp_path), port=1)
    assert generator_server.status(cfg) == "stopped"
    assert generator_server.stop(cfg) is False
