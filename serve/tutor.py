"""One student turn, the same for the browser and the API: safeguarding, transcripts, limits, model.

Order of a turn (each step can end it); the turn comes out as typed events (tutorkit/turns.py)
that each door renders in its own way:
1. the message is cleaned of control characters (an empty one is refused: nothing was said);
2. safeguarding decides on it before any limit, counting abuse from the stored flags (this chat,
   and the student's other chats within `window_hours`), never from history a client sends;
3. it is written to the transcripts with its flags before any reply exists, refused or not; an
   urgent or concern message goes to the staff queue with it, and an urgent one is alerted;
4. an urgent sign gets safeguarding's fixed reply (SafeguardingReply) whatever limit the message
   hit; a message that could not be stored is refused (nothing is acknowledged unstored);
   repeated abuse gets Silence; a limit (too long, too fast, too busy) gets a Refusal, stored as
   Tim's "refused" turn with what the student was told;
5. otherwise the reply streams from the chat backend as Deltas once a generation slot is free,
   followed at a concern by safeguarding's check-in; an empty reply is the model's Silence, a
   backend that fails ends the turn with Failure;
6. the reply is written to the transcripts with how it ended: complete, silent, stopped (the
   student left mid-reply) or failed.

Transcript reads and writes run on the transcripts' own writer thread, so the fixed reply and
the stored message never wait behind generation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
import unicodedata
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable

from serve.alerts import Alerter
from serve.config import Limits
from serve.transcripts import Transcripts, TranscriptsError
from tutorkit.backends import ChatBackend, Sampling
from tutorkit.chat_template import TokenCounter, defuse_control_text
from tutorkit.persona import Persona
from tutorkit.safeguarding import ABUSIVE, Decision, Safeguard
from tutorkit.turns import Delta, Event, Failure, Finished, Refusal, SafeguardingReply, Silence, model_reply, safeguarding_event


def clean_input(text: str) -> str:
    """Drop control and format characters (NUL, escape sequences, bidi overrides) except newline
    and tab; normalize to NFC so look-alike spellings reach safeguarding as one string."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n"))
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf", "Cs")).strip()


def build_messages(system_prompt: str, history: list[dict], message: str, max_history: int,
                   fits: Callable[[list[dict]], bool] | None = None) -> list[dict] | None:  # fmt: skip
    """Persona system prompt, the last turns of the chat (a silent reply is an empty turn), the
    message. Text from the chat has control-token look-alikes defused (it comes from clients).
    `fits`: the oldest turns go until the prompt fits the model's context (the persona and the
    message always stay); None if even those do not fit."""
    turns = [{"role": m["role"], "content": defuse_control_text(m["content"])} for m in history
             if m["role"] in ("user", "assistant")]  # fmt: skip
    turns = turns[-max_history:] if max_history else []
    system, last = {"role": "system", "content": system_prompt}, {"role": "user", "content": defuse_control_text(message)}
    while fits is not None and not fits([system, *turns, last]):
        if not turns:
            return None
        turns = turns[2:] if len(turns) > 1 and turns[0]["role"] == "user" else turns[1:]  # a whole exchange at a time
    return [system, *turns, last]


