"""Any OpenAI-compatible chat server over HTTP: the project's own vLLM server, llama.cpp's
server, or one a school already runs.

Plain and streamed requests share one way of sending: bounded concurrency (enough requests in
flight to fill vLLM's continuous batches), a timeout per request (per piece, when streamed),
retries with exponential backoff on connection errors and on answers that mean "overloaded or
restarting", and several base URLs used round-robin. A streamed reply is retried only before
its first piece; a failure after that raises BackendError, since text already handed on cannot
be taken back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

from tutorkit.backends import BackendError, Sampling

# Server answers worth retrying: overloaded or restarting.
RETRY_STATUS = {408, 429, 500, 502, 503, 504}


def transport_problem(url: str, error: httpx.TransportError, timeout_s: float, tries: int) -> str:
    """What went wrong, in words a user can act on: a server that accepted the connection but
    answered too late is up and slow (a slow CPU, a busy neighbour), not unreachable."""
    if isinstance(error, (httpx.ReadTimeout, httpx.WriteTimeout)):
        return (f"chat server {url} is up but too slow: no reply within {timeout_s:g} s ({tries} "
                f"{'try' if tries == 1 else 'tries'}); this machine may be slow or busy - raise "
                "request_timeout_s or lower max_concurrency")  # fmt: skip
    return f"chat server {url} unreachable: {error!r}"


class OpenAIChatBackend:
    def __init__(self, base_urls: list[str], model: str, api_key: str | None = None, max_concurrency: int = 32,
                 timeout_s: float = 120.0, max_retries: int = 4,
                 revive: Callable[[], Awaitable[bool]] | None = None):  # fmt: skip
        """`revive`: called when the server cannot be reached after the retries; True if it was
        brought back (a restarted vLLM), and the request is tried once more."""
        if not base_urls:
            raise BackendError("the openai backend needs at least one base_url")
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self._next_url = itertools.cycle(self.base_urls)
        self.model = model
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self._revive = revive
        self.completion_tokens = 0  # generated tokens of plain requests, as the server reports them
        self._limit = asyncio.Semaphore(max_concurrency)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            headers=headers,
            limits=httpx.Limits(max_connections=max_concurrency + 4, max_keepalive_connections=max_concurrency),
        )

    def _body(self, messages: list[dict], sampling: Sampling, stream: bool, n: int = 1) -> dict:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "presence_penalty": sampling.presence_penalty,
            "stream": stream,
        }
        if n > 1:
            body["n"] = n
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = sampling.stop
        return body

    async def _send(self, body: dict, stream: bool) -> tuple[str, httpx.Response]:
        """(url, a 200 response; streamed ones not yet read), after retries; BackendError if none came."""
        try:
            return await self._send_with_retries(body, stream)
        except BackendError as e:
            if e.status is not None or self._revive is None or not await self._revive():
                raise
        return await self._send_with_retries(body, stream)

    async def _send_with_retries(self, body: dict, stream: bool) -> tuple[str, httpx.Response]:
        for attempt in range(self.max_retries + 1):
            url = next(self._next_url)
            request = self._client.build_request("POST", f"{url}/v1/chat/completions", json=body)
            try:
                response = await self._client.send(request, stream=stream)
            except httpx.TransportError as e:  # connection refused or reset, timeouts
                if attempt == self.max_retries:
                    raise BackendError(transport_problem(url, e, self.timeout_s, attempt + 1)) from None
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt) * (0.5 + random.random()))
                continue
            if response.status_code == 200:
                return url, response
            text = (await response.aread()).decode(errors="replace")[:300]
            await response.aclose()
            if response.status_code in RETRY_STATUS and attempt < self.max_retries:
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt) * (0.5 + random.random()))
                continue
            raise BackendError(f"chat server {url} answered {response.status_code}: {text}", response.status_code)
        raise AssertionError("unreachable")

    async def complete(self, messages: list[dict], sampling: Sampling) -> str:
        return (await self.complete_n(messages, sampling, 1))[0]

    async def complete_n(self, messages: list[dict], sampling: Sampling, n: int) -> list[str]:
        async with self._limit:
            url, response = await self._send(self._body(messages, sampling, stream=False, n=n), stream=False)
        try:
            data = response.json()
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            contents = [c["message"].get("content") or "" for c in choices]
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise BackendError(f"chat server {url} sent a reply that is not a chat completion: {response.text[:300]}") from None
        if len(contents) != n:
            raise BackendError(f"chat server {url} sent {len(contents)} choices, {n} were asked for")
        self.completion_tokens += (data.get("usage") or {}).get("completion_tokens", 0)
        return contents

    async def stream(self, messages: list[dict], sampling: Sampling) -> AsyncIterator[str]:
        async with self._limit:
            url, response = await self._send(self._body(messages, sampling, stream=True), stream=True)
            finished = False
            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        finished = True
                        break
                    choices = json.loads(data).get("choices")
                    delta = choices[0].get("delta", {}).get("content") if choices else None
                    if delta:
                        yield delta
            except httpx.TimeoutException as e:
                raise BackendError(transport_problem(url, e, self.timeout_s, 1)) from None
            except (httpx.HTTPError, ValueError, KeyError, IndexError) as e:
                raise BackendError(f"chat server {url}: the streamed reply broke off: {e!r}") from None
            finally:
                await response.aclose()
            if not finished:
                raise BackendError(f"chat server {url}: the streamed reply ended without [DONE]")

    async def aclose(self) -> None:
        await self._client.aclose()
