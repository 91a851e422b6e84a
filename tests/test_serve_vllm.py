"""The default serving backend: `tim serve` starts the project's vLLM server (CPU build here) on
the trained adapter merged into the base model, answers through the API, and stops vLLM on close."""

from __future__ import annotations

import json
import os

import httpx

from conftest import free_port
from serve.accounts import Accounts
from serve.app import ServeConfig, launch, merged_for_serving


def test_serve_on_vllm_with_merged_adapter(trained_adapter, tmp_path):
    db = tmp_path / "school.sqlite"
    accounts = Accounts(db)
    accounts.add("amy", "student", "pencil42")
    key = accounts.new_api_key("amy")
    cfg = ServeConfig(adapter=str(trained_adapter), port=free_port(), vllm_port=free_port(),
                      vllm_run_dir=str(tmp_path / "vllm"), transcripts_db=str(db), max_new_tokens=24)  # fmt: skip
    assert cfg.backend == "vllm"  # the default
    server = launch(cfg, block=False)
    pid = int((tmp_path / "vllm" / "server.pid").read_text())
    try:
        served = json.loads((tmp_path / "vllm" / "served.json").read_text())
        assert served["model"] == str(tmp_path / "vllm" / "merged")  # merged weights on a CPU
        headers = {"Authorization": f"Bearer {key}"}
        r = httpx.post(f"{server.url}/v1/chat/completions", headers=headers, timeout=120,
                       json={"model": "tim", "messages": [{"role": "user", "content": "What is a fraction?"}]})  # fmt: skip
        reply = r.json()["choices"][0]["message"]["content"]
        assert r.status_code == 200 and reply.strip() and "<|im_end|>" not in reply and "User:" not in reply
        # The merge is made once and reused while the adapter is unchanged.
        merged = tmp_path / "vllm" / "merged"
        mtime = (merged / "model.safetensors").stat().st_mtime_ns
        assert merged_for_serving(trained_adapter, tmp_path / "vllm") == merged
        assert (merged / "model.safetensors").stat().st_mtime_ns == mtime
    finally:
        server.close()
    # vLLM stopped with the server.
    try:
        os.kill(pid, 0)
        alive = open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        alive = False
    assert not alive
