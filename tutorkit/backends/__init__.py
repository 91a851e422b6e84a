"""The chat backends: one interface, one module per engine, one factory.

    from tutorkit.backends import BackendSpec, Sampling, open_backend

    with open_backend(BackendSpec("transformers", model="embedded")) as backend:
        reply = asyncio.run(backend.complete(messages, Sampling(temperature=0.0)))

Engines (each its own module, imported only when used):
- `openai`       openai_http.py: any OpenAI-compatible server at `base_url` (vLLM, llama.cpp's
                 server, a school's own); async, bounded concurrency, retries with backoff and
                 timeouts for plain and streamed requests alike, several URLs round-robin.
- `vllm`         the project's own vLLM server (vllm_server.py), started when not running and
                 stopped again when the `with` block ends if this call started it; then `openai`.
- `transformers` transformers_local.py: the model (and a LoRA adapter) in this process.
- `llamacpp`     llamacpp_local.py: a GGUF model in this process through llama.cpp.

Synthesis, serving and evaluation all build their backend through `open_backend`. A backend
that fails raises BackendError (a TimError: one line for the user); it never returns an empty
string for a failure. An empty reply is the model's own silence.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tutorkit import TimError

if TYPE_CHECKING:
    from tutorkit.backends.vllm_server import VllmServerConfig

ENGINES = ("openai", "vllm", "transformers", "llamacpp")


class BackendError(TimError):
    """The engine could not produce a reply (server unreachable or failing, generation error).
    `status`: the HTTP status a server answered with, when that is why."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 256
    presence_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


class ChatBackend(Protocol):
    completion_tokens: int  # tokens generated so far, as the engine counts them

    async def complete(self, messages: list[dict], sampling: Sampling) -> str: ...

    async def complete_n(self, messages: list[dict], sampling: Sampling, n: int) -> list[str]:
        """`n` independent replies to the same messages (best-of-n), in one request where the
        engine allows it (vLLM's `n`, shared prefill)."""
        ...

    def stream(self, messages: list[dict], sampling: Sampling) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...


@dataclass
class BackendSpec:
    """Which engine, and its settings; each engine reads only its own fields."""

    engine: str  # one of ENGINES
    # openai, vllm: the model name to ask the server for (vllm: default the server's own name);
    # transformers: the base model ('embedded', a directory, a cached hub id); llamacpp: a GGUF file.
    model: str = ""
    adapter: str = ""  # transformers: a PEFT LoRA directory; llamacpp: a GGUF LoRA file
    chat_template: str = ""  # llamacpp: the template text (the one saved at training time)
    base_url: list[str] = field(default_factory=list)  # openai: server URL(s), used round-robin
    api_key: str | None = None  # openai: the server's key
    server: VllmServerConfig | None = None  # vllm: the server to start
    max_concurrency: int = 32  # openai, vllm: requests in flight (fills vLLM's batches)
    timeout_s: float = 120.0  # openai, vllm: per request; streamed, per piece
    max_retries: int = 4  # openai, vllm: per request, with exponential backoff
    batch_size: int = 8  # transformers: requests per generate()
    threads: int = 0  # llamacpp: CPU threads; 0 = every core but one
    context_tokens: int = 2048  # llamacpp: prompt + reply
    prompt_cache_mb: int = 0  # llamacpp: RAM for earlier requests' states, reused by the next turn (0 = off)

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise TimError(f"backend must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "openai" and not self.base_url:
            raise TimError("the openai backend needs at least one base_url")
        if self.engine == "vllm" and self.server is None:
            raise TimError("the vllm backend needs a server config")


@contextlib.contextmanager
def open_backend(spec: BackendSpec) -> Iterator[ChatBackend]:
    """The backend `spec` describes, for the length of the `with` block."""
    if spec.engine == "openai":
        from tutorkit.backends.openai_http import OpenAIChatBackend

        yield OpenAIChatBackend(spec.base_url, spec.model, spec.api_key, spec.max_concurrency, spec.timeout_s,
                                spec.max_retries)  # fmt: skip
    elif spec.engine == "vllm":
        from tutorkit.backends import vllm_server
        from tutorkit.backends.openai_http import OpenAIChatBackend

        with vllm_server.running(spec.server) as url:
            # The server this process started comes back if it dies (a crash, the OOM killer).
            supervisor = vllm_server.Supervisor(spec.server)
            yield OpenAIChatBackend([url], spec.model or spec.server.served_model_name, None, spec.max_concurrency,
                                    spec.timeout_s, spec.max_retries, revive=supervisor.revive)  # fmt: skip
    elif spec.engine == "transformers":
        from tutorkit.backends.transformers_local import TransformersChatBackend
        from tutorkit.model_files import resolve_model

        yield TransformersChatBackend(resolve_model(spec.model or "embedded"), spec.adapter or None,
                                      max_batch_size=spec.batch_size)  # fmt: skip
    else:
        from tutorkit.backends.llamacpp_local import LlamaCppChatBackend

        yield LlamaCppChatBackend(spec.model, spec.chat_template, spec.adapter or None, spec.threads, spec.context_tokens,
                                  spec.prompt_cache_mb)  # fmt: skip
