"""Which chat backend `tim serve` uses, and the files it needs: the serve config as a BackendSpec
for tutorkit.backends.open_backend.

- `vllm` (default): the project's own vLLM server. On CPUs it serves the adapter merged into the
  base model (a LoRA adapter in vLLM's CPU build decodes 3-6x slower); on CUDA the base model
  with the adapter (`--enable-lora`). Either way with the chat template saved at training time.
- `llamacpp`: llama.cpp in this process on the GGUF export of the adapter.
- `openai`: a school's existing OpenAI-compatible server at `base_url`.
- `transformers`: base model + adapter in this process, where vLLM cannot run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from serve import artifacts
from serve.config import ServeConfig
from tutorkit import TimError
from tutorkit.backends import BackendSpec
from tutorkit.backends.vllm_server import VllmServerConfig, cuda_present
from tutorkit.chat_template import load_template
from tutorkit.model_files import embedded_gguf_path, model_context, resolve_model


def adapter_dir(cfg: ServeConfig) -> Path | None:
    if not cfg.adapter:
        return None
    adapter = Path(cfg.adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise TimError(f"no trained adapter in {adapter} (run `tim train` first, or pass --adapter '')")
    return adapter


# vLLM's --max-lora-rank accepts only these values (vllm/config/lora.py); an adapter's rank is
# rounded up to the next one.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(rank: int) -> int:
    """The --max-lora-rank vLLM accepts for an adapter of rank `rank`."""
    fitting = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not fitting:
        raise TimError(f"adapter rank {rank} is above vLLM's largest --max-lora-rank ({VLLM_LORA_RANKS[-1]}); serve it merged")
    return fitting[0]


def recorded_base(adapter: Path) -> str:
    return json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""


def say_base(adapter: Path, model: str) -> None:
    """The adapter records the base model by the path it had where it was trained; serving always
    uses the configured `model`, and says so when the two differ."""
    recorded = recorded_base(adapter)
    try:
        same = recorded and Path(resolve_model(model)).resolve() == Path(recorded).expanduser().resolve()
    except TimError:
        same = False
    if recorded and not same:
        print(f"tim serve: {adapter} was trained on base {recorded}; serving it on the configured model '{model}'",
              file=sys.stderr, flush=True)  # fmt: skip


def served_context(cfg: ServeConfig) -> int:
    """Prompt + reply tokens a turn may use: context_tokens, or (0) what the model supports; with
    llama.cpp at most llamacpp_ctx (its KV cache is in this process: 2048 keeps a laptop's RSS
    under 300 MiB with the embedded model). Another server's limit (backend openai) is not known
    here: 2048 unless context_tokens says more."""
    if cfg.engine == "openai":
        return cfg.context_tokens or 2048
    tokens = cfg.context_tokens or model_context(cfg.model)
    return min(tokens, cfg.llamacpp_ctx) if cfg.engine == "llamacpp" else tokens


def vllm_server_config(cfg: ServeConfig, adapter: Path | None) -> VllmServerConfig:
    """The project's vLLM server for serving: merged weights on CPUs, base + LoRA on CUDA (merged
    there too for a DoRA adapter, which vLLM's LoRA support refuses)."""
    run_dir = Path(cfg.vllm_run_dir)
    template = ["--chat-template", str(adapter / "chat_template.jinja")] if adapter else []
    adapter_config = json.loads((adapter / "adapter_config.json").read_text()) if adapter else {}
    if adapter is None:
        model, name, lora = cfg.model, cfg.served_model_name, []
    elif cuda_present() and not adapter_config.get("use_dora"):
        rank = vllm_lora_rank(int(adapter_config["r"]))
        model, name = cfg.model, f"{cfg.served_model_name}-base"
        lora = ["--enable-lora", "--lora-modules", f"{cfg.served_model_name}={adapter}", "--max-lora-rank", str(rank)]
    else:
        if cuda_present():
            print(f"tim serve: {adapter} is a DoRA adapter, which vLLM cannot load as LoRA; serving it merged into the base",
                  file=sys.stderr, flush=True)  # fmt: skip
        model, name, lora = str(artifacts.merged_model(adapter, run_dir, cfg.model)), cfg.served_model_name, []
    return VllmServerConfig(model=model, served_model_name=name, port=cfg.vllm_port, run_dir=str(run_dir),
                            max_model_len=served_context(cfg), extra_args=[*template, *lora, *cfg.vllm_extra_args])  # fmt: skip


def backend_spec(cfg: ServeConfig) -> BackendSpec:
    """The backend to serve with, after building any files it needs (merge, GGUF export)."""
    engine = cfg.engine  # `auto` resolved for this machine
    if engine == "openai":
        return BackendSpec("openai", model=cfg.served_model_name, base_url=cfg.base_url, api_key=cfg.api_key,
                           max_concurrency=cfg.limits.max_concurrent, max_retries=cfg.backend_retries)  # fmt: skip
    adapter = adapter_dir(cfg)
    if adapter is not None:
        say_base(adapter, cfg.model)
    if engine == "transformers":
        return BackendSpec("transformers", model=cfg.model, adapter=str(adapter or ""))
    if engine == "llamacpp":
        if adapter is None:
            base = cfg.base_gguf or str(embedded_gguf_path())
            return BackendSpec("llamacpp", model=base, chat_template=load_template(resolve_model(cfg.model)),
                               threads=cfg.llamacpp_threads, context_tokens=cfg.llamacpp_ctx)  # fmt: skip
        files = artifacts.gguf_files(adapter, Path(cfg.gguf_dir), cfg.gguf_type, not cfg.gguf_lora, cfg.base_gguf, cfg.model)
        model, lora = (files["base"], files["lora"]) if cfg.gguf_lora else (files["merged"], "")
        return BackendSpec("llamacpp", model=str(model), adapter=str(lora), chat_template=load_template(adapter),
                           threads=cfg.llamacpp_threads, context_tokens=cfg.llamacpp_ctx)  # fmt: skip
    # The adapter is served under served_model_name in both layouts (merged, or --lora-modules).
    return BackendSpec("vllm", model=cfg.served_model_name, server=vllm_server_config(cfg, adapter),
                       max_concurrency=cfg.limits.max_concurrent, max_retries=cfg.backend_retries)  # fmt: skip
