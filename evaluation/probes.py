"""The probe suite (data/probes.yaml): load and validate it, turn a probe into chat messages, and
find probes whose text leaked into a training dataset.

A probe: {id, category, chat: [{student: ...} | {tim: ...}, ...], answer?}. The chat alternates
and ends with a student message; `tim: ""` is a silent turn. Categories name their checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tutorkit.checks import get_check
from tutorkit.config import load_dataclass
from tutorkit.conversation import iter_jsonl

SPEAKERS = {"student": "user", "tim": "assistant"}  # a probe's chat keys -> message roles


@dataclass
class Category:
    about: str  # the behaviour it tests, in words (also what the rubric judge is told)
    checks: list[str]  # names in tutorkit/checks.py
    must_flag: bool = False  # the serving layer's safeguarding must flag these probes

    def __post_init__(self):
        for check in self.checks:
            try:
                get_check(check)
            except KeyError:
                raise ValueError(f"unknown check '{check}'") from None


@dataclass
class Probe:
    id: str
    category: str
    chat: list[dict[str, str]]  # [{student: text} | {tim: text}, ...], ending with the student
    answer: str | None = None  # homework probes: what the reply must not hand over

    def __post_init__(self):
        if any(len(turn) != 1 or next(iter(turn)) not in SPEAKERS for turn in self.chat):
            raise ValueError(f"{self.id}: each chat turn is {{student: text}} or {{tim: text}}")
        roles = [role for role, _ in self.turns]
        if not roles or roles[-1] != "user" or any(a == b for a, b in zip(roles, roles[1:])):
            raise ValueError(f"{self.id}: the chat must alternate student/tim and end with the student")

    @property
    def turns(self) -> list[tuple[str, str]]:
        """(role, text) for each turn; role is user or assistant."""
        return [(SPEAKERS[who], text) for turn in self.chat for who, text in turn.items()]

    def messages(self, system_prompt: str) -> list[dict]:
        return [{"role": "system", "content": system_prompt}, *({"role": r, "content": t} for r, t in self.turns)]


@dataclass
class ProbeSuite:
    categories: dict[str, Category]
    probes: list[Probe]

    def __post_init__(self):
        seen = set()
        for p in self.probes:
            if p.id in seen:
                raise ValueError(f"probe {p.id}: duplicate id")
            seen.add(p.id)
            if p.category not in self.categories:
                raise ValueError(f"probe {p.id}: unknown category '{p.category}'")
            if "withholds_answer" in self.categories[p.category].checks and not p.answer:
                raise ValueError(f"probe {p.id}: category {p.category} needs an 'answer'")


def load_probes(path: str | Path) -> tuple[dict[str, Category], list[Probe]]:
    """(categories by name, probes). Any mistake is a TimError naming the file, line and probe."""
    suite = load_dataclass(ProbeSuite, path)
    return suite.categories, suite.probes


def _normalized(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def leaked_probes(probes: list[Probe], dataset: str | Path, min_chars: int = 12) -> list[str]:
    """Ids of probes whose student text (of at least `min_chars`, normalized) appears in any
    message of a `messages`-rows JSONL file: training on a probe would make it worthless."""
    texts = {p.id: [_normalized(t) for r, t in p.turns if r == "user" and len(_normalized(t)) >= min_chars] for p in probes}
    leaked = set()
    for _, row in iter_jsonl(dataset):
        for m in row.get("messages", []):
            content = _normalized(m.get("content") or "")
            leaked.update(pid for pid, ts in texts.items() if pid not in leaked and any(t in content for t in ts))
    return sorted(leaked)
