"""The serve config (configs/serve.yaml): what `tim serve` serves, where, and its limits."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from serve.alerts import AlertChannels
from tutorkit.backends.vllm_server import cuda_present
from tutorkit.hardware import local_engine

BACKENDS = ("auto", "vllm", "llamacpp", "openai", "transformers")
# (replies generated at once, turns waiting) when the config says 0: vLLM batches many chats; the
# in-process engines generate one (llama.cpp) or a small batch (transformers) at a time, so a
# long waiting line there means minutes of waiting instead of a clear "busy".
BACKEND_CONCURRENCY = {"vllm": (32, 64), "openai": (32, 64), "transformers": (8, 16), "llamacpp": (2, 8)}


@dataclass(frozen=True)
class Limits:
    max_message_chars: int = 2000  # longer messages are refused, not cut: nothing silently lost
    messages_per_minute: int = 12  # per student, across all their chats
    max_concurrent: int = 32  # replies generated at once (vLLM batches these together)
    max_queue: int = 64  # turns waiting for a slot; beyond it, "Tim is busy"


@dataclass
class ServeConfig:
    model: str = field(default="embedded", metadata={"help": "Base model: 'embedded', a directory, or a hub id."})
    adapter: str = field(default="runs/sft", metadata={"help": "Trained LoRA adapter dir; '' = base model only."})
    backend: str = field(default="vllm", metadata={"help": "auto (vLLM with a GPU or AVX-512, else llama.cpp) | vllm | "
                         "llamacpp | openai | transformers"})
    base_url: list[str] = field(default_factory=list, metadata={"help": "openai backend: server URL(s)."})
    served_model_name: str = field(default="tim", metadata={"help": "Model name the API lists and asks upstream for."})
    api_key: str | None = field(default=None, metadata={"help": "openai backend: the upstream server's key."})
    backend_retries: int = field(default=1, metadata={"help": "vllm, openai: retries of a request the model server "
                                 "failed, with backoff (few: a student is waiting)."})
    vllm_port: int = field(default=8301, metadata={"help": "vllm backend: port of the project's vLLM server."})
    vllm_run_dir: str = field(default="runs/serve/vllm", metadata={"help": "vllm backend: pid, log, merged model."})
    vllm_extra_args: list[str] = field(default_factory=list, metadata={"help": "vllm backend: more vLLM flags."})
    gguf_dir: str = field(default="runs/serve/gguf", metadata={"help": "llamacpp: the GGUF export of the adapter."})
    gguf_lora: bool = field(default=False, metadata={"help": "llamacpp: base GGUF + LoRA GGUF (measured 92 vs "
                            "140 tokens/s here for the merged file), instead of one merged file."})
    gguf_type: str = field(default="q8_0", metadata={"help": "llamacpp: the merged file's type."})
    base_gguf: str = field(default="", metadata={"help": "llamacpp: the base model's GGUF (default: embedded)."})
    llamacpp_threads: int = field(default=0, metadata={"help": "llamacpp: CPU threads; 0 = decoding on every core but one, prompts on every core if the CPU is idle at start."})
    llamacpp_ctx: int = field(default=2048, metadata={"help": "llamacpp: context length, prompt + reply tokens."})
    persona_config: str = field(default="configs/persona.yaml")
    safeguarding_config: str = field(default="configs/safeguarding.yaml", metadata={"help": "Model-independent flags."})
    transcripts_db: str = field(default="runs/serve/transcripts.sqlite", metadata={"help": "SQLite file of all chats."})
    retention_days: float = field(default=365.0, metadata={"help": "Chats older than this are purged at start."})
    require_login: bool = field(default=True, metadata={"help": "Accounts from `tim users` (false: loopback only)."})
    session_hours: float = field(default=8.0, metadata={"help": "A browser login lasts this long (a school day)."})
    host: str = field(default="127.0.0.1", metadata={"help": "0.0.0.0 only behind the school's firewall."})
    port: int = field(default=7860)
    forwarded_allow_ips: str = field(
        default="127.0.0.1",
        metadata={"help": "Proxies whose X-Forwarded-Proto/-For are believed (comma-separated; uvicorn's option): "
                  "behind a TLS proxy the session cookie is then Secure and login throttling sees each "
                  "student's address, not the proxy's. A proxy on this machine needs nothing."},
    )
    max_new_tokens: int = field(default=200, metadata={"help": "Reply length cap, in tokens."})
    temperature: float = field(default=0.7)
    top_p: float = field(default=0.9)
    max_history_messages: int = field(default=12, metadata={"help": "Earlier messages sent with each turn."})
    context_tokens: int = field(default=0, metadata={"help": "Prompt + reply budget in tokens: the oldest messages go "
                                "first until a turn fits. 0 = what the model supports (its config.json); "
                                "llamacpp: at most llamacpp_ctx."})
    max_message_chars: int = field(default=2000, metadata={"help": "Longer student messages are refused."})
    max_request_kb: int = field(default=256, metadata={"help": "API request bodies larger than this are refused "
                                "unread (413)."})
    messages_per_minute: int = field(default=12, metadata={"help": "Per student; more are refused for a moment."})
    max_concurrent: int = field(default=0, metadata={"help": "Replies generated at once; 0 = the backend's default."})
    max_queue: int = field(default=-1, metadata={"help": "Turns waiting for a slot, beyond which 'Tim is busy'; "
                            "-1 = the backend's default."})
    alert_smtp_host: str = field(default="", metadata={"help": "Urgent alerts by email through this SMTP relay "
                                 "('' = none)."})
    alert_smtp_port: int = field(default=25)
    alert_smtp_starttls: bool = field(default=False, metadata={"help": "STARTTLS before sending."})
    alert_smtp_user: str = field(default="", metadata={"help": "Log in to the relay as this user; the password from "
                                 "the environment variable TIM_ALERT_SMTP_PASSWORD."})
    alert_from: str = field(default="tim@localhost", metadata={"help": "The alert emails' sender address."})
    alert_to: list[str] = field(default_factory=list, metadata={"help": "Who gets urgent alert emails (the "
                                "safeguarding lead and deputies)."})
    alert_url: str = field(default="", metadata={"help": "Urgent alerts as a JSON POST to this on-premise URL "
                           "('' = none)."})
    alert_staff_url: str = field(default="", metadata={"help": "The staff page's address, named in each alert."})
    alert_retry_seconds: float = field(default=60.0, metadata={"help": "A failed alert is sent again after this, "
                                       "doubling up to an hour, until it is delivered."})

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")

        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url")
        if not self.require_login and not is_loopback(self.host):
            raise ValueError(f"require_login false is for this machine only; host {self.host!r} is reachable by others")
        for name in ("max_new_tokens", "max_message_chars", "messages_per_minute", "max_request_kb", "session_hours"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.alert_smtp_host and not self.alert_to:
            raise ValueError("alert_smtp_host is set: alert_to must name at least one address")
        if self.alert_url and not self.alert_url.startswith(("http://", "https://")):
            raise ValueError(f"alert_url must start with http:// or https://, got {self.alert_url!r}")
        if self.alert_retry_seconds <= 0:
            raise ValueError("alert_retry_seconds must be > 0")
        if self.context_tokens < 0:
            raise ValueError("context_tokens must be >= 1, or 0 for what the model supports")
        if self.max_concurrent < 0 or self.max_queue < -1:
            raise ValueError("max_concurrent must be >= 0 (0 = the backend's default), max_queue >= -1")

    @property
    def engine(self) -> str:
        """The backend in use: `backend`, or for `auto` the one this machine suits
        (tutorkit/hardware.py; `engine_choice` says why)."""
        return self.engine_choice[0]

    @property
    def engine_choice(self) -> tuple[str, str]:
        """(engine, why it was chosen; '' when the config named it)."""
        return local_engine(cuda_present()) if self.backend == "auto" else (self.backend, "")

    @property
    def alert_channels(self) -> AlertChannels:
        return AlertChannels(self.alert_smtp_host, self.alert_smtp_port, self.alert_smtp_starttls, self.alert_smtp_user,
                             self.alert_from, tuple(self.alert_to), self.alert_url, self.alert_staff_url,
                             self.alert_retry_seconds)  # fmt: skip

    @property
    def limits(self) -> Limits:
        concurrent, queue = BACKEND_CONCURRENCY[self.engine]
        return Limits(self.max_message_chars, self.messages_per_minute, self.max_concurrent or concurrent,
                      queue if self.max_queue == -1 else self.max_queue)  # fmt: skip


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
