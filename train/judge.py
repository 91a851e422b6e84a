"""Train Tim's reply judge: where the rule checks cannot agree with people well enough (docs/evaluation.md,
"Checks against people"), a small classifier learned from people's labels judges the reply
instead: a LoRA adapter on a sentence encoder with a linear head (train/classifier.py, as Tim
Guard), one output per dimension.

    tim judge train --config configs/judge.yaml [--key value ...]

Reads label_files (MRBench and the BEA 2025 dev set: tutorkit/tutor_labels.py; a reply in both
is one row with the labels of both) and trains on the `dev` half of the dialogues only: the
`test` half is what `tim eval --human_labels FILE --judge DIR` reports on. About one dev dialogue
in `choose_every` is held out of training to choose each dimension's threshold (the one with the
best macro-F1 there). The judge reads the tutor's previous turn and the student's answer as
context, then the reply. Writes to output_dir what tim guard train writes (guard.json: what it
was made from and the thresholds; the head; the adapter; metrics.json).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from train.classifier import EncoderTrainConfig, fit
from tutorkit import TimError, run_main
from tutorkit.config import ConfigParser
from tutorkit.guard import GuardRecord
from tutorkit.model_files import file_sha256
from tutorkit.stats import agreement
from tutorkit.tutor_labels import JUDGE_DIMENSIONS as DIMENSIONS
from tutorkit.tutor_labels import LabelledReply, judge_chat, lenient, merged

MRBENCH = "data/external/mrbench"


@dataclass
class JudgeTrainConfig(EncoderTrainConfig):
    label_files: list[str] = field(default_factory=lambda: [f"{MRBENCH}/MRBench_V1.json", f"{MRBENCH}/mrbench_v3_devset.json"],
                                   metadata={"help": "People's labels (MRBench format)."})  # fmt: skip
    choose_every: int = field(default=5, metadata={"help": "About one dev dialogue in this many chooses the "
                              "thresholds and is not trained on."})
    output_dir: str = field(default="runs/judge")

    def __post_init__(self):
        super().__post_init__()
        if self.choose_every < 2:
            raise ValueError("choose_every must be >= 2")


def rows(items: list[LabelledReply]) -> tuple[list[list[float]], list[list[float]]]:
    """(targets, masks) per item: the lenient label of each dimension, and whether it has one."""
    targets = [[float(lenient(i.labels[k])) if k in i.labels else 0.0 for k in DIMENSIONS.values()] for i in items]
    masks = [[float(k in i.labels) for k in DIMENSIONS.values()] for i in items]
    return targets, masks


def choose_threshold(scores: list[float], truth: list[bool]) -> float:
    """The threshold with the best macro-F1 on (scores, truth); the lowest among equals."""
    best, best_f1 = 0.5, -1.0
    for t in sorted(set(scores)):
        f1 = agreement(truth, [s >= t for s in scores])["macro_f1"]
        if f1 > best_f1 + 1e-12:
            best, best_f1 = t, f1
    return best


def make_parser() -> ConfigParser:
    parser = ConfigParser(JudgeTrainConfig, prog="tim judge", doc=__doc__)
    parser.add_argument("action", choices=["train"])
    return parser


def main(args=None) -> dict:
    cfg, _ = make_parser().parse(args)
    items = [i for i in merged(cfg.label_files) if i.split == "dev"]
    if not items:
        raise TimError(f"label_files: no labelled replies in the dev half of {', '.join(cfg.label_files)}")

    def chooses(item):
        return hashlib.sha256(("choose:" + item.dialogue.strip()).encode()).digest()[0] % cfg.choose_every == 0

    train, choose = [i for i in items if not chooses(i)], [i for i in items if chooses(i)]
    targets, masks = rows(train)
    print(f"tim judge train: {len(train)} replies to train on, {len(choose)} to choose thresholds (the dev half of "
          f"the dialogues; the test half is never read), {cfg.epochs * -(-len(train) // cfg.batch_size)} steps on "
          f"{cfg.encoder}", file=sys.stderr, flush=True)  # fmt: skip
    fitted = fit(cfg, [judge_chat(i) for i in train], targets, masks)
    scores = fitted.scores([judge_chat(i) for i in choose])
    thresholds, figures = {}, {}
    for d, (name, key) in enumerate(DIMENSIONS.items()):
        known = [(s[d], lenient(i.labels[key])) for s, i in zip(scores, choose) if key in i.labels]
        if not known:
            raise TimError(f"label_files: no {key} labels among the replies that choose the thresholds")
        thresholds[name] = choose_threshold([s for s, _ in known], [t for _, t in known])
        figures[name] = agreement([t for _, t in known], [s >= thresholds[name] for s, _ in known])

    out = Path(cfg.output_dir)
    fitted.save(out)
    data = {"files": {p: file_sha256(Path(p)) for p in cfg.label_files}, "split": "dev half of the dialogues",
            "train_items": len(train), "choose_items": len(choose)}  # fmt: skip
    GuardRecord(encoder=cfg.encoder, encoder_sha256=file_sha256(fitted.encoder_dir / "model.safetensors"),
                categories=list(DIMENSIONS), max_length=cfg.max_length, lora=fitted.lora, data=data,
                dev_thresholds={k: round(v, 4) for k, v in thresholds.items()}).write(out)  # fmt: skip
    metrics = {"history": fitted.history, "train_seconds": fitted.seconds, "thresholds": thresholds, "choose": figures}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"tim judge train: wrote {out}; on the replies that chose the thresholds: "
          + ", ".join(f"{k} macro-F1 {v['macro_f1']:.2f}" for k, v in figures.items()), file=sys.stderr)  # fmt: skip
    return metrics


if __name__ == "__main__":
    run_main(main)
