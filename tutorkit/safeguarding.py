"""Safeguarding that does not depend on the model (patterns in configs/safeguarding.yaml).

Two layers find signs that a child may be at risk: phrase patterns (high precision, for the
clearest wording) and, when the config names one, Tim Guard, a learned classifier
(tutorkit/guard.py) that reads the message with its recent context. What they find has a tier:
`urgent` (self-harm, abuse, grooming, online exploitation, danger): Tim answers with the
configured fixed response (acknowledge, point to a trusted adult, never promise secrecy) without
the model; `concern` (hunger and neglect, trouble at home, bullying, an urgent category's weaker
sign): Tim answers, and the configured check-in follows his answer. Insults and sexual harassment
flag the message `abusive` (and with it the chat, for staff, from the first one); from the
`silence_after`-th such message on, Tim stays silent, unless the message shows a sign of risk.

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
from tutorkit.safeguarding_data import CATEGORIES, TIERS, tier_of

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
    response: str  # urgent: Tim's fixed reply; concern: the check-in after Tim's own answer
    tier: str = "urgent"  # "urgent" or "concern" (tutorkit/safeguarding_data.TIERS)
    covers: list[str] = field(default_factory=list)  # the guard's categories this reply is for

    def __post_init__(self):
        self.compiled = _compiled(self.patterns)
        self.response = " ".join(self.response.split())
        if not self.response:
            raise ValueError("'response' must be text")
        if self.tier not in TIERS:
            raise ValueError(f"tier must be one of {', '.join(TIERS)}, got {self.tier!r}")
        if unknown := [c for c in self.covers if c not in CATEGORIES]:
            raise ValueError(f"covers: unknown categories {unknown}; the guard's are {', '.join(CATEGORIES)}")


@dataclass
class GuardSettings:
    dir: str  # a trained guard (tim guard train); '' = phrase patterns only
    urgent_threshold: float = 0.5  # an urgent category's score at or above it: urgent
    concern_threshold: float = 0.5  # any category's score at or above it: concern (when not urgent)

    def __post_init__(self):
        if not (0 < self.urgent_threshold <= 1 and 0 < self.concern_threshold <= 1):
            raise ValueError("thresholds must be in (0, 1]")


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
    guard: GuardSettings | None = None  # the learned classifier beside the patterns
    check_in: str = ""  # after Tim's answer at concern tier when no disclosure's reply covers the category

    def __post_init__(self):
        if self.match_window < 1:
            raise ValueError("match_window must be a whole number >= 1")
        if ABUSIVE in self.disclosures:
            raise ValueError(f"disclosures: '{ABUSIVE}' is the flag of abuse rules; name the category otherwise")
        self.check_in = " ".join(self.check_in.split())
        if self.guard is not None and self.guard.dir:
            urgent = {c for d in self.disclosures.values() if d.tier == "urgent" for c in d.covers}
            if missing := [c for c in TIERS["urgent"] if c not in urgent]:
                raise ValueError(f"guard: no urgent disclosure covers {', '.join(missing)} (its fixed reply)")
            if not self.check_in:
                raise ValueError("check_in: the guard needs the line Tim adds at concern tier")

    def reply_for(self, tier: str, categories: tuple[str, ...]) -> str | None:
        """The reply of the first disclosure of `tier` that covers one of the guard's `categories`."""
        for category in categories:
            for d in self.disclosures.values():
                if d.tier == tier and category in d.covers:
                    return d.response
        return None


@dataclass(frozen=True)
class Assessment:
    flags: tuple[str, ...]  # disclosure categories found in this message (or completed by it)
    abusive: bool
    response: str | None  # the fixed reply for the first flagged category, if any


@dataclass(frozen=True)
class Decision:
    """What safeguarding decides for one student message, before any model is asked."""

    flags: tuple[str, ...]  # disclosure categories, the guard's categories, and "abusive"; stored with the message
    silence: bool  # the student has been abusive enough: Tim says nothing (unless to a disclosure)
    response: str | None  # urgent: the fixed reply; None (and not silent) lets the model answer
    tier: str = "none"  # "urgent", "concern" or "none"
    check_in: str | None = None  # concern: what Tim adds after his answer
    layer: str = ""  # which layers found a sign: "patterns", "guard", "patterns+guard", ""
    scores: dict[str, float] = field(default_factory=dict, compare=False)  # the guard's, per category


