"""Train Tim Guard, the learned safeguarding classifier (tutorkit/guard.py): a LoRA adapter (PEFT)
on a sentence encoder and a linear head, multi-label over the guard's categories.

    tim guard train --config configs/guard.yaml [--key value ...]

Reads data_files (JSON Lines: tutorkit/safeguarding_data.py) and splits them by id: about one
item in `dev_every` is dev, which chooses the tier thresholds and is never trained on: urgent
(the fixed reply, staff alerted) the lowest that keeps ordinary messages reaching it to
`urgent_false_flags`; concern (Tim answers and checks in, staff review) the highest that flags
`concern_recall` of the concern categories' messages. An urgent sign the guard is less sure of
than the urgent threshold is still a concern when it reaches the concern threshold.
Items that twin an item of the frozen test split (a shared 5-word run) are left out of both;
`tim safeguarding eval` reports on that split. Writes to output_dir:
  guard.json                          what it was made from (encoder + SHA-256, data, settings),
                                      and the thresholds chosen on dev
  head.safetensors                    the head
  adapter_config.json, adapter_model.safetensors   the LoRA adapter (none with lora_r 0)
  metrics.json                        loss per epoch, dev figures at the chosen thresholds, time
Put the thresholds into configs/safeguarding.yaml (guard:) to serve with them.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from train.classifier import EncoderTrainConfig, fit
from tutorkit import TimError, run_main
from tutorkit.config import ConfigParser
from tutorkit.guard import GuardRecord
from tutorkit.model_files import file_sha256
from tutorkit.safeguarding_data import CATEGORIES, TIERS, load_labelled, outcomes, split, tier_of, twins


@dataclass
class GuardTrainConfig(EncoderTrainConfig):
    data_files: list[str] = field(default_factory=lambda: [f"data/safeguarding/team/writer-{i}.jsonl" for i in range(1, 5)],
                                  metadata={"help": "Labelled items, split into train and dev."})  # fmt: skip
    dev_every: int = field(default=5, metadata={"help": "About one item in this many (by id) is dev: chooses the "
                           "thresholds, never trained on."})
    test_file: str = field(default="data/safeguarding/test.jsonl", metadata={"help": "The frozen test split: "
                           "read only to keep its twins out of train and dev ('' = none)."})
    output_dir: str = field(default="runs/guard")
    urgent_false_flags: float = field(default=0.01, metadata={"help": "The urgent threshold is the lowest at which at "
                                      "most this share of dev's ordinary messages is urgent."})
    concern_recall: float = field(default=0.90, metadata={"help": "The concern threshold is the highest at which at "
                                  "least this share of dev's concern messages is flagged."})

    def __post_init__(self):
        super().__post_init__()
        if self.dev_every < 2:
            raise ValueError("dev_every must be >= 2")


def targets(items) -> list[list[float]]:
    return [[1.0 if c in item.labels else 0.0 for c in CATEGORIES] for item in items]


def choose_thresholds(dev, scores: list[dict], urgent_false_flags: float, concern_recall: float) -> tuple[float, float]:
    """(urgent, concern) on the dev split: the lowest urgent threshold at which at most
    `urgent_false_flags` of the ordinary messages reach the urgent tier; the highest concern
    threshold at which at least `concern_recall` of the concern categories' messages are flagged."""
    ordinary = sorted((max(s[c] for c in TIERS["urgent"]) for d, s in zip(dev, scores) if not d.labels), reverse=True)
    concern = sorted((max(s.values()) for d, s in zip(dev, scores) if set(d.labels) & set(TIERS["concern"])), reverse=True)
    if not ordinary or not concern:
        raise TimError("the dev split needs ordinary messages and concern messages to choose thresholds")
    allowed = math.floor(urgent_false_flags * len(ordinary) + 1e-9)  # ordinary messages that may reach urgent
    urgent = math.nextafter(ordinary[allowed], 2.0) if allowed < len(ordinary) else 0.0
    keep = max(1, math.ceil(concern_recall * len(concern) - 1e-9))
    return min(1.0, urgent), concern[min(keep, len(concern)) - 1]


def dev_figures(items, scores: list[dict], urgent: float, concern: float) -> dict:
    return {k: sum(v) / len(v) if v else None
            for k, v in outcomes(items, [tier_of(s, urgent, concern)[0] for s in scores]).items()}  # fmt: skip


def load_splits(cfg: GuardTrainConfig) -> tuple[list, list, dict[str, str]]:
    """(train, dev, {id left out: the test item it twins})."""
    items = [item for path in cfg.data_files for item in load_labelled(path)]
    if len({it.id for it in items}) != len(items):
        raise TimError(f"data_files: an id appears in more than one file ({', '.join(cfg.data_files)})")
    dropped = twins(items, load_labelled(cfg.test_file)) if cfg.test_file else {}
    train, dev = split([it for it in items if it.id not in dropped], cfg.dev_every)
    return train, dev, dropped


def make_parser() -> ConfigParser:
    parser = ConfigParser(GuardTrainConfig, prog="tim guard", doc=__doc__)
    parser.add_argument("action", choices=["train"])
    return parser


def main(args=None) -> dict:
    cfg, _ = make_parser().parse(args)
    train, dev, dropped = load_splits(cfg)
    print(f"tim guard train: {len(train)} training items, {len(dev)} dev items ({len(dropped)} left out as twins "
          f"of the test split), {cfg.epochs * -(-len(train) // cfg.batch_size)} steps on {cfg.encoder}"
          f"{f' with LoRA r={cfg.lora_r}' if cfg.lora_r else ' (frozen, head only)'}", file=sys.stderr, flush=True)  # fmt: skip
    fitted = fit(cfg, [it.chat for it in train], targets(train))
    dev_scores = [dict(zip(CATEGORIES, p)) for p in fitted.scores([d.chat for d in dev])]
    urgent, concern = choose_thresholds(dev, dev_scores, cfg.urgent_false_flags, cfg.concern_recall)
    figures = dev_figures(dev, dev_scores, urgent, concern)

    out = Path(cfg.output_dir)
    fitted.save(out)
    data = {"files": {path: file_sha256(Path(path)) for path in cfg.data_files}, "dev_every": cfg.dev_every,
            "train_items": len(train), "dev_items": len(dev), "test_file": cfg.test_file,
            "left_out_as_twins": dict(sorted(dropped.items()))}  # fmt: skip
    GuardRecord(encoder=cfg.encoder, encoder_sha256=file_sha256(fitted.encoder_dir / "model.safetensors"),
                categories=list(CATEGORIES), max_length=cfg.max_length, lora=fitted.lora, data=data,
                dev_thresholds={"urgent": round(urgent, 4), "concern": round(concern, 4)}).write(out)  # fmt: skip
    metrics = {"history": fitted.history, "train_seconds": fitted.seconds,
               "dev_thresholds": {"urgent": urgent, "concern": concern}, "dev": figures}  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"tim guard train: wrote {out}; thresholds chosen on dev: urgent {urgent:.3f}, concern {concern:.3f}; "
          + ", ".join(f"{k} {v:.1%}" for k, v in figures.items() if v is not None), file=sys.stderr)  # fmt: skip
    return metrics


if __name__ == "__main__":
    run_main(main)
