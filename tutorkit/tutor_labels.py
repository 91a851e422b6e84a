"""Tutor replies labelled by people: MRBench and the BEA 2025 shared task's dev set
(data/external/mrbench/, CC BY-SA 4.0), read for `tim eval --human_labels` (the rule checks
against people) and `tim judge train` (a small judge learned from them).

Each dialogue is a maths problem where the student went wrong, followed by candidate next tutor
turns from models and people, each labelled per dimension. Dialogues fall in two halves by a hash
of their history (`split`): `dev` trains and tunes, `test` is reported.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from tutorkit import TimError


@dataclass
class LabelledReply:
    dialogue: str  # the conversation history, as the file gives it
    tutor: str  # who wrote the reply (a model's name, Expert, Novice)
    reply: str
    labels: dict[str, str]  # dimension -> the annotators' label
    solution: str = ""  # MathDial's ground-truth solution ("" for Bridge)

    @property
    def split(self) -> str:
        return "dev" if hashlib.sha256(self.dialogue.strip().encode()).digest()[0] % 2 == 0 else "test"

    def turns(self) -> list[tuple[str, str]]:
        """(speaker, text) of the history: "Tutor: ..." and "Student: ..." lines."""
        out: list[tuple[str, str]] = []
        for line in self.dialogue.replace("\xa0", " ").splitlines():
            m = re.match(r"\s*(Tutor|Student|Teacher)\s*:\s*(.*)", line)
            if m:
                out.append(("student" if m.group(1) == "Student" else "tutor", m.group(2).strip()))
            elif out and line.strip():
                out[-1] = (out[-1][0], f"{out[-1][1]} {line.strip()}")
        return out

    def answer(self) -> str | None:
        numbers = re.findall(r"\d[\d,]*(?:\.\d+)?", self.solution)
        return numbers[-1].replace(",", "") if numbers else None


def read_labelled(path: str | Path) -> list[LabelledReply]:
    """MRBench (`anno_llm_responses`) or the BEA 2025 dev set (`tutor_responses`): a JSON list of
    dialogues, each with its tutors' replies and their annotations."""
    path = Path(path)
    try:
        dialogues = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TimError(f"human_labels: cannot read {path} ({e.__class__.__name__}: {e})") from None
    if not isinstance(dialogues, list):
        raise TimError(f"human_labels: {path} is not a JSON list of dialogues")
    out = []
    for i, d in enumerate(dialogues):
        replies = d.get("anno_llm_responses") or d.get("tutor_responses") if isinstance(d, dict) else None
        if not isinstance(replies, dict) or not isinstance(d.get("conversation_history"), str):
            raise TimError(f"human_labels: {path}: dialogue {i} has no conversation_history and "
                           "anno_llm_responses/tutor_responses")  # fmt: skip
        solution = d.get("Ground_Truth_Solution") or ""
        for tutor, r in replies.items():
            if not isinstance(r, dict) or not isinstance(r.get("response"), str) or not isinstance(r.get("annotation"), dict):
                raise TimError(f"human_labels: {path}: dialogue {i}, tutor {tutor}: needs response and annotation")
            out.append(LabelledReply(d["conversation_history"], tutor, r["response"], r["annotation"],
                                     "" if solution == "Not Available" else solution))  # fmt: skip
    return out


def lenient(label: str) -> bool:
    """Yes, "To some extent" and "Yes (...)" are yes; No is no."""
    return not label.strip().lower().startswith("no")


def last_turn(item: LabelledReply, speaker: str) -> str:
    """The history's last turn by `speaker` ("student" or "tutor"), "" if none."""
    return next((text for who, text in reversed(item.turns()) if who == speaker), "")


def merged(paths: list[str]) -> list[LabelledReply]:
    """The replies of several files, each once: a reply in two files (MRBench V1's are all in the
    BEA dev set, by history and text) keeps the labels of both (V1 alone has Revealing_of_the_Answer)."""
    out: dict[tuple[str, str], LabelledReply] = {}
    for path in paths:
        for item in read_labelled(path):
            key = (" ".join(item.dialogue.split()), " ".join(item.reply.split()))
            if key in out:
                known = out[key]
                known.labels = {**item.labels, **known.labels}
                known.solution = known.solution or item.solution
            else:
                out[key] = item
    return list(out.values())


# What the reply judge (train/judge.py) learns: its outputs and the label each one is.
JUDGE_DIMENSIONS = {
    "mistake_identification": "Mistake_Identification",
    "providing_guidance": "Providing_Guidance",
    "revealing_of_the_answer": "Revealing_of_the_Answer",
}


def judge_chat(item: LabelledReply) -> list[str]:
    """What the judge reads: the tutor's previous turn and the student's answer, then the reply."""
    return [last_turn(item, "tutor"), last_turn(item, "student"), item.reply]
