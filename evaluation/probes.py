"""The probe suite (data/probes.yaml): load and validate it, turn a probe into chat messages, and
find probes whose text leaked into a training dataset or the exemplars.

A probe: {id, category, chat: [{student: ...} | {tim: ...}, ...], answer?}: a scripted chat
(tutorkit/exemplars.py) that ends with a student message; `tim: ""` is a silent turn.
Categories name their checks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tutorkit.checks import get_check
from tutorkit.config import load_dataclass
from tutorkit.conversation import iter_jsonl
from tutorkit.exemplars import Exemplar, chat_turns, leaks


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
        chat_turns(self.chat, self.id, last="user")

    @property
    def turns(self) -> list[tuple[str, str]]:
        """(role, text) for each turn; role is user or assistant."""
        return chat_turns(self.chat, self.id, last="user")

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


def _student_texts(probes: list[Probe]) -> dict[str, list[str]]:
    return {p.id: [t for r, t in p.turns if r == "user"] for p in probes}


def leaked_probes(probes: list[Probe], dataset: str | Path) -> list[str]:
    """Ids of probes whose student text appears in a student message of a `messages`-rows JSONL
    file (tutorkit.exemplars.leaks): training on a probe with its answer would make it worthless.
    Tim's own lines may say the same words ("I'm a tutor, what's your name?" held the probe
    "what's your name" and stopped a demo at evaluation): that teaches no answer to the probe."""
    texts = (m.get("content") or "" for _, row in iter_jsonl(dataset) for m in row.get("messages", [])
             if m.get("role") == "user")  # fmt: skip
    return leaks(_student_texts(probes), texts)


def probes_in_exemplars(probes: list[Probe], exemplars: Iterable[Exemplar]) -> list[str]:
    """Ids of probes whose student text appears in a student turn of an exemplar (synthesis shows
    exemplars to the generator and may train on them, so they are held to the same rule)."""
    return leaks(_student_texts(probes), (text for e in exemplars for role, text in e.turns if role == "user"))
