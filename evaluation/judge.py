"""The optional rubric judge of `tim eval`: a larger instruct model behind any OpenAI-compatible
server reads each probe chat and the tutor's reply and answers PASS or FAIL (configs/rubric.yaml).
Rules (tutorkit/checks.py) see words; the judge is for what rules cannot see.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from evaluation.probes import Category, Probe
from tutorkit.backends import BackendSpec, Sampling, open_backend

PLACEHOLDERS = {"name": "", "behaviour": "", "chat": "", "reply": ""}


@dataclass
class Rubric:
    system: str  # the judge's system prompt; {name} is the tutor's name
    prompt: str  # {name}, {behaviour}, {chat} and {reply} are filled in
    max_tokens: int = 64  # the judge's answer; the verdict is its first word

    def __post_init__(self):
        for key, text in (("system", self.system), ("prompt", self.prompt)):
            try:
                text.format(**PLACEHOLDERS)
            except (KeyError, IndexError) as e:
                raise ValueError(f"{key}: unknown placeholder {e}; use {', '.join('{%s}' % k for k in PLACEHOLDERS)}") from None


def verdict(answer: str) -> str:
    """"pass" or "fail" when the judge's answer starts with that word (markdown around it is
    fine); "unclear" otherwise."""
    first = re.match(r"[\W_]*([A-Za-z]+)", answer)
    word = first.group(1).upper() if first else ""
    return {"PASS": "pass", "FAIL": "fail"}.get(word, "unclear")


def judge(results: list[dict], probes: list[Probe], categories: dict[str, Category], rubric: Rubric,
          base_url: list[str], model: str, tutor_name: str) -> None:  # fmt: skip
    """Adds results[i]["judge"] (pass | fail | unclear) and results[i]["judge_answer"] (the text)."""
    greedy = Sampling(temperature=0.0, max_tokens=rubric.max_tokens)

    async def ask(backend, result, probe):
        chat = "\n".join(f"{'Student' if r == 'user' else tutor_name}: {t or '(silent)'}" for r, t in probe.turns)
        prompt = rubric.prompt.format(name=tutor_name, behaviour=categories[probe.category].about, chat=chat,
                                      reply=result["reply"] or "(silent)")  # fmt: skip
        answer = await backend.complete([{"role": "system", "content": rubric.system.format(**{**PLACEHOLDERS, "name": tutor_name})},
                                         {"role": "user", "content": prompt}], greedy)  # fmt: skip
        result["judge_answer"], result["judge"] = answer, verdict(answer)

    async def run(backend):
        try:
            await asyncio.gather(*(ask(backend, r, p) for r, p in zip(results, probes)))
        finally:
            await backend.aclose()

    with open_backend(BackendSpec("openai", model=model, base_url=base_url)) as backend:
        asyncio.run(run(backend))
