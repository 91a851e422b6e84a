"""The default serving backend, through the real command: `tim serve` starts the project's vLLM
server (CPU build here) on the trained adapter merged into the base model, answers through the
API, restarts vLLM when it dies, and the restarted vLLM does not outlive `tim serve` even when
that is killed with -9 (the parent-death signal). SIGTERM stops the whole group through the same
`vllm_server.running` as `tim synth` (tests/test_synth.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import ROOT, VLLM_TEST_ARGS, free_port, wait_until_serving
from serve.accounts import Accounts
from serve.artifacts import merged_model
from tutorkit.backends.vllm_server import group_alive, process_alive


def test_tim_serve_on_vllm_with_merged_adapter(trained_adapter, tmp_path):
    db = tmp_path / "school.sqlite"
    accounts = Accounts(db)
    accounts.add("amy", "student", "pencil42")
    key = accounts.new_api_key("amy")
    port, run_dir = free_port(), tmp_path / "vllm"
    cmd = [str(Path(sys.executable).parent / "tim"), "serve", "--config", "configs/serve.yaml", "--backend", "vllm",
           "--adapter", str(trained_adapter), "--port", str(port), "--vllm_port", str(free_port()),
           "--vllm_run_dir", str(run_dir), "--transcripts_db", str(db), "--max_new_tokens", "24",
           *(f"--vllm_extra_args={a}" for a in VLLM_TEST_ARGS)]  # fmt: skip
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{url}/v1/models", 401, proc, tmp_path / "serve.log")  # up, refusing keyless requests
        served = json.loads((run_dir / "served.json").read_text())
        assert served["model"] == str(run_dir / "merged")  # merged weights on a CPU
        vllm_pid = int((run_dir / "server.pid").read_text())
        r = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=120,
                       json={"model": "tim", "messages": [{"role": "user", "content": "What is a fraction?"}]})  # fmt: skip
        reply = r.json()["choices"][0]["message"]["content"]
        assert r.status_code == 200 and reply.strip() and "<|im_end|>" not in reply and "User:" not in reply
        # vLLM dies (a crash, the OOM killer): the next turn waits while tim serve restarts it.
        os.kill(vllm_pid, signal.SIGKILL)
        r = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=300,
                       json={"model": "tim", "messages": [{"role": "user", "content": "What is a noun?"}]})  # fmt: skip
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].strip()
        restarted = int((run_dir / "server.pid").read_text())
        assert restarted != vllm_pid and process_alive(restarted) and not group_alive(vllm_pid)
        assert httpx.get(f"{url}/health").json()["backend"] == "ok"
        vllm_pid = restarted
    finally:
        proc.send_signal(signal.SIGKILL)  # no finally block runs: only the kernel's signal stops vLLM
        proc.wait(timeout=120)
    deadline = time.monotonic() + 30
    # The API server goes first; its engine and worker processes follow it within seconds.
    while (process_alive(vllm_pid) or group_alive(vllm_pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not process_alive(vllm_pid) and not group_alive(vllm_pid), "vLLM outlived tim serve"
    # The merge is made once and reused while the adapter is unchanged.
    merged = run_dir / "merged"
    mtime = (merged / "model.safetensors").stat().st_mtime_ns
    assert merged_model(trained_adapter, run_dir, "embedded") == merged
    assert (merged / "model.safetensors").stat().st_mtime_ns == mtime