class Safeguard:
    def __init__(self, config: SafeguardingConfig, guard=None):
        """`guard`: a tutorkit.guard.Guard (its scores join the patterns'), or None."""
        self.config = config
        self.guard = guard

    def _recent(self, earlier) -> list[str]:
        """The earlier messages read with a new one: the last `match_window` - 1."""
        return list(earlier)[-(self.config.match_window - 1) :] if self.config.match_window > 1 else []

    def _disclosed(self, forms: tuple[str, str]) -> set[str]:
        return {name for name, d in self.config.disclosures.items() if any(p.search(f) for p in d.compiled for f in forms)}

    def assess(self, message: str, earlier: list[str] | tuple[str, ...] = ()) -> Assessment:
        """Flags for `message`. `earlier` are the student's previous messages in the chat: a
        category the last `match_window` messages match only together (not the earlier ones
        without this one) is flagged here, where the disclosure is completed."""
        forms = _forms(message)
        found = self._disclosed(forms)
        before = self._recent(earlier)
        if before:
            joined = self._disclosed(_forms(" ".join([*before, message])))
            found |= joined - self._disclosed(_forms(" ".join(before)))
        flags = tuple(name for name in self.config.disclosures if name in found)
        abusive = self.config.abuse.matches(forms)
        return Assessment(flags, abusive, self.config.disclosures[flags[0]].response if flags else None)

    def guard_scores(self, earlier_user_messages: list[str], message: str) -> dict[str, float]:
        """The guard's probability per category for `message` read with the messages before it
        that it sees ({} without a guard)."""
        return self.guard.scores([*self._recent(earlier_user_messages), message]) if self.guard is not None else {}

    def decide(self, earlier_user_messages: list[str], message: str, abusive_before: int | None = None) -> Decision:
        """The decision for `message`, given the student's earlier messages in the same chat.
        `abusive_before`: abusive messages already counted for this student (the server counts
        its stored flags, in this chat and the student's recent others); None counts `earlier`."""
        assessment = self.assess(message, earlier_user_messages)
        if abusive_before is None:
            abusive_before = sum(self.assess(m).abusive for m in earlier_user_messages)
        abusive = abusive_before + assessment.abusive
        disclosures = self.config.disclosures
        tiers = {disclosures[f].tier for f in assessment.flags}
        tier = "urgent" if "urgent" in tiers else "concern" if tiers else "none"
        scores, found, layers = {}, (), ["patterns"] if tiers else []
        # Urgent by the patterns: the reply is the fixed one whatever the guard says, so it is not
        # asked (under load its queue would delay the reply a child is waiting for).
        if self.guard is not None and tier != "urgent":
            settings = self.config.guard
            scores = self.guard_scores(earlier_user_messages, message)
            guard_tier, found = tier_of(scores, settings.urgent_threshold, settings.concern_threshold)
            if guard_tier != "none":
                layers.append("guard")
                tier = "urgent" if "urgent" in (tier, guard_tier) else "concern"
        response = check_in = None
        if tier == "urgent":
            response = next((disclosures[f].response for f in assessment.flags if disclosures[f].tier == "urgent"), None)
            response = response or self.config.reply_for("urgent", found)
        elif tier == "concern":
            check_in = next((disclosures[f].response for f in assessment.flags), None)
            check_in = check_in or self.config.reply_for("concern", found) or self.config.check_in
        flags = tuple(dict.fromkeys(assessment.flags + found)) + ((ABUSIVE,) if assessment.abusive else ())
        silence = abusive >= self.config.abuse.silence_after and tier == "none"
        return Decision(flags, silence, response, tier, check_in, "+".join(layers), scores)


def load_safeguard(path: str | Path, with_guard: bool = True) -> Safeguard:
    """The rules of a safeguarding config, with its guard loaded (once: a few seconds) unless
    `with_guard` is false or the config names none."""
    config = load_dataclass(SafeguardingConfig, path)
    guard = None
    if with_guard and config.guard is not None and config.guard.dir:
        from tutorkit.guard import Guard

        guard = Guard(config.guard.dir)
    return Safeguard(config, guard)
