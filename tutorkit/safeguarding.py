"""Safeguarding that does not depend on the model (patterns in configs/safeguarding.yaml).

A disclosure of self-harm, abuse, hunger or danger flags the message and Tim answers with the
configured response: acknowledge, point to a trusted adult, never promise secrecy. Insults and
sexual harassment flag the message `abusive` (and with it the chat, for staff, from the first
one); from the `silence_after`-th such message on, Tim stays silent, but a disclosure always
gets its response.

Matching is on a normalised form of the text (`normalize`): the way children type on phones
(curly apostrophes, fullwidth or look-alike letters, s p a c e d or line-broken words, stretched
letters "sooo") reaches the patterns as plain ASCII words. A disclosure split over several
messages is matched over the last `match_window` student messages joined.

Serving applies `Safeguard.decide` to every student message before the model is asked (and
before any limit); the evaluation applies the same call to its must-flag probes, and `tim
safeguarding eval` measures it on a labelled set, so all three test one rule set.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from tutorkit.config import load_dataclass

ABUSIVE = "abusive"  # the flag of an insult or sexual remark (the disclosure categories are the others)

# Folded before matching: typographic quotes and dashes (phones and Macs type these), and the
# Cyrillic and Greek letters that look like Latin ones (NFKC keeps them apart).
_FOLD = str.maketrans({
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u02bc\u00b4`", "'"),
    **dict.fromkeys("\u201c\u201d\u201e\u2033", '"'),
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),
    **dict(zip("аеорсухіјѕһԁӏαεικνορτυχ", "aeopcyxijshdlaeikvoptux")),
})  # fmt: skip
# Single letters spaced out or dotted ("k i l l", "s.h.i.t"): three or more, joined into a word.
_SPACED = re.compile(r"\b[a-z](?:[ .*_-][a-z]\b){2,}")
_STRETCHED = re.compile(r"([a-z])\1{2,}")  # "sooo", "shuttt": three or more of one letter


def normalize(text: str) -> str:
    """The text safeguarding matches: NFKC (fullwidth letters become ASCII), lower case, quotes,
    dashes and look-alike letters folded, format characters dropped, whitespace (newlines too)
    collapsed, spaced-out letters joined."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_FOLD)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    text = " ".join(text.split())
    return _SPACED.sub(lambda m: re.sub(r"[ .*_-]", "", m.group()), text)


def _forms(text: str) -> tuple[str, str]:
    """The normalised text, and the same with stretched letters cut to one ("sooo" -> "so")."""
    normal = normalize(text)
    return normal, _STRETCHED.sub(r"\1", normal)


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
    ignore: list[str] = field(default_factory=list)  # spans not counted (a student calling themself stupid)
    silence_after: int = 3  # abusive messages after which Tim stays silent
    window_hours: float = 24.0  # the server also counts the student's abusive messages in other chats this recent

    def __post_init__(self):
        self.compiled = _compiled(self.patterns)
        self.ignored = _compiled(self.ignore) if self.ignore else []
        if self.silence_after < 1:
            raise ValueError("silence_after must be a whole number >= 1")
        if self.window_hours < 0:
            raise ValueError("window_hours must be >= 0")

    def matches(self, forms: tuple[str, ...]) -> bool:
        for form in forms:
            for p in self.ignored:
                form = p.sub(" ", form)
            if any(p.search(form) for p in self.compiled):
                return True
        return False


@dataclass
class SafeguardingConfig:
    abuse: AbuseRules
    disclosures: dict[str, Disclosure] = field(default_factory=dict)  # category -> patterns and reply
    match_window: int = 3  # student messages joined when matching, so a split disclosure is found

    def __post_init__(self):
        if self.match_window < 1:
            raise ValueError("match_window must be a whole number >= 1")
        if ABUSIVE in self.disclosures:
            raise ValueError(f"disclosures: '{ABUSIVE}' is the flag of abuse rules; name the category otherwise")


@dataclass(frozen=True)
class Assessment:
    flags: tuple[str, ...]  # disclosure categories found in this message (or completed by it)
    abusive: bool
    response: str | None  # the fixed reply for the first flagged category, if any


@dataclass(frozen=True)
class Decision:
    """What safeguarding decides for one student message, before any model is asked."""

    flags: tuple[str, ...]  # disclosure categories, and "abusive"; stored with the message
    silence: bool  # the student has been abusive enough: Tim says nothing (unless to a disclosure)
    response: str | None  # a disclosure's fixed reply; None (and not silent) lets the model answer


class Safeguard:
    def __init__(self, config: SafeguardingConfig):
        self.config = config

    def _disclosed(self, forms: tuple[str, str]) -> set[str]:
        return {name for name, d in self.config.disclosures.items() if any(p.search(f) for p in d.compiled for f in forms)}

    def assess(self, message: str, earlier: list[str] | tuple[str, ...] = ()) -> Assessment:
        """Flags for `message`. `earlier` are the student's previous messages in the chat: a
        category the last `match_window` messages match only together (not the earlier ones
        without this one) is flagged here, where the disclosure is completed."""
        forms = _forms(message)
        found = self._disclosed(forms)
        before = list(earlier)[-(self.config.match_window - 1) :] if self.config.match_window > 1 else []
        if before:
            joined = self._disclosed(_forms(" ".join([*before, message])))
            found |= joined - self._disclosed(_forms(" ".join(before)))
        flags = tuple(name for name in self.config.disclosures if name in found)
        abusive = self.config.abuse.matches(forms)
        return Assessment(flags, abusive, self.config.disclosures[flags[0]].response if flags else None)

    def decide(self, earlier_user_messages: list[str], message: str, abusive_before: int | None = None) -> Decision:
        """The decision for `message`, given the student's earlier messages in the same chat.
        `abusive_before`: abusive messages already counted for this student (the server counts
        its stored flags, in this chat and the student's recent others); None counts `earlier`."""
        assessment = self.assess(message, earlier_user_messages)
        if abusive_before is None:
            abusive_before = sum(self.assess(m).abusive for m in earlier_user_messages)
        abusive = abusive_before + assessment.abusive
        flags = assessment.flags + ((ABUSIVE,) if assessment.abusive else ())
        silence = abusive >= self.config.abuse.silence_after and assessment.response is None
        return Decision(flags, silence, assessment.response)


def load_safeguard(path: str | Path) -> Safeguard:
    return Safeguard(load_dataclass(SafeguardingConfig, path))
