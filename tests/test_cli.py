"""Every entry point answers --help; user mistakes end in one line on stderr, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.parametrize(
    "cmd",
    [
        [str(BIN / "tim"), "--help"],
        [str(BIN / "tim"), "synth", "--help"],
        [str(BIN / "tim"), "import", "--help"],
        [str(BIN / "tim"), "train", "--help"],
        [str(BIN / "tim"), "serve", "--help"],
        [str(BIN / "tim"), "export", "--help"],
        [str(BIN / "tim"), "users", "--help"],
        [str(BIN / "tim"), "demo", "--help"],
        [str(BIN / "tim"), "generator", "--help"],
        [sys.executable, "train/sft.py", "--help"],
        [sys.executable, "-m", "synth.synthesize", "--help"],
        [sys.executable, "-m", "serve.app", "--help"],
    ],
)
def test_help(cmd):
    r = run(*cmd)
    assert r.returncode == 0, r.stderr
    assert "tim" in r.stdout.lower() and ("--config" in r.stdout or "synth" in r.stdout)


def _one_line_error(r, *fragments):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tim: error: "), r.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_config_is_one_line(tmp_path):
    bad = tmp_path / "sft.yaml"
    bad.write_text("num_train_epochs: 1\nbatch_sise: 4\n")
    _one_line_error(run(str(BIN / "tim"), "train", "--config", str(bad)), f"{bad}:2", "batch_sise")
    _one_line_error(run(str(BIN / "tim"), "synth", "--config", str(tmp_path / "nope.yaml")), "nope.yaml")


def test_missing_model_is_one_line(tmp_path):
    r = run(str(BIN / "tim"), "train", "--config", "configs/sft.yaml", "--dataset_dir", str(tmp_path),
            "--model_name_or_path", str(tmp_path / "no-such-model"))  # fmt: skip
    _one_line_error(r, "train.jsonl")  # the data is checked first
    from conftest import write_dataset

    write_dataset(tmp_path)
    r = run(str(BIN / "tim"), "train", "--config", "configs/sft.yaml", "--dataset_dir", str(tmp_path),
            "--model_name_or_path", str(tmp_path / "no-such-model"))  # fmt: skip
    _one_line_error(r, "model not found", "no-such-model")
    r = run(str(BIN / "tim"), "serve", "--config", "configs/serve.yaml", "--adapter", str(tmp_path / "none"),
            "--require_login", "false", "--transcripts_db", str(tmp_path / "t.sqlite"))  # fmt: skip
    _one_line_error(r, "no trained adapter")


def test_unknown_command():
    r = run(str(BIN / "tim"), "dance")
    assert r.returncode == 2 and "unknown command 'dance'" in r.stderr


def test_offline_environment_is_set_by_every_command():
    r = run(sys.executable, "-c", "import tutorkit, os; print(os.environ['HF_HUB_OFFLINE'], os.environ['GRADIO_ANALYTICS_ENABLED'])",
            env={k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "GRADIO_ANALYTICS_ENABLED")})  # fmt: skip
    assert r.stdout.split() == ["1", "False"]


def test_the_command_line_loads_no_heavy_library_until_a_stage_needs_it():
    """Every stage is imported by tim/cli.py; none may pull torch, transformers, gradio or scipy
    in at import time, or `tim users list` would take seconds instead of a fraction of one."""
    heavy = ("torch", "transformers", "trl", "gradio", "scipy", "datasketch", "llama_cpp")
    r = run(sys.executable, "-c", f"import sys, tim.cli; print(sorted(set({heavy!r}) & set(sys.modules)))")
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
    r = run(str(BIN / "tim"), "--version")
    assert r.returncode == 0 and r.stdout.startswith("tim ")
