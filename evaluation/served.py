"""Served mode of `tim eval`: the probes go through a running `tim serve`'s OpenAI-compatible API,
so what is scored is what a student gets: input cleaning, safeguarding's fixed replies and
silences, the serving backend with its sampling, and the reply cleaning.

Each probe is replayed as a student would type it: its student messages are sent one by one,
each request carrying the chat so far with the server's *own* earlier replies (the probe's
scripted Tim turns are for the in-process mode, where every model must answer the same last
message). So the server continues one stored chat per probe and counts abuse in it as it does for
any student. The last reply is checked. Requests are filed under the key's account like any
student's (use a dedicated account, e.g. `tim users add eval-bot student`), and that account's
messages_per_minute applies: refused requests (429) are retried with backoff until they pass.
"""

from __future__ import annotations

import asyncio

from evaluation.probes import Probe
from tutorkit import TimError
from tutorkit.backends import BackendError, BackendSpec, Sampling, open_backend

# Probes replayed at once. Each one's turns go in order; the account's rate limit, not this,
# usually sets the pace.
CONCURRENT_PROBES = 4
# A refused request (429: the account's per-minute limit) waits and retries: backoff doubles
# from 0.5 s up to 30 s, so 10 retries span about 2.5 minutes, more than the one-minute window.
RETRIES = 10


def served_replies(base_url: str, api_key: str, probes: list[Probe], max_tokens: int) -> list[dict]:
    """For each probe: {"reply": the server's last reply, "chat": every message of the replayed
    chat, "error": why no reply came (then reply is None)}."""
    sampling = Sampling(max_tokens=max_tokens)  # tim serve uses its own sampling; max_tokens caps the reply
    spec = BackendSpec("openai", model="tim", base_url=[base_url], api_key=api_key or None,
                       max_concurrency=CONCURRENT_PROBES, max_retries=RETRIES)  # fmt: skip

    async def replay(backend, probe: Probe) -> dict:
        chat: list[dict] = []
        for role, text in probe.turns:
            if role != "user":
                continue  # the scripted Tim turns: here the server's own replies stand in their place
            chat.append({"role": "user", "content": text})
            try:
                reply = await backend.complete(chat, sampling)
            except BackendError as e:
                if e.status == 401:
                    raise TimError(f"tim serve at {base_url} refused the API key (401); make one with "
                                   "`tim users key NAME` and pass --api_key") from None  # fmt: skip
                return {"reply": None, "chat": chat, "error": str(e)}
            chat.append({"role": "assistant", "content": reply})
        return {"reply": chat[-1]["content"], "chat": chat}

    async def run():
        with open_backend(spec) as backend:
            limit = asyncio.Semaphore(CONCURRENT_PROBES)

            async def one(probe):
                async with limit:
                    return await replay(backend, probe)

            try:
                return await asyncio.gather(*(one(p) for p in probes))
            finally:
                await backend.aclose()

    return list(asyncio.run(run()))