class Tutor:
    def __init__(self, backend: ChatBackend, safeguard: Safeguard, transcripts: Transcripts, persona: Persona,
                 sampling: Sampling, limits: Limits, max_history_messages: int, tokens: TokenCounter | None = None,
                 context_tokens: int = 2048, alerter: Alerter | None = None):  # fmt: skip
        """`tokens` counts as the served model does (history trimmed to `context_tokens`, prompt
        + reply; the API's `usage`); None where the served model's tokenizer is not at hand.
        `alerter` sends staff alerts for urgent messages (serve/alerts.py); None = the queue only."""
        self.alerter = alerter
        self.backend = backend
        self.safeguard = safeguard
        self.transcripts = transcripts
        self.persona = persona
        self.system_prompt = persona.render_system_prompt()
        self.sampling = sampling
        self.limits = limits
        self.max_history_messages = max_history_messages
        self.tokens, self.context_tokens = tokens, context_tokens
        self._recent: dict[str, deque[float]] = defaultdict(deque)  # student -> message times (monotonic s)
        self._slots = asyncio.Semaphore(limits.max_concurrent)
        self._waiting = 0

    async def _store_reply(self, chat_id: int, text: str, ending: str) -> None:
        try:
            await self.transcripts.run(self.transcripts.add_message, chat_id, "assistant", text, (), ending)
        except TranscriptsError as e:  # the student's message is stored; the log says what is missing
            print(f"tim serve: chat {chat_id}: reply NOT STORED: {e}", file=sys.stderr, flush=True)

    def _check(self, student: str, message: str) -> Refusal | None:
        """The limit this message breaks, if any (too long, too fast)."""
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
            return Refusal(f"You're sending messages very fast. Take a breath and try again in {wait} seconds.", 429,
                           retry_after_s=wait)  # fmt: skip
        recent.append(now)
        return None

    async def chat_for(self, student: str, chat_id: int | None) -> int | None:
        """The chat a turn goes to: `chat_id` if it is the student's and still stored, else a new
        one; None if none can be started (the database cannot be written: `respond` then refuses
        the message, but still answers a disclosure)."""
        try:
            return await self.transcripts.run(self.transcripts.chat_for, student, chat_id)
        except TranscriptsError as e:
            print(f"tim serve: {student}: no chat could be started: {e}", file=sys.stderr, flush=True)
            return None

    async def _decide(self, student: str, chat_id: int, message: str) -> tuple[list[dict], Decision]:
        stored = await self.transcripts.run(self.transcripts.history, chat_id)
        since = time.time() - self.safeguard.config.abuse.window_hours * 3600
        recent = await self.transcripts.run(self.transcripts.abusive_count, student, since)
        in_chat = sum(ABUSIVE in m["flags"] for m in stored if m["role"] == "user")
        earlier = [m["content"] for m in stored if m["role"] == "user"]
        # Off the event loop: the guard is a model (milliseconds of CPU per message).
        return stored, await asyncio.to_thread(self.safeguard.decide, earlier, message, max(in_chat, recent))

    async def respond(self, student: str, chat_id: int | None, message: str, history: list[dict] | None = None,
                      max_tokens: int | None = None) -> AsyncIterator[Event]:  # fmt: skip
        """The turn's events in chat `chat_id` (from `chat_for`). `history` is what the model sees
        before the message: the chat's stored messages unless the door passes its own (the API's
        client-held history)."""
        message = clean_input(message)
        if not message:
            yield Refusal(f"Type a message for {self.persona.name} first.", 400)
            return
        store = self.transcripts
        try:
            if chat_id is None:
                raise TranscriptsError("no chat to store the message in (chat_for could not start one)")
            stored, decision = await self._decide(student, chat_id, message)
            await store.run(store.add_message, chat_id, "user", message, decision.flags, "complete", {
                "tier": decision.tier, "layer": decision.layer, "scores": {k: round(v, 4) for k, v in decision.scores.items()}})
            saved = True
            if decision.tier == "urgent" and self.alerter is not None:
                self.alerter.wake()  # its alert was stored with the message: send it now
        except TranscriptsError as e:
            # Safeguarding still answers (from this message alone); nothing else is acknowledged.
            print(f"tim serve: chat {chat_id}: NOT STORED: {e}", file=sys.stderr, flush=True)
            stored, decision, saved = [], await asyncio.to_thread(self.safeguard.decide, [], message), False
            if decision.tier == "urgent" and self.alerter is not None:
                self.alerter.unstored(student, decision.tier, [f for f in decision.flags if f != ABUSIVE])
        refusal = self._check(student, message)
        fixed = safeguarding_event(decision)
        if isinstance(fixed, SafeguardingReply):
            if saved:
                await self._store_reply(chat_id, fixed.text, "complete")
            yield fixed
            return
        if not saved:
            yield Refusal(f"{self.persona.name} can't save messages right now, so this one was not sent. "
                          "Please tell your teacher.", 503)  # fmt: skip
            return
        if isinstance(fixed, Silence):
            await self._store_reply(chat_id, "", "silent")
            yield fixed
            return
        if refusal is None and self._slots.locked() and self._waiting >= self.limits.max_queue:
            refusal = Refusal(f"{self.persona.name} is helping a lot of students right now. Please try again in a minute.",
                              503, retry_after_s=30)  # fmt: skip
        if refusal is not None:
            await self._store_reply(chat_id, refusal.message, "refused")
            yield refusal
            return
        sampling = self.sampling
        if max_tokens is not None and max_tokens < sampling.max_tokens:
            sampling = dataclasses.replace(sampling, max_tokens=max_tokens)
        fits = None
        if self.tokens is not None:
            fits = lambda m: self.tokens.prompt(m) + sampling.max_tokens <= self.context_tokens  # noqa: E731
        messages = build_messages(self.system_prompt, stored if history is None else history, message,
                                  self.max_history_messages, fits)  # fmt: skip
        if messages is None:
            refusal = Refusal(f"That message is too long for {self.persona.name} to read with the rest of the chat. "
                              "Try sending it in parts.", 413)  # fmt: skip
            await self._store_reply(chat_id, refusal.message, "refused")
            yield refusal
            return
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
            if decision.check_in:  # a concern: Tim's answer, then a gentle check-in
                check_in = Delta(f"\n\n{decision.check_in}" if text else decision.check_in)
                text += check_in.text
                yield check_in
            ending = "complete" if text else "silent"
            if text and self.tokens is not None:
                used = self.tokens.text(text)
                yield Finished("length" if used >= sampling.max_tokens else "stop", self.tokens.prompt(messages), used)
        except Exception as e:  # BackendError, or a bug: either way the turn failed, and says so
            # The cause goes to the server's log, not to the student (it can name internal hosts).
            print(f"tim serve: chat {chat_id}: no reply: {e!r}", file=sys.stderr, flush=True)
            ending, failure = "failed", Failure(f"{self.persona.name} can't answer right now. Please try again in a moment.")
        finally:
            self._slots.release()
            # Written even when the student left mid-reply (ending "stopped"): what was shown
            # is what is stored. Queued here (a closing generator cannot wait), awaited below.
            written = self.transcripts.submit(self.transcripts.add_message, chat_id, "assistant", text, (), ending)
        try:  # the reply is stored before the turn's last event goes out
            await asyncio.wrap_future(written)
        except TranscriptsError as e:
            print(f"tim serve: chat {chat_id}: reply NOT STORED: {e}", file=sys.stderr, flush=True)
        if failure is not None:
            yield failure
        elif not text:
            yield Silence()
