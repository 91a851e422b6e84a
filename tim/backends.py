"""The one chat interface that synthesis and serving both use, and its implementations.

- `OpenAIChatBackend`: any OpenAI-compatible server (the project's own vLLM server, a school's
  existing one, or llama.cpp's). Async, bounded concurrency (enough requests in flight to fill
  vLLM's continuous batches), retries with backoff, several base URLs used round-robin.
- `TransformersChatBackend`: the model in this process; the fallback where vLLM is not installed.
- `LlamaCppChatBackend`: a GGUF model in this process through llama.cpp (llama-cpp-python): the
  light option for one class or a laptop.

Both take OpenAI-style `messages` and a `Sampling`, and return or stream the reply text.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from tim import TimError


@dataclass
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 256
    presence_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


class ChatBackend(Protocol):
    async def complete(self, messages: list[dict], sampling: Sampling) -> str: ...

    def stream(self, messages: list[dict], sampling: Sampling) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...


# Server answers worth retrying: overloaded or restarting.
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class OpenAIChatBackend:
    def __init__(
        self,
        base_urls: list[str],
        model: str,
        api_key: str | None = None,
        max_concurrency: int = 32,
        timeout_s: float = 120.0,
        max_retries: int = 4,
    ):
        if not base_urls:
            raise TimError("the openai backend needs at least one base_url")
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self._next_url = itertools.cycle(self.base_urls)
        self.model = model
        self.max_retries = max_retries
        self.completion_tokens = 0  # generated tokens, as the server reports them
        self._limit = asyncio.Semaphore(max_concurrency)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            headers=headers,
            limits=httpx.Limits(max_connections=max_concurrency + 4, max_keepalive_connections=max_concurrency),
        )

    def _body(self, messages: list[dict], sampling: Sampling, stream: bool) -> dict:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "presence_penalty": sampling.presence_penalty,
            "stream": stream,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = sampling.stop
        return body

    async def _backoff(self, attempt: int) -> None:
        await asyncio.sleep(min(30.0, 0.5 * 2**attempt) * (0.5 + random.random()))

    async def complete(self, messages: list[dict], sampling: Sampling) -> str:
        body = self._body(messages, sampling, stream=False)
        async with self._limit:
            for attempt in range(self.max_retries + 1):
                url = next(self._next_url)
                try:
                    r = await self._client.post(f"{url}/v1/chat/completions", json=body)
                except (httpx.TransportError, httpx.TimeoutException) as e:
                    if attempt == self.max_retries:
                        raise TimError(f"chat server {url} unreachable: {e!r}") from None
                    await self._backoff(attempt)
                    continue
                if r.status_code in _RETRY_STATUS and attempt < self.max_retries:
                    await self._backoff(attempt)
                    continue
                if r.status_code != 200:
                    raise TimError(f"chat server {url} answered {r.status_code}: {r.text[:300]}")
                data = r.json()
                self.completion_tokens += (data.get("usage") or {}).get("completion_tokens", 0)
                return data["choices"][0]["message"].get("content") or ""
        raise AssertionError("unreachable")

    async def stream(self, messages: list[dict], sampling: Sampling) -> AsyncIterator[str]:
        body = self._body(messages, sampling, stream=True)
        url = next(self._next_url)
        async with self._limit, self._client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                raise TimError(f"chat server {url} answered {r.status_code}: {r.text[:300]}")
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                delta = json.loads(data)["choices"][0].get("delta", {}).get("content")
                if delta:
                    yield delta

    async def aclose(self) -> None:
        await self._client.aclose()


class TransformersChatBackend:
    """The model in this process, where vLLM cannot run.

    `complete` requests are batched: whatever arrives while the model is busy is generated
    together next (up to `max_batch_size`, left-padded), which is what makes synthesis with many
    conversations in flight worth doing in process. `stream` (serving) generates one reply with a
    streamer. Generation runs in worker threads so the event loop stays responsive. The tokenizer,
    and so the chat template, comes from the adapter directory when there is one: the template
    saved at training time."""

    def __init__(
        self,
        model_dir: str | Path,
        adapter_dir: str | Path | None = None,
        device: str | None = None,
        max_batch_size: int = 8,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir or model_dir))
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
        if adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_dir))
        self.model = model.to(self.device).eval()
        self.max_batch_size = max_batch_size
        self.completion_tokens = 0
        self.generate_calls = 0  # batches run; fewer than requests when batching works
        self._model_lock = threading.Lock()  # one generate() at a time on this model
        self._queue_cv = threading.Condition()
        self._pending: list[tuple[list[dict], Sampling, asyncio.Future, asyncio.AbstractEventLoop]] = []
        self._worker: threading.Thread | None = None

    def _generate_kwargs(self, sampling: Sampling, max_new_tokens: int) -> dict:
        kwargs = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
        }
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False)
        return kwargs

    def _render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _generate_batch(self, batch) -> list[str]:
        import torch

        prompts = [self._render(messages) for messages, *_ in batch]
        first = batch[0][1]
        self.tokenizer.padding_side = "left"  # generation continues every row from its last token
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        max_new = max(sampling.max_tokens for _, sampling, *_ in batch)
        with self._model_lock, torch.inference_mode():
            if first.seed is not None:
                torch.manual_seed(first.seed)
            out = self.model.generate(**inputs, **self._generate_kwargs(first, max_new))
        self.generate_calls += 1
        texts = []
        for row, (_, sampling, *_) in zip(out[:, inputs["input_ids"].shape[1] :], batch):
            row = row[: sampling.max_tokens]
            ended = (row == self.tokenizer.eos_token_id).nonzero()
            n = int(ended[0]) if len(ended) else len(row)
            self.completion_tokens += n
            texts.append(_cut_at_stop(self.tokenizer.decode(row[:n], skip_special_tokens=True), sampling.stop))
        return texts

    def _work(self) -> None:
        while True:
            with self._queue_cv:
                while not self._pending:
                    self._queue_cv.wait()
                # Requests that share sampling settings can share a generate() call.
                first = self._pending[0][1]
                same = lambda s: (s.temperature, s.top_p) == (first.temperature, first.top_p)  # noqa: E731
                batch = [p for p in self._pending if same(p[1])][: self.max_batch_size]
                for p in batch:
                    self._pending.remove(p)
            try:
                results = self._generate_batch(batch)
            except Exception as e:  # hand the failure to every waiting caller
                for _, _, future, loop in batch:
                    loop.call_soon_threadsafe(_set_exception, future, e)
                continue
            for (_, _, future, loop), text in zip(batch, results):
                loop.call_soon_threadsafe(_set_result, future, text)

    async def complete(self, messages: list[dict], sampling: Sampling) -> str:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._queue_cv:
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, daemon=True, name="tim-generate")
                self._worker.start()
            self._pending.append((messages, sampling, future, loop))
            self._queue_cv.notify()
        return await future

    async def stream(self, messages: list[dict], sampling: Sampling) -> AsyncIterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

        def run():
            with self._model_lock, torch.inference_mode():
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed)
                self.model.generate(**inputs, **self._generate_kwargs(sampling, sampling.max_tokens), streamer=streamer)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        iterator = iter(streamer)
        while True:
            piece = await asyncio.to_thread(next, iterator, None)
            if piece is None:
                break
            if piece:
                yield piece
        thread.join()

    async def aclose(self) -> None:
        return None


class LlamaCppChatBackend:
    """A GGUF model (tim export --gguf) in this process through llama.cpp.

    The prompt is rendered from the chat template saved at training time (tim/chat_template.py,
    identical to transformers' rendering) and tokenized by llama.cpp with special tokens parsed;
    generation ends at the end-of-turn token (the GGUF's EOS). One llama.cpp context serves one
    reply at a time: concurrent chats take turns (a lock), so they cannot corrupt each other's
    state. Generation runs in a worker thread and streams through an asyncio queue."""

    def __init__(self, model_path: str | Path, chat_template: str, lora_path: str | Path | None = None,
                 n_threads: int = 0, n_ctx: int = 2048):  # fmt: skip
        import os

        try:
            from llama_cpp import Llama
        except ImportError:
            raise TimError("llama-cpp-python is not installed: run scripts/setup_env.sh --llamacpp") from None
        self.chat_template = chat_template
        # Default: every core but one. The last core runs Python (the event loop streaming
        # tokens, the web server); measured on 2 cores: 1 thread held 135-139 tokens/s over five
        # runs, 2 threads started at 151 and fell to 71-79 as the threads fought for the cores.
        threads = n_threads or max(1, (os.cpu_count() or 2) - 1)
        self.llm = Llama(model_path=str(model_path), lora_path=str(lora_path) if lora_path else None,
                         n_threads=threads, n_threads_batch=threads, n_ctx=n_ctx, verbose=False)  # fmt: skip
        self.completion_tokens = 0
        self._lock = threading.Lock()

    def render(self, messages: list[dict]) -> str:
        from tim.chat_template import render_chat

        return render_chat(self.chat_template, messages, add_generation_prompt=True)

    def tokens(self, messages: list[dict]) -> list[int]:
        """The prompt's token ids as llama.cpp sees them (special tokens parsed, no BOS added)."""
        return self.llm.tokenize(self.render(messages).encode("utf-8"), add_bos=False, special=True)

    def _generate(self, prompt: list[int], sampling: Sampling, emit, cancelled: threading.Event) -> None:
        with self._lock:
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
                    raise item
                if item:
                    yield item
        finally:
            cancelled.set()

    async def complete(self, messages: list[dict], sampling: Sampling) -> str:
        return "".join([piece async for piece in self.stream(messages, sampling)])

    async def aclose(self) -> None:
        return None


def _set_result(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _cut_at_stop(text: str, stop: list[str]) -> str:
    for s in stop:
        i = text.find(s)
        if i >= 0:
            text = text[:i]
    return text
