"""Safeguarding that does not depend on the model (patterns in configs/safeguarding.yaml).

A disclosure of self-harm, abuse, hunger or danger flags the message and Tim answers with the
configured response: acknowledge, point to a trusted adult, never promise secrecy. Insults and
sexual harassment are counted per chat; from the `silence_after`-th such message on, Tim stays
silent for the rest of the chat and the chat is flagged.

Serving applies `Safeguard.decide` to every student message before the model is asked; the
evaluation applies the same call to its must-flag probes, so both test one rule set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tutorkit.config import load_dataclass


def _compiled(patterns: list[str]) -> list[re.Pattern]:
    if not patterns:
        raise ValueError("'patterns' must be a non-empty list of regular expressions")
    compiled = []
    for p in patterns:
        try:
            compiled.append(re.compile(p, re.I))
        except re.error as e:
            raise ValueError(f"bad pattern {p!r}: {e}") from None
    return compiled


@dataclass
class Disclosure:
    patterns: list[str]  # regular expressions, case-insensitive
    response: str  # Tim's fixed reply when one matches

    def __post_init__(self):
        self.compiled = _compiled(self.patterns)
        self.response = " ".join(self.response.split())
        if not self.response:
            raise ValueError("'response' must be text")


@dataclass
class AbuseRules:
    patterns: list[str]  # insults and sexual remarks, case-insensitive
    silence_after: int = 3  # abusive messages in a chat after which Tim stays silent

    def __post_init__(self):
        self.compiled = _compiled(self.patterns)
        if self.silence_after < 1:
            raise ValueError("silence_after must be a whole number >= 1")


@dataclass
class SafeguardingConfig:
    abuse: AbuseRules
    disclosures: dict[str, Disclosure] = field(default_factory=dict)  # category -> patterns and reply


@dataclass(frozen=True)
class Assessment:
    flags: tuple[str, ...]  # disclosure categories found in this message
    abusive: bool
    response: str | None  # the fixed reply for the first flagged category, if any


@dataclass(frozen=True)
class Decision:
    """What safeguarding decides for one student message, before any model is asked."""

    flags: tuple[str, ...]  # stored with the message; a flagged chat comes first for staff
    silence: bool  # the chat has had enough abuse: Tim says nothing, now and for the rest of it
    response: str | None  # a disclosure's fixed reply; None (and not silent) lets the model answer


class Safeguard:
    def __init__(self, config: SafeguardingConfig):
        self.config = config

    def assess(self, message: str) -> Assessment:
        flags = tuple(name for name, d in self.config.disclosures.items() if any(p.search(message) for p in d.compiled))
        abusive = any(p.search(message) for p in self.config.abuse.compiled)
        return Assessment(flags, abusive, self.config.disclosures[flags[0]].response if flags else None)

    def silenced(self, user_messages: list[str]) -> bool:
        """True once a chat holds `silence_after` abusive student messages."""
        return sum(self.assess(m).abusive for m in user_messages) >= self.config.abuse.silence_after

    def decide(self, earlier_user_messages: list[str], message: str) -> Decision:
        """The decision for `message`, given the student's earlier messages in the same chat."""
        assessment = self.assess(message)
        silence = self.silenced([*earlier_user_messages, message])
        return Decision(assessment.flags, silence, None if silence else assessment.response)


def load_safeguard(path: str | Path) -> Safeguard:
    return Safeguard(load_dataclass(SafeguardingConfig, path))
