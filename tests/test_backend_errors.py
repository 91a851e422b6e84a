"""The OpenAI-compatible backend's errors say what a user can act on: a server that accepted the
request and is slow to answer (a slow CPU, a busy neighbour) is "up but too slow", not
"unreachable" (seen: synthesis on an AVX2 machine died with "unreachable: ReadTimeout('')" while
vLLM was up and only slow). A real HTTP server on 127.0.0.1 that takes its time stands in for a
slow vLLM."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import free_port
from tutorkit.backends import BackendError, Sampling
from tutorkit.backends.openai_http import OpenAIChatBackend


class SlowHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(2.0)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _ask(url: str, stream: bool) -> None:
    backend = OpenAIChatBackend([url], "m", timeout_s=0.5, max_retries=1)

    async def go():
        try:
            if stream:
                async for _ in backend.stream([{"role": "user", "content": "hi"}], Sampling()):
                    pass
            else:
                await backend.complete([{"role": "user", "content": "hi"}], Sampling())
        finally:
            await backend.aclose()

    asyncio.run(go())


@pytest.mark.parametrize("stream", [False, True])
def test_a_slow_server_is_called_slow(slow_server, stream):
    with pytest.raises(BackendError, match=r"is up but too slow: no reply within 0.5 s \(2 tries\).*request_timeout_s"):
        _ask(slow_server, stream)


def test_a_closed_port_is_unreachable():
    with pytest.raises(BackendError, match=r"unreachable: ConnectError"):
        _ask(f"http://127.0.0.1:{free_port()}", stream=False)
