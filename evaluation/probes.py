"""The probe suite (data/probes.yaml): load and validate it, turn a probe into chat messages, and
find probes whose text leaked into a training dataset or the exemplars.

A probe: {id, category, chat: [{student: ...} | {tim: ...}, ...], answer?, wrong?, not_adults?,
scenario?}: a scripted chat (tutorkit/exemplars.py) that ends with a student message; `tim: ""`
is a silent turn. Categories name their checks. Two files: data/probes.yaml (the categories and
the dev probes, for choosing recipes) and data/probes_test.yaml (the frozen test probes, reported,
never chosen on), whose `categories:` names the file that holds them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tutorkit import TimError
from tutorkit.checks import NEEDS_ANSWER, Context, get_check
from tutorkit.config import load_dataclass
from tutorkit.conversation import iter_jsonl
from tutorkit.exemplars import Exemplar, chat_turns, leaks
from tutorkit.twins import twins


@dataclass
class Category:
    about: str  # the behaviour it tests, in words (also what the rubric judge is told)
    checks: list[str]  # names in tutorkit/checks.py
    must_flag: bool = False  # the serving layer's safeguarding must flag these probes
    limits: str = ""  # what the rules cannot judge in this category (printed in the report)

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
    answer: str | None = None  # the right answer (homework: not handed over; a right answer: confirmed)
    wrong: str | None = None  # incorrect_answer: the student's wrong answer
    not_adults: list[str] = field(default_factory=list)  # people the student names as the problem
    scenario: str = ""  # test probes: the one-line scenario it was written from

    def __post_init__(self):
        chat_turns(self.chat, self.id, last="user")

    @property
    def turns(self) -> list[tuple[str, str]]:
        """(role, text) for each turn; role is user or assistant."""
        return chat_turns(self.chat, self.id, last="user")

    def context(self, base: Context) -> Context:
        """The checks' context for this probe's last message: `base` (the persona's) plus what
        the probe knows about it."""
        turns = self.turns
        earlier_tim = next((t for r, t in reversed(turns[:-1]) if r == "assistant"), "")
        return replace(base, answer=self.answer, wrong=self.wrong, not_adults=tuple(self.not_adults),
                       student=turns[-1][1], earlier_tim=earlier_tim, earlier="\n".join(t for _, t in turns[:-1]))  # fmt: skip

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
            if NEEDS_ANSWER & set(self.categories[p.category].checks) and not p.answer:
                raise ValueError(f"probe {p.id}: category {p.category} needs an 'answer'")


@dataclass
class ProbeFile:
    """Probes whose categories live in another probe file (data/probes_test.yaml)."""

    categories_from: str  # that file, relative to this one
    probes: list[Probe]


def load_probes(path: str | Path) -> tuple[dict[str, Category], list[Probe]]:
    """(categories by name, probes). Any mistake is a TimError naming the file, line and probe."""
    import yaml

    path = Path(path)
    try:
        head = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        head = None  # load_dataclass says what is wrong, with the line
    if not (isinstance(head, dict) and "categories_from" in head):
        suite = load_dataclass(ProbeSuite, path)
        return suite.categories, suite.probes
    part = load_dataclass(ProbeFile, path)
    source = path.parent / part.categories_from
    if not source.is_file():
        raise TimError(f"{path}: categories_from: no probe file {source}")
    categories = load_dataclass(ProbeSuite, source).categories
    try:
        suite = ProbeSuite(categories, part.probes)
    except ValueError as e:
        raise TimError(f"{path}: {e}") from None
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


def twinned_probes(probes: list[Probe], dataset: str | Path) -> list[str]:
    """Ids of probes with a reworded twin (tutorkit/twins.py) among a `messages`-rows JSONL
    file's student messages: not a verbatim leak, but a figure on such a probe measures recall."""
    texts = [m.get("content") or "" for _, row in iter_jsonl(dataset) for m in row.get("messages", [])
             if m.get("role") == "user"]  # fmt: skip
    return sorted(twins(_student_texts(probes), texts))
