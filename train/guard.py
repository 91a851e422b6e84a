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
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tutorkit import TimError, run_main
from tutorkit.config import ConfigParser
from tutorkit.guard import HEAD, GuardRecord, build_net, tokenize
from tutorkit.model_files import file_sha256
from tutorkit.safeguarding_data import CATEGORIES, TIERS, load_labelled, outcomes, split, tier_of, twins


@dataclass
class GuardTrainConfig:
    encoder: str = field(default="embedded-minilm", metadata={"help": "'embedded-minilm' or an encoder directory."})
    data_files: list[str] = field(default_factory=lambda: [f"data/safeguarding/team/writer-{i}.jsonl" for i in range(1, 5)],
                                  metadata={"help": "Labelled items, split into train and dev."})  # fmt: skip
    dev_every: int = field(default=5, metadata={"help": "About one item in this many (by id) is dev: chooses the "
                           "thresholds, never trained on."})
    test_file: str = field(default="data/safeguarding/test.jsonl", metadata={"help": "The frozen test split: "
                           "read only to keep its twins out of train and dev ('' = none)."})
    output_dir: str = field(default="runs/guard")
    lora_r: int = field(default=16, metadata={"help": "LoRA rank; 0 = the encoder frozen, the head alone trained."})
    lora_alpha: int = field(default=32)
    lora_dropout: float = field(default=0.1)
    lora_target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"],
                                           metadata={"help": "Layers given LoRA (BERT's names; a Llama-style "
                                                     "model: q_proj k_proj v_proj o_proj ...)."})  # fmt: skip
    epochs: int = field(default=5)
    batch_size: int = field(default=16)
    learning_rate: float = field(default=5e-4, metadata={"help": "The adapter's."})
    head_learning_rate: float = field(default=3e-3)
    max_length: int = field(default=128, metadata={"help": "Tokens of message + context (the context is cut first)."})
    seed: int = field(default=0)
    urgent_false_flags: float = field(default=0.01, metadata={"help": "The urgent threshold is the lowest at which at "
                                      "most this share of dev's ordinary messages is urgent."})
    concern_recall: float = field(default=0.90, metadata={"help": "The concern threshold is the highest at which at "
                                  "least this share of dev's concern messages is flagged."})
    threads: int = field(default=0, metadata={"help": "torch threads; 0 = torch's default."})

    def __post_init__(self):
        if self.lora_r < 0 or self.epochs < 1 or self.batch_size < 1 or self.max_length < 8 or self.dev_every < 2:
            raise ValueError("lora_r must be >= 0, epochs and batch_size >= 1, max_length >= 8, dev_every >= 2")


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
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    from tutorkit.model_files import resolve_model

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    train, dev, dropped = load_splits(cfg)
    encoder_dir = resolve_model(cfg.encoder)
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    encoder = AutoModel.from_pretrained(str(encoder_dir), dtype=torch.float32)
    lora = None
    if cfg.lora_r:
        from peft import LoraConfig, get_peft_model

        lora = {"r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout,
                "target_modules": cfg.lora_target_modules}  # fmt: skip
        encoder = get_peft_model(encoder, LoraConfig(**lora))
    else:
        encoder.requires_grad_(False)
    net = build_net(encoder, len(CATEGORIES))
    groups = [{"params": net.head.parameters(), "lr": cfg.head_learning_rate}]
    if lora:
        groups.append({"params": [p for p in encoder.parameters() if p.requires_grad], "lr": cfg.learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    steps = cfg.epochs * -(-len(train) // cfg.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups], total_steps=steps,
                                                   pct_start=0.1)  # fmt: skip
    labels = torch.tensor(targets(train))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    started, history, step = time.monotonic(), [], 0
    print(f"tim guard train: {len(train)} training items, {len(dev)} dev items ({len(dropped)} left out as twins "
          f"of the test split), {steps} steps on {cfg.encoder}"
          f"{f' with LoRA r={cfg.lora_r}' if lora else ' (frozen, head only)'}", file=sys.stderr, flush=True)  # fmt: skip
    for epoch in range(cfg.epochs):
        net.train()
        order = list(range(len(train)))
        random.shuffle(order)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            inputs = tokenize(tokenizer, [train[i].chat for i in batch], cfg.max_length)
            loss = loss_fn(net(**inputs), labels[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            total += loss.item() * len(batch)
            step += 1
            if step % 50 == 0 or step == steps:
                elapsed = time.monotonic() - started
                print(f"  step {step}/{steps}  loss {loss.item():.4f}  {elapsed:.0f} s, about "
                      f"{elapsed / step * (steps - step):.0f} s left", file=sys.stderr, flush=True)  # fmt: skip
        history.append({"epoch": epoch + 1, "loss": total / len(train)})

    net.eval()
    with torch.inference_mode():
        dev_scores = []
        for start in range(0, len(dev), 64):
            probs = torch.sigmoid(net(**tokenize(tokenizer, [d.chat for d in dev[start : start + 64]], cfg.max_length)))
            dev_scores += [dict(zip(CATEGORIES, p)) for p in probs.tolist()]
    urgent, concern = choose_thresholds(dev, dev_scores, cfg.urgent_false_flags, cfg.concern_recall)
    figures = dev_figures(dev, dev_scores, urgent, concern)

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if lora:
        encoder.save_pretrained(str(out))
    save_file({k: v.contiguous() for k, v in net.head.state_dict().items()}, str(out / HEAD))
    data = {"files": {path: file_sha256(Path(path)) for path in cfg.data_files}, "dev_every": cfg.dev_every,
            "train_items": len(train), "dev_items": len(dev), "test_file": cfg.test_file,
            "left_out_as_twins": dict(sorted(dropped.items()))}  # fmt: skip
    GuardRecord(encoder=cfg.encoder, encoder_sha256=file_sha256(encoder_dir / "model.safetensors"),
                categories=list(CATEGORIES), max_length=cfg.max_length, lora=lora, data=data,
                dev_thresholds={"urgent": round(urgent, 4), "concern": round(concern, 4)}).write(out)  # fmt: skip
    metrics = {"history": history, "train_seconds": round(time.monotonic() - started, 1),
               "dev_thresholds": {"urgent": urgent, "concern": concern}, "dev": figures}  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"tim guard train: wrote {out}; thresholds chosen on dev: urgent {urgent:.3f}, concern {concern:.3f}; "
          + ", ".join(f"{k} {v:.1%}" for k, v in figures.items() if v is not None), file=sys.stderr)  # fmt: skip
    return metrics


if __name__ == "__main__":
    run_main(main)
