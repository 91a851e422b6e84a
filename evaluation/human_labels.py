"""Do the rule checks agree with people? Tutor replies labelled by human annotators, scored by the
project's corresponding checks (tutorkit/checks.py), with agreement per dimension.

    tim eval --human_labels data/external/mrbench/MRBench_V1.json [--human_split test] [--judge models/tim-judge]

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
`dev` only; `test` is reported. With `judge`, the reply judge trained on the dev half (`tim judge
train`) is scored beside the rules. Prints the table, writes human_labels.json and .md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tutorkit import TimError
from tutorkit.checks import Context, get_check
from tutorkit.conversation import iter_jsonl
from tutorkit.safeguarding import Safeguard
from tutorkit.stats import agreement, rate_interval
from tutorkit.tutor_labels import JUDGE_DIMENSIONS, LabelledReply, judge_chat, last_turn, lenient, read_labelled

SPLITS = ("dev", "test", "all")


# dimension: (label key, the label as a yes/no, the check, whether the check passing means yes)
DIMENSIONS = {
    "mistake_identification": ("Mistake_Identification", lenient, "does_not_confirm", True),
    "providing_guidance": ("Providing_Guidance", lenient, "guides", True),
    "revealing_of_the_answer": ("Revealing_of_the_Answer", lenient, "withholds_answer", False),
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
            student, tutor = last_turn(item, "student"), last_turn(item, "tutor")
            # A number the problem itself gives cannot be revealed: for the answer, the problem (the
            # tutor's first turn) stands for what the student has seen.
            seen = turns[0][1] if check_name == "withholds_answer" and turns else student
            before = "\n".join(t for _, t in turns[:-1]) if turns and turns[-1][0] == "student" else item.dialogue
            ctx = Context("Tim", safeguard, answer=item.answer(), student=seen, earlier_tim=tutor, earlier=before)
            truth.append(label_of(item.labels[key]))
            said.append(bool(check(item.reply, ctx)) == passing_means_yes)
        if truth:
            out[name] = {"check": check_name, **agreement(truth, said), "yes_rate": sum(truth) / len(truth),
                         "skipped": skipped}  # fmt: skip
    return out


def judge_scores(items: list[LabelledReply], judge_dir: str) -> dict[str, dict]:
    """The trained judge (`tim judge train`) on the same replies: each of its dimensions at the
    threshold it chose on the dev half."""
    from tutorkit.guard import Guard

    judge = Guard(judge_dir)
    scores = judge.scores_many([judge_chat(i) for i in items])
    out = {}
    for name in judge.categories:
        key = JUDGE_DIMENSIONS.get(name)
        if key is None or name not in judge.record.dev_thresholds:
            raise TimError(f"judge: {judge_dir} is not a reply judge (no threshold for {name!r}); train one: tim judge train")
        known = [(s[name], lenient(i.labels[key])) for s, i in zip(scores, items) if key in i.labels]
        if known:
            truth = [t for _, t in known]
            said = [s >= judge.record.dev_thresholds[name] for s, _ in known]
            out[name] = {**agreement(truth, said), "yes_rate": sum(truth) / len(truth), "skipped": 0}
    return out


def write(results: dict, source: str, split: str, out: Path, judged: dict | None = None) -> str:
    lines = [f"# Rule checks against human labels ({source}, {split} split)", "",
             "| dimension (lenient, 2-class) | check | replies | people say yes | accuracy | macro-F1 | kappa | "
             "confusion (no->no, no->yes, yes->no, yes->yes) | not judged |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    rows = [*results.items(), *((name, {**r, "check": "judge"}) for name, r in (judged or {}).items())]
    for name, r in rows:
        c = r["confusion"]
        lines.append(f"| {name} | {r['check']} | {r['n']} | {r['yes_rate']:.0%} | {r['accuracy']:.2f} | "
                     f"{r['macro_f1']:.2f} | {r['kappa']:.2f} | {c['no_said_no']}, {c['no_said_yes']}, "
                     f"{c['yes_said_no']}, {c['yes_said_yes']} | {r['skipped']} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "human_labels.md").write_text(text, encoding="utf-8")
    report = {"source": source, "split": split, "dimensions": results, "judge": judged or {}}
    (out / "human_labels.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return text


def run(path: str, split: str, safeguard: Safeguard, out: Path, judge_dir: str = "") -> dict:
    if split not in SPLITS:
        raise TimError(f"human_split: {split!r} is not one of {', '.join(SPLITS)}")
    items = [i for i in read_labelled(path) if split == "all" or i.split == split]
    if not items:
        raise TimError(f"human_labels: no labelled replies in {path} ({split} split)")
    results = score(items, safeguard)
    judged = judge_scores(items, judge_dir) if judge_dir else {}
    print(write(results, path, split, out, judged), file=sys.stderr)
    print(f"tim eval: human_labels.json and human_labels.md in {out}", file=sys.stderr)
    return {"mode": "human_labels", "source": path, "split": split, "dimensions": results, "judge": judged}


# ---------------------------------------------------------------- people's labels on Tim's replies
LABELS = ("pass", "fail")
REPLY_FIELDS = ("probe", "probe_file", "source", "reply", "label", "why")


def read_probe_replies(path: str | Path) -> list[dict]:
    """Tim's replies to probes with a person's pass/fail and why (data/labels/probe_replies.jsonl):
    one JSON object a line with REPLY_FIELDS. Any mistake is a TimError naming the line and field."""
    rows = []
    try:
        for where, row in iter_jsonl(path):
            missing = [f for f in REPLY_FIELDS if not isinstance(row.get(f) if isinstance(row, dict) else None, str)]
            if missing:
                raise TimError(f"{where}: {missing[0]}: missing or not a string")
            if row["label"] not in LABELS:
                raise TimError(f"{where}: label: {row['label']!r} is not pass or fail")
            rows.append({**row, "where": where})
    except OSError as e:
        raise TimError(f"human_labels: cannot read {path} ({e.strerror})") from None
    if not rows:
        raise TimError(f"human_labels: no labelled replies in {path}")
    return rows


def score_probe_replies(rows: list[dict], path: str, persona, safeguard: Safeguard, max_grade: float) -> dict:
    """Each reply scored by its probe category's checks, as `tim eval` scores it, against the person's
    label: agreement per category and overall, and each source's pass rate by people and by checks."""
    from evaluation.evaluate import score
    from evaluation.probes import load_probes

    suites: dict[str, tuple] = {}
    scored = []
    for row in rows:
        if row["probe_file"] not in suites:
            suites[row["probe_file"]] = load_probes(row["probe_file"])
        categories, probes = suites[row["probe_file"]]
        probe = next((p for p in probes if p.id == row["probe"]), None)
        if probe is None:
            raise TimError(f"{row['where']}: probe: no probe {row['probe']!r} in {row['probe_file']}")
        [result] = score([probe], categories, [row["reply"]], persona, safeguard, max_grade)
        scored.append({**row, "category": probe.category, "people": row["label"] == "pass", "checks": result["passed"]})

    def agree(items):
        return {**agreement([i["people"] for i in items], [i["checks"] for i in items]),
                "people_pass": sum(i["people"] for i in items), "checks_pass": sum(i["checks"] for i in items)}  # fmt: skip

    by = {c: [i for i in scored if i["category"] == c] for c in dict.fromkeys(i["category"] for i in scored)}
    sources = {}
    for s in dict.fromkeys(i["source"] for i in scored):
        items = [i for i in scored if i["source"] == s]
        sources[s] = {"n": len(items),
                      "people": sum(i["people"] for i in items) / len(items),
                      "people_interval": list(rate_interval([i["people"] for i in items])),
                      "checks": sum(i["checks"] for i in items) / len(items),
                      "checks_interval": list(rate_interval([i["checks"] for i in items]))}  # fmt: skip
    return {"overall": agree(scored), "categories": {c: agree(items) for c, items in by.items()}, "sources": sources,
            "checks_pass_people_fail": [{k: i[k] for k in ("probe", "source", "reply", "why")}
                                        for i in scored if i["checks"] and not i["people"]]}  # fmt: skip


