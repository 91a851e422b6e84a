"""Safeguarding that does not depend on the model (patterns in configs/safeguarding.yaml).

A disclosure of self-harm, abuse, hunger or danger flags the message and Tim answers with the
configured response: acknowledge, point to a trusted adult, never promise secrecy. Insults and
sexual harassment are counted per chat; from the `silence_after`-th such message on, Tim stays
silent for the rest of the chat and the chat is flagged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from tim import TimError


@dataclass(frozen=True)
class Assessment:
    flags: tuple[str, ...]  # disclosure categories found in this message
    abusive: bool
    response: str | None  # the fixed reply for the first flagged category, if any


class Safeguard:
    def __init__(self, disclosures: dict[str, tuple[list[re.Pattern], str]], abuse: list[re.Pattern], silence_after: int):
        self.disclosures = disclosures
        self.abuse = abuse
        self.silence_after = silence_after

    def assess(self, message: str) -> Assessment:
        flags = tuple(name for name, (patterns, _) in self.disclosures.items() if any(p.search(message) for p in patterns))
        abusive = any(p.search(message) for p in self.abuse)
        return Assessment(flags, abusive, self.disclosures[flags[0]][1] if flags else None)

    def silenced(self, user_messages: list[str]) -> bool:
        """True once a chat holds `silence_after` abusive student messages."""
        return sum(self.assess(m).abusive for m in user_messages) >= self.silence_after


def _patterns(items, where: str) -> list[re.Pattern]:
    if not isinstance(items, list) or not items or not all(isinstance(p, str) for p in items):
        raise TimError(f"{where}: 'patterns' must be a non-empty list of strings")
    compiled = []
    for p in items:
        try:
            compiled.append(re.compile(p, re.I))
        except re.error as e:
            raise TimError(f"{where}: bad pattern {p!r}: {e}") from None
    return compiled


def load_safeguard(path: str | Path) -> Safeguard:
    path = Path(path)
    if not path.is_file():
        raise TimError(f"safeguarding config not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(data) - {"disclosures", "abuse"}
    if unknown:
        raise TimError(f"{path}: unknown key '{sorted(unknown)[0]}'")
    disclosures = {}
    for name, spec in (data.get("disclosures") or {}).items():
        where = f"{path}: disclosures.{name}"
        if not isinstance(spec, dict) or set(spec) != {"patterns", "response"}:
            raise TimError(f"{where} needs exactly 'patterns' and 'response'")
        if not isinstance(spec["response"], str) or not spec["response"].strip():
            raise TimError(f"{where}: 'response' must be text")
        disclosures[name] = (_patterns(spec["patterns"], where), " ".join(spec["response"].split()))
    abuse = data.get("abuse") or {}
    if set(abuse) - {"patterns", "silence_after"}:
        raise TimError(f"{path}: abuse takes 'patterns' and 'silence_after'")
    silence_after = abuse.get("silence_after", 3)
    if not isinstance(silence_after, int) or silence_after < 1:
        raise TimError(f"{path}: abuse.silence_after must be a whole number >= 1")
    return Safeguard(disclosures, _patterns(abuse.get("patterns"), f"{path}: abuse"), silence_after)
