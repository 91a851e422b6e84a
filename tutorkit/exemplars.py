"""Scripted chats written by people: the gold exemplars (data/exemplars.yaml) and the chat format
they share with the probe suite, plus the leak finder that keeps probe text out of anything a
model learns from.

A scripted chat is a list of one-key turns, `{student: text}` or `{tim: text}`, alternating and
starting with the student; `tim: ""` is a silent turn. A probe ends with the student (the model
writes the next turn); an exemplar ends with Tim (it is a whole conversation).

An exemplar: {id, category, learner, chat}. `category` is a scenario category of
data/scenarios.yaml, or `lesson` for an ordinary lesson; `learner` a learner group. Synthesis
shows exemplars of the conversation's category to Tim and, flipped, to the student simulator,
and may mix them into the training rows (configs/synth.yaml).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tutorkit import TimError
from tutorkit.config import load_dataclass

SPEAKERS = {"student": "user", "tim": "assistant"}  # a chat's keys -> message roles
LESSON = "lesson"  # the category of exemplars that show an ordinary lesson, not a hard case


def chat_turns(chat: list[dict[str, str]], name: str, last: str) -> list[tuple[str, str]]:
    """(role, text) for each turn of a scripted chat; ValueError naming `name` when a turn is not
    {student: text} or {tim: text}, the chat does not alternate from the student, or it does not
    end with `last` ("user" or "assistant")."""
    if not chat or any(not isinstance(turn, dict) or len(turn) != 1 or next(iter(turn)) not in SPEAKERS for turn in chat):
        raise ValueError(f"{name}: each chat turn is {{student: text}} or {{tim: text}}")
    turns = [(SPEAKERS[who], text) for turn in chat for who, text in turn.items()]
    roles = [role for role, _ in turns]
    if roles[0] != "user" or roles[-1] != last or any(a == b for a, b in zip(roles, roles[1:])):
        who = "the student" if last == "user" else "Tim"
        raise ValueError(f"{name}: the chat must alternate student/tim, start with the student and end with {who}")
    if any(role == "user" and not text.strip() for role, text in turns):
        raise ValueError(f"{name}: a student turn is empty")
    return turns


@dataclass
class Exemplar:
    id: str
    category: str  # a scenario category, or "lesson"
    learner: str  # a learner group (small_child, ten, teen, adult, life_skills)
    chat: list[dict[str, str]]  # [{student: text} | {tim: text}, ...], ending with Tim

    def __post_init__(self):
        chat_turns(self.chat, self.id, last="assistant")

    @property
    def turns(self) -> list[tuple[str, str]]:
        return chat_turns(self.chat, self.id, last="assistant")

    def messages(self, system_prompt: str) -> list[dict]:
        return [{"role": "system", "content": system_prompt}, *({"role": r, "content": t} for r, t in self.turns)]


@dataclass
class ExemplarsFile:
    exemplars: list[Exemplar]

    def __post_init__(self):
        if not self.exemplars:
            raise ValueError("'exemplars' must be a non-empty list")
        ids = [e.id for e in self.exemplars]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"duplicate exemplar id '{twice[0]}'")


def load_exemplars(path: str | Path) -> list[Exemplar]:
    """Every exemplar; any mistake is a TimError naming the file, the line and the exemplar."""
    return load_dataclass(ExemplarsFile, path).exemplars


def normalized(text: str) -> str:
    """Lower-case words and digits, one space apart: what the leak finder compares."""
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def leaks(protected: dict[str, list[str]], texts: Iterable[str], min_chars: int = 12) -> list[str]:
    """Keys of `protected` (e.g. probe id -> its student messages) any of whose texts, of at least
    `min_chars` once normalized, appears inside one of `texts`. Shorter texts ("ok", "whatever")
    are everyday words, not a leak."""
    wanted = {key: [n for n in map(normalized, values) if len(n) >= min_chars] for key, values in protected.items()}
    found: set[str] = set()
    for text in texts:
        text = normalized(text)
        found.update(key for key, values in wanted.items() if key not in found and any(v in text for v in values))
    return sorted(found)


def probe_student_texts(path: str | Path) -> dict[str, list[str]]:
    """Probe id -> its student messages, from a probe file (data/probes.yaml: `probes:` rows with
    `id` and a scripted `chat`; evaluation/probes.py checks the rest of it). Synthesis keeps these
    out of its students' lines: the evaluation refuses a dataset that holds them."""
    import yaml

    try:
        rows = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}).get("probes") or []
    except (OSError, yaml.YAMLError, AttributeError) as e:
        raise TimError(f"{path}: not a probe file ({e})") from None
    return {str(row["id"]): [text for turn in row.get("chat", []) for who, text in turn.items() if who == "student"]
            for row in rows if isinstance(row, dict) and "id" in row}  # fmt: skip
