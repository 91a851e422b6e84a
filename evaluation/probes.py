"""The probe suite (data/probes.yaml): load and validate it, turn a probe into chat messages, and
find probes whose text leaked into a training dataset.

A probe: {id, category, chat: [{student: ...} | {tim: ...}, ...], answer?}. The chat alternates
and ends with a student message; `tim: ""` is a silent turn. Categories name their checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from evaluation.checks import get_check
from tim import TimError
from tim.conversation import iter_jsonl


@dataclass(frozen=True)
class Category:
    about: str  # the behaviour it tests, in words (also what the rubric judge is told)
    checks: tuple[str, ...]
    must_flag: bool = False  # the serving layer's safeguarding must flag these probes


@dataclass(frozen=True)
class Probe:
    id: str
    category: str
    chat: tuple[tuple[str, str], ...]  # (role, text), role in user/assistant, ends with user
    checks: tuple[str, ...]
    answer: str | None = None

    def messages(self, system_prompt: str) -> list[dict]:
        return [{"role": "system", "content": system_prompt}, *({"role": r, "content": t} for r, t in self.chat)]


def load_probes(path: str | Path) -> tuple[dict[str, Category], list[Probe]]:
    """(categories by name, probes). Any mistake is a TimError naming the probe and key."""
    path = Path(path)
    if not path.is_file():
        raise TimError(f"probe suite not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if set(data) != {"categories", "probes"}:
        raise TimError(f"{path}: needs exactly 'categories' and 'probes'")
    categories = {}
    for name, spec in data["categories"].items():
        if not isinstance(spec, dict) or not {"about", "checks"} <= set(spec) or set(spec) - {"about", "checks", "must_flag"}:
            raise TimError(f"{path}: categories.{name} takes 'about', 'checks' and optional 'must_flag'")
        for check in spec["checks"]:
            try:
                get_check(check)
            except KeyError:
                raise TimError(f"{path}: categories.{name}: unknown check '{check}'") from None
        categories[name] = Category(spec["about"], tuple(spec["checks"]), bool(spec.get("must_flag", False)))
    probes, seen = [], set()
    for i, p in enumerate(data["probes"]):
        where = f"{path}: probes[{i}]" + (f" ({p.get('id')})" if isinstance(p, dict) and p.get("id") else "")
        if not isinstance(p, dict) or not {"id", "category", "chat"} <= set(p) or set(p) - {"id", "category", "chat", "answer"}:
            raise TimError(f"{where}: keys are id, category, chat and optional answer")
        if p["id"] in seen:
            raise TimError(f"{where}: duplicate id")
        seen.add(p["id"])
        if p["category"] not in categories:
            raise TimError(f"{where}: unknown category '{p['category']}'")
        chat = []
        for turn in p["chat"]:
            if not isinstance(turn, dict) or len(turn) != 1 or next(iter(turn)) not in ("student", "tim"):
                raise TimError(f"{where}: each chat turn is {{student: text}} or {{tim: text}}")
            (who, text), = turn.items()
            if not isinstance(text, str):
                raise TimError(f"{where}: chat text must be a string")
            chat.append(("user" if who == "student" else "assistant", text))
        roles = [r for r, _ in chat]
        if not roles or roles[-1] != "user" or any(a == b for a, b in zip(roles, roles[1:])):
            raise TimError(f"{where}: the chat must alternate student/tim and end with the student")
        checks = categories[p["category"]].checks
        if "withholds_answer" in checks and not p.get("answer"):
            raise TimError(f"{where}: category {p['category']} needs an 'answer'")
        probes.append(Probe(p["id"], p["category"], tuple(chat), checks, p.get("answer")))
    return categories, probes


def _normalized(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def leaked_probes(probes: list[Probe], dataset: str | Path, min_chars: int = 12) -> list[str]:
    """Ids of probes whose student text (of at least `min_chars`, normalized) appears in any
    message of a `messages`-rows JSONL file: training on a probe would make it worthless."""
    texts = {p.id: [_normalized(t) for r, t in p.chat if r == "user" and len(_normalized(t)) >= min_chars] for p in probes}
    leaked = set()
    for _, row in iter_jsonl(dataset):
        for m in row.get("messages", []):
            content = _normalized(m.get("content") or "")
            leaked.update(pid for pid, ts in texts.items() if pid not in leaked and any(t in content for t in ts))
    return sorted(leaked)
