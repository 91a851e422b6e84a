"""One student turn, the same for the browser and the API: limits, transcripts, safeguarding, model.

Order of a turn (each step can end it):
1. the message is cleaned of control characters and checked against the length limit and the
   student's rate limit (refused with a message the student can act on);
2. it is written to the transcripts, with its safeguarding flags, before any reply exists;
3. safeguarding may decide the reply (a disclosure's fixed response, or silence after repeated
   abuse) without the model;
4. otherwise the reply streams from the chat backend, once a generation slot is free (refused
   as busy when the waiting line is full), cut where the model starts the student's next line;
5. the final reply is written to the transcripts.
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from serve.safeguarding import Safeguard
from serve.transcripts import Transcripts
from tim.backends import ChatBackend, Sampling
from tim.conversation import clean_reply, starts_other_speaker

QUIET = "*(Tim stays quiet.)*"


@dataclass(frozen=True)
class Limits:
    max_message_chars: int = 2000  # longer messages are refused, not cut: nothing silently lost
    messages_per_minute: int = 12  # per student, across all their chats
    max_concurrent: int = 32  # replies generated at once (vLLM batches these together)
    max_queue: int = 64  # turns waiting for a slot; beyond it, "Tim is busy"


class Refused(Exception):
    """A turn refused by a limit; the text is shown to the student, `status` is the HTTP code."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def clean_input(text: str) -> str:
    """Drop control and format characters (NUL, escape sequences, bidi overrides) except newline
    and tab; normalize to NFC so look-alike spellings reach safeguarding as one string."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n"))
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf", "Cs")).strip()


def text_of(content) -> str:
    """Message content as text: a string, or a list of parts of which the text ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def build_messages(system_prompt: str, history: list[dict], message: str, max_history: int) -> list[dict]:
    """Persona system prompt, the last turns (a silent reply stays an empty turn), the message."""
    turns = [
        {"role": m["role"], "content": "" if text_of(m.get("content")) == QUIET else text_of(m.get("content"))}
        for m in history
        if m.get("role") in ("user", "assistant")
    ]
    turns = turns[-max_history:] if max_history else []
    return [{"role": "system", "content": system_prompt}, *turns, {"role": "user", "content": message}]


def fixed_reply(safeguard: Safeguard, history: list[dict], message: str) -> str | None:
    """The reply safeguarding decides, whatever the model would say: silence once the chat has
    had enough abuse, the configured response to a disclosure; None lets the model answer."""
    earlier = [text_of(m.get("content")) for m in history if m.get("role") == "user"]
    if safeguard.silenced([*earlier, message]):
        return QUIET
    return safeguard.assess(message).response


class Tutor:
    def __init__(
        self,
        backend: ChatBackend,
        safeguard: Safeguard,
        transcripts: Transcripts,
        system_prompt: str,
        sampling: Sampling,
        limits: Limits,
        max_history_messages: int,
    ):
        self.backend = backend
        self.safeguard = safeguard
        self.transcripts = transcripts
        self.system_prompt = system_prompt
        self.sampling = sampling
        self.limits = limits
        self.max_history_messages = max_history_messages
        self._recent: dict[str, deque[float]] = defaultdict(deque)  # student -> message times (monotonic s)
        self._slots = asyncio.Semaphore(limits.max_concurrent)
        self._waiting = 0

    def _check(self, student: str, message: str) -> None:
        if not message:
            raise Refused("Type a message for Tim first.", 400)
        if len(message) > self.limits.max_message_chars:
            raise Refused(
                f"That message is too long for Tim ({len(message):,} characters; the limit is "
                f"{self.limits.max_message_chars:,}). Try sending it in parts.", 413
            )  # fmt: skip
        now = time.monotonic()
        recent = self._recent[student]
        while recent and now - recent[0] > 60.0:
            recent.popleft()
        if len(recent) >= self.limits.messages_per_minute:
            wait = int(60.0 - (now - recent[0])) + 1
            raise Refused(f"You're sending messages very fast. Take a breath and try again in {wait} seconds.", 429)
        recent.append(now)

    async def respond(
        self, student: str, chat_id: int, history: list[dict], message: str, max_tokens: int | None = None
    ) -> AsyncIterator[str]:
        """Yield the reply so far (whole text each time; QUIET for silence). Raises Refused."""
        message = clean_input(message)
        self._check(student, message)
        # In a worker thread: each commit waits for the disk (fsync, ~2 ms here), and the event
        # loop is streaming other students' replies meanwhile.
        flags = self.safeguard.assess(message).flags
        await asyncio.to_thread(self.transcripts.add_message, chat_id, "user", message, flags)
        fixed = fixed_reply(self.safeguard, history, message)
        if fixed is not None:
            if fixed == QUIET:
                await asyncio.to_thread(self.transcripts.flag_chat, chat_id)
            await asyncio.to_thread(self.transcripts.add_message, chat_id, "assistant", "" if fixed == QUIET else fixed)
            yield fixed
            return
        if self._slots.locked() and self._waiting >= self.limits.max_queue:
            raise Refused("Tim is helping a lot of students right now. Please try again in a minute.", 503)
        sampling = self.sampling
        if max_tokens is not None and max_tokens < sampling.max_tokens:
            sampling = Sampling(**{**sampling.__dict__, "max_tokens": max_tokens})
        messages = build_messages(self.system_prompt, history, message, self.max_history_messages)
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        raw = ""
        try:
            async for piece in self.backend.stream(messages, sampling):
                raw += piece
                if starts_other_speaker(raw):
                    break  # the model began writing the student's line: Tim's turn is over
                yield clean_reply(raw)
        finally:
            self._slots.release()
            # Written even when the student left mid-reply: what was generated is what was shown.
            self.transcripts.add_message(chat_id, "assistant", clean_reply(raw))
        final = clean_reply(raw)
        yield final if final else QUIET
