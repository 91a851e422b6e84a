"""One tutor turn as typed events, and the model's reply as a stream of clean text deltas.

A turn ends in exactly one of these ways, and each door (the browser app, the API, the
evaluation report) renders them itself; no display string ever stands for a signal:

    Delta(text)                 more of Tim's reply (the deltas joined are the whole reply)
    Silence()                   Tim says nothing (safeguarding, or the model chose silence)
    SafeguardingReply(text)     safeguarding's fixed reply to a disclosure, without the model
    Refusal(message, status)    a limit refused the turn (too long, too fast, too busy)
    Failure(message)            the model could not answer (the backend failed)

A model reply's deltas are followed by Finished(reason, prompt_tokens, completion_tokens) when
the server can count tokens: reason "length" when the reply reached the token cap, else "stop".
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tutorkit.backends import ChatBackend, Sampling
from tutorkit.safeguarding import Decision
from tutorkit.speakers import clean_reply, may_become_speaker_label, starts_other_speaker


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Silence:
    pass


@dataclass(frozen=True)
class SafeguardingReply:
    text: str
    flags: tuple[str, ...]


@dataclass(frozen=True)
class Refusal:
    message: str  # shown to the student: what to do about it
    status: int  # the HTTP status the API answers with
    retry_after_s: int | None = None  # when trying again makes sense (the API's Retry-After)


@dataclass(frozen=True)
class Failure:
    message: str


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop", or "length": the reply reached the token cap
    prompt_tokens: int
    completion_tokens: int


Event = Delta | Silence | SafeguardingReply | Refusal | Failure | Finished


def safeguarding_event(decision: Decision) -> Silence | SafeguardingReply | None:
    """The turn safeguarding decides, or None when the model should answer."""
    if decision.silence:
        return Silence()
    if decision.response is not None:
        return SafeguardingReply(decision.response, decision.flags)
    return None


async def model_reply(backend: ChatBackend, messages: list[dict], sampling: Sampling, tutor_name: str) -> AsyncIterator[Delta]:
    """The model's reply as deltas of clean text: a leading "Tim:" label dropped, the reply cut
    where the model starts the student's next line. Text sent cannot be taken back, so a start
    that may still become a label is held until it cannot. Backend errors propagate (BackendError)."""
    raw, sent = "", ""
    async with contextlib.aclosing(backend.stream(messages, sampling)) as pieces:
        async for piece in pieces:
            raw += piece
            if starts_other_speaker(raw, tutor_name):
                break  # the model began writing the student's line: Tim's turn is over
            text = clean_reply(raw, tutor_name)
            if may_become_speaker_label(text, tutor_name) or not text.startswith(sent) or len(text) == len(sent):
                continue
            yield Delta(text[len(sent) :])
            sent = text
    final = clean_reply(raw, tutor_name)
    if final.startswith(sent) and len(final) > len(sent):  # a short reply, or the last piece
        yield Delta(final[len(sent) :])


def render_text(events: list[Event], silence: str = "") -> str:
    """A finished turn as plain text (the API's `content`, a report's reply): the deltas joined,
    the fixed reply, or `silence` for silence."""
    text = ""
    for event in events:
        if isinstance(event, Delta):
            text += event.text
        elif isinstance(event, SafeguardingReply):
            text = event.text
        elif isinstance(event, Silence):
            text = silence
    return text
