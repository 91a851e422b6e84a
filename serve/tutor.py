"""One student turn, the same for the browser and the API: limits, transcripts, safeguarding, model.

Order of a turn (each step can end it); the turn comes out as typed events (tutorkit/turns.py)
that each door renders in its own way:
1. the message is cleaned of control characters and checked against the length limit and the
   student's rate limit (Refusal, with a message the student can act on);
2. safeguarding decides on it, counting the abuse in this chat's stored messages (not in history
   a client sends), and it is written to the transcripts with its flags before any reply exists;
3. safeguarding may end the turn without the model: Silence (repeated abuse) or a
   SafeguardingReply to a disclosure;
4. otherwise the reply streams from the chat backend as Deltas once a generation slot is free
   (Refusal as busy when the waiting line is full); an empty reply is the model's Silence, a
   backend that fails ends the turn with Failure;
5. the reply is written to the transcripts with how it ended: complete, silent, stopped (the
   student left mid-reply) or failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
import unicodedata
from collections import defaultdict, deque
from collections.abc import AsyncIterator

from serve.config import Limits
from serve.transcripts import Transcripts
from tutorkit.backends import ChatBackend, Sampling
from tutorkit.persona import Persona
from tutorkit.safeguarding import Safeguard
from tutorkit.turns import Event, Failure, Refusal, SafeguardingReply, Silence, model_reply, safeguarding_event


def clean_input(text: str) -> str:
    """Drop control and format characters (NUL, escape sequences, bidi overrides) except newline
    and tab; normalize to NFC so look-alike spellings reach safeguarding as one string."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n"))
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf", "Cs")).strip()


def build_messages(system_prompt: str, history: list[dict], message: str, max_history: int) -> list[dict]:
    """Persona system prompt, the last turns of the chat (a silent reply is an empty turn), the message."""
    turns = [{"role": m["role"], "content": m["content"]} for m in history if m["role"] in ("user", "assistant")]
    turns = turns[-max_history:] if max_history else []
    return [{"role": "system", "content": system_prompt}, *turns, {"role": "user", "content": message}]


class Tutor:
    def __init__(self, backend: ChatBackend, safeguard: Safeguard, transcripts: Transcripts, persona: Persona,
                 sampling: Sampling, limits: Limits, max_history_messages: int):  # fmt: skip
        self.backend = backend
        self.safeguard = safeguard
        self.transcripts = transcripts
        self.persona = persona
        self.system_prompt = persona.render_system_prompt()
        self.sampling = sampling
        self.limits = limits
        self.max_history_messages = max_history_messages
        self._recent: dict[str, deque[float]] = defaultdict(deque)  # student -> message times (monotonic s)
        self._slots = asyncio.Semaphore(limits.max_concurrent)
        self._waiting = 0

    def _check(self, student: str, message: str) -> Refusal | None:
        if not message:
            return Refusal(f"Type a message for {self.persona.name} first.", 400)
        if len(message) > self.limits.max_message_chars:
            return Refusal(
                f"That message is too long for {self.persona.name} ({len(message):,} characters; the limit is "
                f"{self.limits.max_message_chars:,}). Try sending it in parts.", 413
            )  # fmt: skip
        now = time.monotonic()
        recent = self._recent[student]
        while recent and now - recent[0] > 60.0:
            recent.popleft()
        if len(recent) >= self.limits.messages_per_minute:
            wait = int(60.0 - (now - recent[0])) + 1
            return Refusal(f"You're sending messages very fast. Take a breath and try again in {wait} seconds.", 429)
        recent.append(now)
        return None

    async def respond(self, student: str, chat_id: int, message: str, history: list[dict] | None = None,
                      max_tokens: int | None = None) -> AsyncIterator[Event]:  # fmt: skip
        """The turn's events. `history` is what the model sees before the message: the chat's
        stored messages unless the door passes its own (the API's client-held history)."""
        message = clean_input(message)
        refusal = self._check(student, message)
        if refusal is not None:
            yield refusal
            return
        # Database calls run in a worker thread: each commit waits for the disk (fsync, ~2 ms
        # here), and the event loop is streaming other students' replies meanwhile.
        stored = await asyncio.to_thread(self.transcripts.history, chat_id)
        decision = self.safeguard.decide([m["content"] for m in stored if m["role"] == "user"], message)
        await asyncio.to_thread(self.transcripts.add_message, chat_id, "user", message, decision.flags)
        fixed = safeguarding_event(decision)
        if isinstance(fixed, Silence):
            await asyncio.to_thread(self.transcripts.flag_chat, chat_id)
            await asyncio.to_thread(self.transcripts.add_message, chat_id, "assistant", "", (), "silent")
            yield fixed
            return
        if isinstance(fixed, SafeguardingReply):
            await asyncio.to_thread(self.transcripts.add_message, chat_id, "assistant", fixed.text)
            yield fixed
            return
        if self._slots.locked() and self._waiting >= self.limits.max_queue:
            yield Refusal(f"{self.persona.name} is helping a lot of students right now. Please try again in a minute.", 503)
            return
        sampling = self.sampling
        if max_tokens is not None and max_tokens < sampling.max_tokens:
            sampling = dataclasses.replace(sampling, max_tokens=max_tokens)
        messages = build_messages(self.system_prompt, stored if history is None else history, message,
                                  self.max_history_messages)  # fmt: skip
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        text, ending, failure = "", "stopped", None
        try:
            async for delta in model_reply(self.backend, messages, sampling, self.persona.name):
                text += delta.text
                yield delta
            ending = "complete" if text else "silent"
        except Exception as e:  # BackendError, or a bug: either way the turn failed, and says so
            # The cause goes to the server's log, not to the student (it can name internal hosts).
            print(f"tim serve: chat {chat_id}: no reply: {e!r}", file=sys.stderr, flush=True)
            ending, failure = "failed", Failure(f"{self.persona.name} can't answer right now. Please try again in a moment.")
        finally:
            self._slots.release()
            # Written even when the student left mid-reply (ending "stopped"): what was shown
            # is what is stored. Not in a thread: a closing generator cannot wait for one.
            self.transcripts.add_message(chat_id, "assistant", text, (), ending)
        if failure is not None:
            yield failure
        elif not text:
            yield Silence()
