"""Quality gates: every synthesized conversation passes all of them or is rejected with a reason
that report.json counts: structure, empty_turn, role_leakage, persona_break, too_short, too_long,
probe_text (a student line holding an evaluation probe's words: `tim eval` refuses such a dataset)
(`check`), near_duplicate (`NearDuplicates`: MinHash LSH, datasketch, over word 3-grams of the
whole conversation); transcript mode adds transcript_unparsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tutorkit import TimError
from tutorkit.conversation import validate_messages
from tutorkit.exemplars import leaks
from tutorkit.speakers import introduced_names, is_named_speaker_line, is_speaker_line


@dataclass
class GateLimits:
    tutor_name: str
    min_tim_turns: int
    tim_min_words: int
    tim_max_words: int
    student_max_words: int
    persona_break_patterns: list[str]
    probe_texts: dict[str, list[str]] = field(default_factory=dict)  # probe id -> its student messages


def check(messages: list[dict], limits: GateLimits, silent_from: int | None) -> str | None:
    """The first gate the conversation fails, or None."""
    try:
        validate_messages(messages, "conversation")
    except TimError:
        return "structure"
    turns = [m for m in messages if m["role"] != "system"]
    tim_turns = [m for m in turns if m["role"] == "assistant"]
    if turns[-1]["role"] != "assistant" or len(tim_turns) < limits.min_tim_turns:
        return "structure"
    for number, m in enumerate(tim_turns, 1):
        silence_allowed = silent_from is not None and number >= silent_from
        if not m["content"].strip() and not silence_allowed:
            return "empty_turn"
    if any(not m["content"].strip() for m in turns if m["role"] == "user"):
        return "empty_turn"
    for m in turns:
        lines = m["content"].splitlines()
        if any(is_speaker_line(line, limits.tutor_name) or is_named_speaker_line(line) for line in lines):
            return "role_leakage"
        # The student claiming to be the tutor is the two voices mixed up.
        if m["role"] == "user" and (limits.tutor_name in introduced_names(m["content"]) or "your tutor" in m["content"].lower()):
            return "role_leakage"
    breaks = [re.compile(p, re.I) for p in limits.persona_break_patterns]
    for m in tim_turns:
        if any(b.search(m["content"]) for b in breaks) or introduced_names(m["content"]) - {limits.tutor_name}:
            return "persona_break"
    for m in tim_turns:
        words = len(m["content"].split())
        if m["content"] and words < limits.tim_min_words:
            return "too_short"
        if words > limits.tim_max_words:
            return "too_long"
    if any(len(m["content"].split()) > limits.student_max_words for m in turns if m["role"] == "user"):
        return "too_long"
    if leaks(limits.probe_texts, (m["content"] for m in turns if m["role"] == "user")):
        return "probe_text"
    return None


class NearDuplicates:
    """Remembers accepted conversations; `seen` is true for one too similar to an earlier one."""

    def __init__(self, threshold: float, num_perm: int = 64):
        from datasketch import MinHashLSH  # here: it loads scipy (0.5 s), which only synthesis needs

        self.num_perm = num_perm
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)

    def _minhash(self, messages: list[dict]):
        from datasketch import MinHash

        words = " ".join(m["content"] for m in messages if m["role"] != "system").lower().split()
        shingles = {" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))}
        mh = MinHash(num_perm=self.num_perm)
        for s in shingles:
            mh.update(s.encode())
        return mh

    def seen(self, messages: list[dict]) -> bool:
        return bool(self.lsh.query(self._minhash(messages)))

    def add(self, key: str, messages: list[dict]) -> None:
        if key not in self.lsh:
            self.lsh.insert(key, self._minhash(messages))
