"""Adapters trained on one machine and served on another, checked on the CPU before a GPU ever
sees them: vLLM's fixed set of --max-lora-rank values, DoRA adapters (which vLLM's LoRA support
refuses: served merged), and the base-model path an adapter records from its training machine."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from serve import engine
from serve.config import ServeConfig
from tutorkit import TimError

ROOT = Path(__file__).resolve().parent.parent


def _copy(adapter: Path, dest: Path, **changes) -> Path:
    shutil.copytree(adapter, dest)
    config = json.loads((dest / "adapter_config.json").read_text())
    (dest / "adapter_config.json").write_text(json.dumps({**config, **changes}))
    return dest


@pytest.mark.parametrize("rank, served", [(1, 1), (2, 8), (8, 8), (12, 16), (16, 16), (33, 64), (300, 320), (512, 512)])
def test_lora_rank_rounds_up_to_a_value_vllm_accepts(rank, served):
    assert engine.vllm_lora_rank(rank) == served


def test_lora_rank_above_vllms_largest_is_a_clear_error():
    with pytest.raises(TimError, match="adapter rank 1024 is above vLLM's largest --max-lora-rank"):
        engine.vllm_lora_rank(1024)


def test_cuda_vllm_gets_the_rounded_rank(trained_adapter, tmp_path, monkeypatch):
    adapter = _copy(trained_adapter, tmp_path / "r12", r=12)
    monkeypatch.setattr(engine, "cuda_present", lambda: True)  # which branch; nothing is served here
    args = engine.vllm_server_config(ServeConfig(adapter=str(adapter), vllm_run_dir=str(tmp_path / "run")), adapter).extra_args
    assert args[args.index("--max-lora-rank") + 1] == "16" and "--enable-lora" in args


def test_dora_adapter_is_served_merged_with_a_message(tiny_dataset, tmp_path, monkeypatch, capsys):
    from train import sft

    dora = tmp_path / "dora"
    sft.main(["--config", str(ROOT / "configs/sft.yaml"), "--dataset_dir", str(tiny_dataset), "--output_dir", str(dora),
              "--use_dora", "true", "--max_steps", "1", "--report_to", "none", "--eval_strategy", "no",
              "--save_strategy", "no", "--disable_tqdm", "true"])  # fmt: skip
    assert json.loads((dora / "adapter_config.json").read_text())["use_dora"] is True
    monkeypatch.setattr(engine, "cuda_present", lambda: True)
    server = engine.vllm_server_config(ServeConfig(adapter=str(dora), vllm_run_dir=str(tmp_path / "run")), dora)
    assert "--enable-lora" not in server.extra_args and server.model == str(tmp_path / "run" / "merged")
    assert (tmp_path / "run" / "merged" / "model.safetensors").is_file()
    assert "is a DoRA adapter, which vLLM cannot load as LoRA; serving it merged" in capsys.readouterr().err


def test_base_path_recorded_on_the_training_machine_is_not_used(trained_adapter, tmp_path, capsys):
    elsewhere = "/home/gpu-box/.cache/tim/models/SmolLM2-135M-Instruct"
    adapter = _copy(trained_adapter, tmp_path / "from-gpu", base_model_name_or_path=elsewhere)
    cfg = ServeConfig(adapter=str(adapter), vllm_run_dir=str(tmp_path / "run"))  # model: embedded
    spec = engine.backend_spec(cfg)  # on this CPU: the merged model, built from the configured base
    assert spec.server.model == str(tmp_path / "run" / "merged")
    stamp = json.loads((tmp_path / "run" / "merged" / "tim-merged-from.json").read_text())
    assert stamp["base"] == "embedded"
    assert f"was trained on base {elsewhere}; serving it on the configured model 'embedded'" in capsys.readouterr().err


def test_auto_backend_is_chosen_for_this_cpu_and_says_why():
    from tutorkit.hardware import has_avx512, local_engine, parse_flags

    cfg = ServeConfig(backend="auto", adapter="")
    chosen, why = cfg.engine_choice
    assert chosen == cfg.engine == ("vllm" if has_avx512() or engine.cuda_present() else "llamacpp") and why
    assert cfg.backend == "auto"  # the config keeps what the file says
    assert cfg.limits.max_concurrent == (32 if chosen == "vllm" else 2)  # the chosen backend's defaults
    assert local_engine(False, parse_flags("flags\t: fpu avx2 fma"))[0] == "llamacpp"
    assert ServeConfig(backend="vllm", adapter="").engine_choice == ("vllm", "")


def test_vllm_leaves_a_core_free_when_another_process_is_busy_at_start():
    """cpu_threads adaptive (the default): every core on an idle CPU, one left free beside a busy
    neighbour (there every-core vLLM ran at 0.33x, one-core-free at 0.97x; docs/performance.md).
    The busy neighbour here is real: a Python loop on one core, seen through /proc/stat."""
    import subprocess
    import sys

    from tutorkit.backends.vllm_server import VllmServerConfig
    from tutorkit.hardware import busy_cores, vllm_cpu_threads

    assert VllmServerConfig().cpu_threads == "adaptive"
    assert vllm_cpu_threads("adaptive", busy=0.1)[0] == "all"
    threads, why = vllm_cpu_threads("adaptive", busy=0.9)
    assert threads == "auto" and "0.9 cores were busy" in why
    assert vllm_cpu_threads("all", busy=2.0)[0] == "all" and vllm_cpu_threads("auto", busy=0.0)[0] == "auto"
    neighbour = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 20\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.5)
        assert busy_cores(1.0) >= 0.8
    finally:
        neighbour.kill()
        neighbour.wait()
    with pytest.raises(ValueError, match="cpu_threads must be 'all', 'auto' or 'adaptive'"):
        VllmServerConfig(cpu_threads="every")


def test_served_context_is_what_the_model_supports_unless_configured(tmp_path, monkeypatch):
    """context_tokens 0 (the default): the model's own context (8192 for the embedded model), and
    vLLM is started with it; llama.cpp keeps its llamacpp_ctx (its KV cache is in the process)."""
    monkeypatch.setattr(engine, "cuda_present", lambda: False)
    cfg = ServeConfig(backend="vllm", vllm_run_dir=str(tmp_path / "run"))
    assert engine.served_context(cfg) == 8192
    assert engine.vllm_server_config(cfg, None).max_model_len == 8192
    assert engine.served_context(ServeConfig(backend="vllm", context_tokens=3000)) == 3000
    assert engine.served_context(ServeConfig(backend="llamacpp")) == 2048  # llamacpp_ctx
    assert engine.served_context(ServeConfig(backend="llamacpp", llamacpp_ctx=4096, context_tokens=3000)) == 3000
    assert engine.served_context(ServeConfig(backend="openai", base_url="http://gpu1:8000")) == 2048  # not known here
    with pytest.raises(ValueError, match="context_tokens must be >= 1, or 0"):
        ServeConfig(context_tokens=-1)


def test_vllm_runs_float32_on_a_cpu_without_avx512_or_bf16():
    """bf16 on AVX2 kernels is emulated (3x slower at 32 requests, docs/performance.md); vLLM's
    AVX-512 kernels crashed in float32, so only AVX2-only CPUs get it; --dtype in the config wins."""
    from tutorkit.backends.vllm_server import VllmServerConfig, server_command
    from tutorkit.hardware import parse_flags, vllm_cpu_dtype

    avx2 = parse_flags("processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma f16c\n")
    avx512 = parse_flags("flags\t\t: avx2 avx512f avx512bw\n")
    bf16 = parse_flags("flags\t\t: avx2 avx512f avx512_bf16\n")
    assert vllm_cpu_dtype([], avx2)[0] == "float32"
    assert vllm_cpu_dtype([], avx512)[0] is None and vllm_cpu_dtype([], bf16)[0] is None
    assert vllm_cpu_dtype(["--dtype", "bfloat16"], avx2)[0] is None
    assert vllm_cpu_dtype(["--dtype=half"], avx2)[0] is None
    cmd = server_command(VllmServerConfig(), Path("/m"), "float32")
    assert cmd[cmd.index("--dtype") + 1] == "float32"
    assert "--dtype" not in server_command(VllmServerConfig(), Path("/m"))


def test_llamacpp_reads_prompts_on_every_core_only_when_the_cpu_is_idle():
    """Prompts are one long C call (1200 tokens: 8.2 s on one thread, 4.2 on two here); decoding
    stays on every core but one (Python hands out the tokens); beside a busy neighbour both do."""
    import os

    from tutorkit.hardware import llamacpp_threads

    cores = os.cpu_count()
    decode, prompt, why = llamacpp_threads(0, busy=0.1)
    assert (decode, prompt) == (max(1, cores - 1), cores) and "idle" in why
    assert llamacpp_threads(0, busy=0.9)[:2] == (max(1, cores - 1), max(1, cores - 1))
    assert llamacpp_threads(3, busy=0.0)[:2] == (3, 3)
