"""scripts/gpu_check.sh, the one-shot CUDA check, can run on a GPU machine lent for minutes: its
dry run passes here (every step's command printed, every file it needs present), and its build
step (a random-init model of the embedded model's shape, the real tokenizer, the gold rows) works
on this CPU, so the first minutes on a GPU are not spent on a typo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dry_run_prints_every_step_and_writes_nothing():
    before = (ROOT / "docs/performance.md").read_text()
    out = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable}, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    for step in ("env", "build", "sft", "qlora", "shapes", "serve", "vllm"):
        assert f"== {step} (limit " in out.stdout
    assert "train/sft.py --config configs/gpu/sft.yaml" in out.stdout and "--load_in_4bit true" in out.stdout
    assert (ROOT / "docs/performance.md").read_text() == before


def test_build_step_makes_a_trainable_model_and_dataset_on_this_cpu(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tutorkit.conversation import read_conversations

    results = tmp_path / "performance.md"
    out = subprocess.run([sys.executable, "scripts/gpu_check.py", "--only", "build", "--results", str(results)], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "TIM_GPU_CHECK_DIR": str(tmp_path)},
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # SmolLM2-135M's shape
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer("<|im_start|>")["input_ids"] == [1]
    rows = read_conversations(tmp_path / "data" / "train.jsonl")
    assert rows and rows[0]["messages"][0]["role"] == "system"
    assert "| build | ok in" in out.stdout and "| build | ok in" in results.read_text()
