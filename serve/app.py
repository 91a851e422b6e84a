"""Serve Tim to a school: the browser app and an OpenAI-compatible API on one offline server.

    tim serve --config configs/serve.yaml [--adapter runs/sft] [--key value ...]

    http://HOST:PORT/                    Gradio: chat, "My chats", staff page (login required)
    http://HOST:PORT/v1/chat/completions OpenAI-compatible API (bearer key: `tim users key NAME`)

Replies come from the chat backends synthesis uses (tim/backends.py):
- `vllm` (default): the project starts its own vLLM server. On CPUs it serves the trained adapter
  merged into the base model (a LoRA adapter in vLLM's CPU build decodes 3-6x slower); the merge
  is made once and reused while the adapter is unchanged. On CUDA it serves the base model with
  the adapter (`--enable-lora`). Either way with the chat template saved at training time.
- `llamacpp`: llama.cpp in this process on GGUF files exported from the adapter once (`tim export
  --gguf`): the light option for one class or a laptop (one reply at a time, little memory).
- `openai`: a school's existing OpenAI-compatible server (vLLM, llama.cpp) at `base_url`.
- `transformers`: base model + adapter in this process, where vLLM cannot run.
Every turn goes through serve/tutor.py (limits, transcripts, safeguarding) whichever page or API
it comes from. Nothing leaves the machine: analytics off, no share link, no run history, no web
fonts, HF_HUB_OFFLINE.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from serve.accounts import Accounts
from serve.safeguarding import load_safeguard
from serve.transcripts import Transcripts
from serve.tutor import Limits, Tutor
from tim import TimError
from tim.backends import ChatBackend, OpenAIChatBackend, Sampling, TransformersChatBackend
from tim.config import make_config_parser, parse_config
from tim.model_files import resolve_model
from tim.persona import load_persona

BACKENDS = ("vllm", "llamacpp", "openai", "transformers")


@dataclass
class ServeConfig:
    model: str = field(default="embedded", metadata={"help": "Base model: 'embedded', a directory, or a hub id."})
    adapter: str = field(default="runs/sft", metadata={"help": "Trained LoRA adapter dir; '' = base model only."})
    backend: str = field(default="vllm", metadata={"help": "vllm | openai | transformers"})
    base_url: list[str] = field(default_factory=list, metadata={"help": "openai backend: server URL(s)."})
    served_model_name: str = field(default="tim", metadata={"help": "Model name the API lists and asks upstream for."})
    api_key: str | None = field(default=None, metadata={"help": "openai backend: the upstream server's key."})
    vllm_port: int = field(default=8301, metadata={"help": "vllm backend: port of the project's vLLM server."})
    vllm_run_dir: str = field(default="runs/serve/vllm", metadata={"help": "vllm backend: pid, log, merged model."})
    vllm_extra_args: list[str] = field(default_factory=list, metadata={"help": "vllm backend: more vLLM flags."})
    gguf_dir: str = field(default="runs/serve/gguf", metadata={"help": "llamacpp: the GGUF export of the adapter."})
    gguf_lora: bool = field(default=False, metadata={"help": "llamacpp: base GGUF + LoRA GGUF (measured 92 vs "
                            "140 tokens/s here for the merged file), instead of one merged file."})
    gguf_type: str = field(default="q8_0", metadata={"help": "llamacpp: the merged file's type."})
    base_gguf: str = field(default="", metadata={"help": "llamacpp: the base model's GGUF (default: embedded)."})
    llamacpp_threads: int = field(default=0, metadata={"help": "llamacpp: CPU threads; 0 = every core but one."})
    llamacpp_ctx: int = field(default=2048, metadata={"help": "llamacpp: context length, prompt + reply tokens."})
    persona_config: str = field(default="configs/persona.yaml")
    safeguarding_config: str = field(default="configs/safeguarding.yaml", metadata={"help": "Model-independent flags."})
    transcripts_db: str = field(default="runs/serve/transcripts.sqlite", metadata={"help": "SQLite file of all chats."})
    retention_days: float = field(default=365.0, metadata={"help": "Chats older than this are purged at start."})
    require_login: bool = field(default=True, metadata={"help": "Accounts from `tim users` (false: loopback only)."})
    host: str = field(default="127.0.0.1", metadata={"help": "0.0.0.0 only behind the school's firewall."})
    port: int = field(default=7860)
    max_new_tokens: int = field(default=200, metadata={"help": "Reply length cap, in tokens."})
    temperature: float = field(default=0.7)
    top_p: float = field(default=0.9)
    max_history_messages: int = field(default=12, metadata={"help": "Earlier messages sent with each turn."})
    max_message_chars: int = field(default=2000, metadata={"help": "Longer student messages are refused."})
    messages_per_minute: int = field(default=12, metadata={"help": "Per student; more are refused for a moment."})
    max_concurrent: int = field(default=32, metadata={"help": "Replies generated at once."})
    max_queue: int = field(default=64, metadata={"help": "Turns waiting for a slot; beyond it 'Tim is busy'."})

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise TimError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "openai" and not self.base_url:
            raise TimError("backend 'openai' needs base_url")
        if not self.require_login and not _is_loopback(self.host):
            raise TimError(f"require_login false is for this machine only; host {self.host!r} is reachable by others")
        for name in ("max_new_tokens", "max_message_chars", "messages_per_minute", "max_concurrent"):
            if getattr(self, name) < 1:
                raise TimError(f"{name} must be >= 1")

    @property
    def limits(self) -> Limits:
        return Limits(self.max_message_chars, self.messages_per_minute, self.max_concurrent, self.max_queue)


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _adapter_dir(cfg: ServeConfig) -> Path | None:
    if not cfg.adapter:
        return None
    adapter = Path(cfg.adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise TimError(f"no trained adapter in {adapter} (run `tim train` first, or pass --adapter '')")
    return adapter


def adapter_digest(adapter: Path) -> str:
    """What the serving caches (merged model, GGUF export) are keyed on: the adapter's weights."""
    return hashlib.sha256((adapter / "adapter_model.safetensors").read_bytes()).hexdigest()


