"""A GGUF model (tim export --gguf) in this process through llama.cpp (llama-cpp-python): the
light option for one class or a laptop.

The prompt is rendered from the chat template saved at training time (tutorkit/chat_template.py,
identical to transformers' rendering) and tokenized by llama.cpp with special tokens parsed;
generation ends at the end-of-turn token (the GGUF's EOS). One llama.cpp context serves one
reply at a time: concurrent chats take turns (a lock), so they cannot corrupt each other's
state. Generation runs in a worker thread and streams through an asyncio queue. Best-of-n
candidates (tim synth) are decoded together in a second context (llamacpp_candidates.py).
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from tutorkit.backends import BackendError, Sampling
from tutorkit.chat_template import render_chat
from tutorkit.hardware import llamacpp_threads


class LlamaCppChatBackend:
    def __init__(self, model_path: str | Path, chat_template: str, lora_path: str | Path | None = None,
                 n_threads: int = 0, n_ctx: int = 2048, prompt_cache_mb: int = 0):  # fmt: skip
        try:
            from llama_cpp import Llama
        except ImportError:
            raise BackendError("llama-cpp-python is not installed: run scripts/setup_env.sh --llamacpp") from None
        self.chat_template = chat_template
        decode, self.prompt_threads, why = llamacpp_threads(n_threads)
        prompt = self.prompt_threads
        print(f"tim: llama.cpp threads: {decode} decoding, {prompt} reading prompts ({why})", file=sys.stderr, flush=True)
        self.llm = Llama(model_path=str(model_path), lora_path=str(lora_path) if lora_path else None,
                         n_threads=decode, n_threads_batch=prompt, n_ctx=n_ctx, verbose=False)  # fmt: skip
        if prompt_cache_mb > 0:
            # llama.cpp reuses the previous request's prompt where the new one starts the same;
            # requests from several conversations in turn share little with the one before. This
            # keeps the state after each reply and starts from the longest matching one, so a
            # conversation's next turn reads only its new messages. tim synth, 6 conversations x 3
            # turns: 391 s without, 192 s with every state kept (docs/performance.md).
            self.llm.set_cache(state_cache_class()(capacity_bytes=prompt_cache_mb << 20))
        self.lora_path, self.n_ctx = lora_path, n_ctx
        self.completion_tokens = 0
        self._lock = threading.Lock()
        self._candidates = None  # llamacpp_candidates.CandidateContext, made for the first complete_n

    def render(self, messages: list[dict]) -> str:
        return render_chat(self.chat_template, messages, add_generation_prompt=True)

    def tokens(self, messages: list[dict]) -> list[int]:
        """The prompt's token ids as llama.cpp sees them (special tokens parsed, no BOS added)."""
        return self.llm.tokenize(self.render(messages).encode("utf-8"), add_bos=False, special=True)

    def _generate(self, prompt: list[int], sampling: Sampling, emit, cancelled: threading.Event) -> None:
        with self._lock:
            if cancelled.is_set():  # its reader left while it queued (Ctrl-C, SIGTERM): no prefill, no tokens
                return
            kwargs = {"max_tokens": sampling.max_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p,
                      "presence_penalty": sampling.presence_penalty, "stop": sampling.stop or None, "stream": True}  # fmt: skip
            if sampling.seed is not None:
                kwargs["seed"] = sampling.seed
            for chunk in self.llm.create_completion(prompt, **kwargs):
                if cancelled.is_set():  # the reader left (stop button, cut at the student's line)
                    break
                self.completion_tokens += 1
                emit(chunk["choices"][0]["text"])

    async def stream(self, messages: list[dict], sampling: Sampling) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()
        prompt = self.tokens(messages)
        cancelled = threading.Event()

        def work():
            try:
                emit = lambda text: loop.call_soon_threadsafe(queue.put_nowait, text)  # noqa: E731
                self._generate(prompt, sampling, emit, cancelled)
                loop.call_soon_threadsafe(queue.put_nowait, done)
            except Exception as e:  # handed to the waiting coroutine
                loop.call_soon_threadsafe(queue.put_nowait, e)

        loop.run_in_executor(None, work)
        try:
            while True:
                item = await queue.get()
                if item is done:
                    break
                if isinstance(item, Exception):
                    raise BackendError(f"llama.cpp generation failed: {item}")
                if item:
                    yield item
        finally:
            cancelled.set()

    async def complete(self, messages: list[dict], sampling: Sampling) -> str:
        return "".join([piece async for piece in self.stream(messages, sampling)])

    async def complete_n(self, messages: list[dict], sampling: Sampling, n: int) -> list[str]:
        """`n` candidates decoded together, one token of each per step (llamacpp_candidates.py);
        candidate i with seed + i when a seed is set."""
        if n == 1:
            return [await self.complete(messages, sampling)]
        prompt = self.tokens(messages)
        cancelled = threading.Event()

        def work() -> list[str]:
            with self._lock:
                if cancelled.is_set():
                    return []
                replies, generated = self._candidate_context(n, sampling.max_tokens).generate(prompt, sampling, cancelled)
                self.completion_tokens += generated
                return replies

        try:
            return await asyncio.get_running_loop().run_in_executor(None, work)
        except BackendError:
            raise
        except Exception as e:
            raise BackendError(f"llama.cpp generation failed: {e}") from e
        finally:
            cancelled.set()  # the caller left (Ctrl-C): the worker stops at its next token

    def _candidate_context(self, n: int, max_tokens: int):
        """The context for `n` candidates of `max_tokens` beside a prompt of up to n_ctx - max_tokens
        tokens: its cells are shared, so n_ctx + (n - 1) x max_tokens in all; made again when a
        call needs more."""
        from tutorkit.backends.llamacpp_candidates import CandidateContext

        size = self.n_ctx + (n - 1) * max_tokens
        if self._candidates is None or self._candidates.n != n or self._candidates.n_ctx < size:
            if self._candidates is not None:
                self._candidates.close()
            self._candidates = CandidateContext(self.llm, n, size, self.prompt_threads, self.lora_path)
        return self._candidates

    async def aclose(self) -> None:
        with self._lock:  # a worker still decoding (its caller left) finishes its token first
            if self._candidates is not None:
                self._candidates.close()


@functools.cache
def state_cache_class() -> type:
    """Made on first use: llama-cpp-python is optional (the backend says how to install it)."""
    import numpy as np
    from llama_cpp import LlamaRAMCache

    class StateCache(LlamaRAMCache):
        """LlamaRAMCache without the dead weight in each state: llama-cpp-python copies its score
        array (n_batch x vocabulary float32: 96 MB for the embedded model, beside 26 MB of KV for
        1200 tokens) into every state, and its own count leaves that out (a "1 GB" cache held
        ~4.7 GB). Without logits_all those rows are never written or read (sampling runs in
        llama.cpp's sampler; only logprobs and stopping_criteria read scores, and this backend
        uses neither), so a state keeps one zero row, which `load_state` broadcasts back. A 4 GB
        cache then holds ~150 states of 1200 tokens instead of ~33: enough for 16 conversations'
        student and Tim prompts (measured: docs/performance.md; Tim's candidates, decoded together,
        leave one state: their prompt's)."""

        def __setitem__(self, key, state) -> None:
            state.scores = np.zeros((1, state.scores.shape[1]), dtype=state.scores.dtype)
            super().__setitem__(key, state)

        @property
        def cache_size(self) -> int:
            return sum(state.llama_state_size + state.scores.nbytes for state in self.cache_state.values())

    return StateCache