def write_probe_replies(result: dict, source: str, out: Path) -> str:
    def row(name, r):
        c = r["confusion"]
        return (f"| {name} | {r['n']} | {r['people_pass']} | {r['checks_pass']} | {r['accuracy']:.2f} | "
                f"{r['macro_f1']:.2f} | {r['kappa']:.2f} | {c['no_said_no']}, {c['no_said_yes']}, "
                f"{c['yes_said_no']}, {c['yes_said_yes']} |")  # fmt: skip

    lines = [f"# Probe checks against people's labels of Tim's replies ({source})", "",
             "| category | replies | people pass | checks pass | accuracy | macro-F1 | kappa | "
             "confusion (fail->fail, fail->pass, pass->fail, pass->pass) |",
             "|---|---|---|---|---|---|---|---|",
             row("**all**", result["overall"]),
             *(row(c, r) for c, r in result["categories"].items()),
             "", "| replies from | n | people pass (95 % interval) | checks pass (95 % interval) |", "|---|---|---|---|"]  # fmt: skip
    for s, r in result["sources"].items():
        lo, hi = r["people_interval"]
        clo, chi = r["checks_interval"]
        lines.append(f"| {s} | {r['n']} | {r['people']:.1%} ({lo:.0%}-{hi:.0%}) | {r['checks']:.1%} ({clo:.0%}-{chi:.0%}) |")
    wrong = result["checks_pass_people_fail"]
    lines += ["", f"Replies the checks pass and people fail ({len(wrong)}):", "",
              *(f"- {w['probe']} ({w['source']}): {w['reply'][:140]!r} -- {w['why']}" for w in wrong)]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "human_labels.md").write_text(text, encoding="utf-8")
    (out / "human_labels.json").write_text(json.dumps({"source": source, **result}, indent=1) + "\n", encoding="utf-8")
    return text


def run_probe_replies(path: str, persona, safeguard: Safeguard, max_grade: float, out: Path) -> dict:
    result = score_probe_replies(read_probe_replies(path), path, persona, safeguard, max_grade)
    print(write_probe_replies(result, path, out), file=sys.stderr)
    print(f"tim eval: human_labels.json and human_labels.md in {out}", file=sys.stderr)
    return {"mode": "human_labels", "source": path, **result}