def merged_for_serving(adapter: Path, run_dir: Path) -> Path:
    """Base + adapter merged once into run_dir/merged; reused while the adapter file is the same."""
    from train.export import merge

    digest = adapter_digest(adapter)
    out = run_dir / "merged"
    stamp = out / "tim-merged-from.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("adapter_sha256") == digest:
        return out
    print(f"tim serve: merging {adapter} into the base model for vLLM -> {out}", file=sys.stderr, flush=True)
    merge(adapter, out)
    stamp.write_text(json.dumps({"adapter": str(adapter.resolve()), "adapter_sha256": digest}) + "\n")
    return out


def gguf_for_serving(cfg: ServeConfig, adapter: Path) -> dict[str, Path]:
    """The adapter exported to GGUF once into gguf_dir; reused while adapter and settings match."""
    from train.export import export_gguf

    wanted = {"adapter_sha256": adapter_digest(adapter), "merged": not cfg.gguf_lora, "type": cfg.gguf_type,
              "base": cfg.base_gguf}  # fmt: skip
    out = Path(cfg.gguf_dir)
    stamp = out / "tim-gguf-from.json"
    if stamp.is_file():
        recorded = json.loads(stamp.read_text())
        if recorded.get("wanted") == wanted:
            return {k: Path(v) for k, v in recorded["files"].items()}
    print(f"tim serve: exporting {adapter} to GGUF for llama.cpp -> {out}", file=sys.stderr, flush=True)
    files = export_gguf(adapter, out, cfg.gguf_type, merged=not cfg.gguf_lora, base_gguf=cfg.base_gguf, model=cfg.model)
    stamp.write_text(json.dumps({"wanted": wanted, "files": {k: str(v) for k, v in files.items()}}) + "\n")
    return files


def llamacpp_backend(cfg: ServeConfig, adapter: Path | None):
    from tim.backends import LlamaCppChatBackend
    from tim.chat_template import load_template
    from tim.model_files import embedded_gguf_path

    if adapter is None:
        base = Path(cfg.base_gguf) if cfg.base_gguf else embedded_gguf_path()
        model, lora, template = base, None, load_template(resolve_model(cfg.model))
    else:
        files = gguf_for_serving(cfg, adapter)
        model, lora = (files["base"], files["lora"]) if cfg.gguf_lora else (files["merged"], None)
        template = load_template(adapter)
    return LlamaCppChatBackend(model, template, lora, n_threads=cfg.llamacpp_threads, n_ctx=cfg.llamacpp_ctx)


def vllm_config(cfg: ServeConfig, adapter: Path | None):
    """The project's vLLM server for serving: merged weights on CPUs, base + LoRA on CUDA."""
    import torch

    from tim.generator_server import GeneratorConfig

    run_dir = Path(cfg.vllm_run_dir)
    template = ["--chat-template", str(adapter / "chat_template.jinja")] if adapter else []
    if adapter is None:
        model, name, lora = cfg.model, cfg.served_model_name, []
    elif torch.cuda.is_available():
        rank = json.loads((adapter / "adapter_config.json").read_text())["r"]
        model, name = cfg.model, f"{cfg.served_model_name}-base"
        lora = ["--enable-lora", "--lora-modules", f"{cfg.served_model_name}={adapter}", "--max-lora-rank", str(rank)]
    else:
        model, name, lora = str(merged_for_serving(adapter, run_dir)), cfg.served_model_name, []
    return GeneratorConfig(
        model=model, served_model_name=name, port=cfg.vllm_port, run_dir=str(run_dir),
        extra_args=[*template, *lora, *cfg.vllm_extra_args],
    )  # fmt: skip


