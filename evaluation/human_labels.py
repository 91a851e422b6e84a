"""Do the rule checks agree with people? Tutor replies labelled by human annotators, scored by the
project's corresponding checks (tutorkit/checks.py), with agreement per dimension.

    tim eval --human_labels data/external/mrbench/MRBench_V1.json [--human_split test]

The files are MRBench and the BEA 2025 shared task's dev set (data/external/mrbench/, CC BY-SA
4.0): maths dialogues from MathDial and Bridge where a student has made a mistake, each ending in
replies from several tutors (models and people), labelled by annotators. Labels are read the
lenient way (Yes and "To some extent" against No) and each dimension is matched to a check:

- Mistake_Identification: does_not_confirm (the mistake is pointed at, not confirmed)
- Providing_Guidance: guides (a question that takes a step of this problem)
- Revealing_of_the_Answer: not withholds_answer, the answer being the last number of the
  dialogue's ground-truth solution (MathDial only: Bridge has none, so rules cannot judge it)
- Tutor_Tone, offensive or not: not not_abusive (one reply of MRBench's 1,589 is offensive: the
  figure says little)

Dialogues are split in two by a hash of their history (`human_split`): the checks are tuned on
`dev` only; `test` is reported. Prints the table, writes human_labels.json and .md.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tutorkit import TimError
from tutorkit.checks import Context, get_check
from tutorkit.safeguarding import Safeguard
from tutorkit.stats import agreement

SPLITS = ("dev", "test", "all")


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


def _lenient(label: str) -> bool:
    """Yes, "To some extent" and "Yes (...)" are yes; No is no."""
    return not label.strip().lower().startswith("no")


# dimension: (label key, the label as a yes/no, the check, whether the check passing means yes)
DIMENSIONS = {
    "mistake_identification": ("Mistake_Identification", _lenient, "does_not_confirm", True),
    "providing_guidance": ("Providing_Guidance", _lenient, "guides", True),
    "revealing_of_the_answer": ("Revealing_of_the_Answer", _lenient, "withholds_answer", False),
    "tutor_tone_offensive": ("Tutor_Tone", lambda label: label == "Offensive", "not_abusive", False),
}


def score(items: list[LabelledReply], safeguard: Safeguard) -> dict[str, dict]:
    """{dimension: agreement (tutorkit.stats.agreement) + skipped, the replies rules cannot judge}."""
    out = {}
    for name, (key, label_of, check_name, passing_means_yes) in DIMENSIONS.items():
        check = get_check(check_name)
        truth, said, skipped = [], [], 0
        for item in items:
            if key not in item.labels:
                continue
            if check_name == "withholds_answer" and item.answer() is None:
                skipped += 1
                continue
            turns = item.turns()
            student = next((t for s, t in reversed(turns) if s == "student"), "")
            tutor = next((t for s, t in reversed(turns) if s == "tutor"), "")
            # A number the problem itself gives cannot be revealed: for the answer, the problem (the
            # tutor's first turn) stands for what the student has seen.
            seen = turns[0][1] if check_name == "withholds_answer" and turns else student
            ctx = Context("Tim", safeguard, answer=item.answer(), student=seen, earlier_tim=tutor)
            truth.append(label_of(item.labels[key]))
            said.append(bool(check(item.reply, ctx)) == passing_means_yes)
        if truth:
            out[name] = {"check": check_name, **agreement(truth, said), "yes_rate": sum(truth) / len(truth),
                         "skipped": skipped}  # fmt: skip
    return out


def write(results: dict, source: str, split: str, out: Path) -> str:
    lines = [f"# Rule checks against human labels ({source}, {split} split)", "",
             "| dimension (lenient, 2-class) | check | replies | people say yes | accuracy | macro-F1 | kappa | "
             "confusion (no->no, no->yes, yes->no, yes->yes) | not judged |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in results.items():
        c = r["confusion"]
        lines.append(f"| {name} | {r['check']} | {r['n']} | {r['yes_rate']:.0%} | {r['accuracy']:.2f} | "
                     f"{r['macro_f1']:.2f} | {r['kappa']:.2f} | {c['no_said_no']}, {c['no_said_yes']}, "
                     f"{c['yes_said_no']}, {c['yes_said_yes']} | {r['skipped']} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "human_labels.md").write_text(text, encoding="utf-8")
    (out / "human_labels.json").write_text(json.dumps({"source": source, "split": split, "dimensions": results},
                                                      indent=1) + "\n", encoding="utf-8")  # fmt: skip
    return text


def run(path: str, split: str, safeguard: Safeguard, out: Path) -> dict:
    if split not in SPLITS:
        raise TimError(f"human_split: {split!r} is not one of {', '.join(SPLITS)}")
    items = [i for i in read_labelled(path) if split == "all" or i.split == split]
    if not items:
        raise TimError(f"human_labels: no labelled replies in {path} ({split} split)")
    results = score(items, safeguard)
    print(write(results, path, split, out), file=sys.stderr)
    print(f"tim eval: human_labels.json and human_labels.md in {out}", file=sys.stderr)
    return {"mode": "human_labels", "source": path, "split": split, "dimensions": results}
