"""The one chat interface that synthesis and serving both use, and its two implementations.

- `OpenAIChatBackend`: any OpenAI-compatible server (the project's own vLLM server, a school's
  existing one, or llama.cpp's). Async, bounded concurrency (enough requests in flight to fill
  vLLM's continuous batches), retries with backoff, several base URLs used round-robin.
- `TransformersChatBackend`: the model in this process; the fallback where vLLM is not installed.

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
                return r.json()["choices"][0]["message"].get("content") or ""
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
    """The model in this process. One generation at a time (a lock), each in a worker thread so the
    event loop (Gradio, synthesis) stays responsive. The tokenizer, and so the chat template, comes
    from the adapter directory when there is one: the template saved at training time."""

    def __init__(self, model_dir: str | Path, adapter_dir: str | Path | None = None, device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer_dir = adapter_dir or model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
        if adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_dir))
        self.model = model.to(self.device).eval()
        self._lock = threading.Lock()

    def _inputs(self, messages: list[dict]):
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)

    def _generate_kwargs(self, sampling: Sampling) -> dict:
        kwargs = {
            "max_new_tokens": sampling.max_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
        }
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False)
        return kwargs

    def _complete_sync(self, messages: list[dict], sampling: Sampling) -> str:
        import torch

        inputs = self._inputs(messages)
        with self._lock, torch.inference_mode():
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            out = self.model.generate(**inputs, **self._generate_kwargs(sampling))
        text = self.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return _cut_at_stop(text, sampling.stop)

    async def complete(self, messages: list[dict], sampling: Sampling) -> str:
        return await asyncio.to_thread(self._complete_sync, messages, sampling)

    async def stream(self, messages: list[dict], sampling: Sampling) -> AsyncIterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        inputs = self._inputs(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

        def run():
            with self._lock, torch.inference_mode():
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed)
                self.model.generate(**inputs, **self._generate_kwargs(sampling), streamer=streamer)

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


def _cut_at_stop(text: str, stop: list[str]) -> str:
    for s in stop:
        i = text.find(s)
        if i >= 0:
            text = text[:i]
    return text