def make_backend(cfg: ServeConfig) -> tuple[ChatBackend, object | None]:
    """The chat backend, and the vLLM server config when this process started one (to stop it)."""
    if cfg.backend == "openai":
        return OpenAIChatBackend(cfg.base_url, cfg.served_model_name, cfg.api_key), None
    adapter = _adapter_dir(cfg)
    if cfg.backend == "transformers":
        return TransformersChatBackend(resolve_model(cfg.model), adapter), None
    if cfg.backend == "llamacpp":
        return llamacpp_backend(cfg, adapter), None
    from tim import generator_server

    server = vllm_config(cfg, adapter)
    url = generator_server.start(server)
    # The adapter is served under served_model_name in both layouts (merged, or --lora-modules).
    backend = OpenAIChatBackend([url], cfg.served_model_name, max_concurrency=cfg.max_concurrent)
    return backend, server


class RunningServer:
    """A started `tim serve`: its URL, and close() to stop it (and the vLLM server it started)."""

    def __init__(self, server, thread: threading.Thread | None, url: str, vllm):
        self.server, self.thread, self.url, self.vllm = server, thread, url, vllm

    def close(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=30)
        if self.vllm is not None:
            from tim import generator_server

            generator_server.stop(self.vllm)


def build_server_app(cfg: ServeConfig, backend: ChatBackend, transcripts: Transcripts, accounts: Accounts):
    """FastAPI app: the OpenAI-compatible API under /v1, the Gradio app at /."""
    import gradio as gr
    from fastapi import FastAPI

    from serve.openai_api import make_router
    from serve.web_ui import STAFF_NOTE, build_ui

    persona = load_persona(cfg.persona_config)
    tutor = Tutor(
        backend=backend,
        safeguard=load_safeguard(cfg.safeguarding_config),
        transcripts=transcripts,
        system_prompt=persona.render_system_prompt(),
        sampling=Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens),
        limits=cfg.limits,
        max_history_messages=cfg.max_history_messages,
    )
    app = FastAPI(title=persona.name, docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(make_router(tutor, accounts, cfg.served_model_name))
    ui = build_ui(tutor, accounts, persona.name, login=cfg.require_login)
    ui.queue(default_concurrency_limit=4)
    check = (lambda name, password: accounts.verify(name, password) is not None) if cfg.require_login else None
    return gr.mount_gradio_app(
        app, ui, path="/", auth=check, auth_message=STAFF_NOTE, footer_links=[], run_history=False,
        show_error=True, ssr_mode=False, mcp_server=False, pwa=False, enable_monitoring=False,
    )  # fmt: skip


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def make_parser():
    return make_config_parser((ServeConfig,), prog="tim serve", doc=__doc__)


def launch(cfg: ServeConfig, block: bool = True) -> RunningServer:
    import uvicorn

    accounts = Accounts(cfg.transcripts_db)
    if cfg.require_login and not accounts.list():
        raise TimError("no accounts yet: add one with `tim users add NAME --role staff` (or --require_login false)")
    transcripts = Transcripts(cfg.transcripts_db)
    purged = transcripts.purge(cfg.retention_days)
    if purged:
        print(f"tim serve: purged {purged} chats older than {cfg.retention_days} days", file=sys.stderr)
    backend, vllm = make_backend(cfg)
    running = None
    try:
        app = build_server_app(cfg, backend, transcripts, accounts)
        # Open streams (a browser's event stream) would otherwise hold a shutdown forever.
        server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning",
                                               access_log=False, timeout_graceful_shutdown=5))  # fmt: skip
        url = f"http://{cfg.host}:{cfg.port}"
        print(f"tim serve: Tim is at {url}  (API: {url}/v1)", file=sys.stderr, flush=True)
        if block:
            # uvicorn shuts down gracefully on SIGTERM and then re-raises it; leaving through
            # Python (not the default handler) lets the `finally` below stop our vLLM server.
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
            server.run()
            return RunningServer(server, None, url, None)
        thread = threading.Thread(target=server.run, daemon=True, name="tim-serve")
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise TimError(f"tim serve could not start on {cfg.host}:{cfg.port} (port in use?)")
            time.sleep(0.05)
        running = RunningServer(server, thread, url, vllm)
        return running
    finally:
        if vllm is not None and running is None:  # served and stopped, or failed to start
            from tim import generator_server

            generator_server.stop(vllm)


def main(args=None):
    (cfg,) = parse_config(make_parser(), args)
    return launch(cfg)


if __name__ == "__main__":
    from tim.cli import run_reporting_errors

    run_reporting_errors(main)
