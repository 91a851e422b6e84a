"""Which safeguarding layer to ship: phrase patterns alone, a plain logistic regression on word
n-grams, and each trained guard (tutorkit/guard.py), each alone and with the patterns, on the dev
split (where the choice is made) and the frozen test split (reported, never chosen on).

    .venv/bin/python scripts/compare_guards.py --guards runs/guard-frozen models/tim-guard [--config configs/guard.yaml]

Every learned layer gets its tier thresholds chosen on dev the way `tim guard train` chooses them
(urgent: <= 1 % of ordinary messages urgent; concern: >= 90 % of concern messages flagged). The n-gram regression (torch, one output per category) learns from the same training
split as the guards: word unigrams and bigrams of the normalised message, and of its earlier
messages as separate features. Writes the table to --out (markdown) and prints it.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

from evaluation.safeguarding_tiers import COLUMNS
from train.guard import GuardTrainConfig, choose_thresholds, load_splits
from tutorkit.config import load_dataclass
from tutorkit.guard import Guard
from tutorkit.safeguarding import load_safeguard, normalize
from tutorkit.safeguarding_data import CATEGORIES, load_labelled, outcomes, tier_of
from tutorkit.stats import rate_interval


def ngrams(chat) -> set[str]:
    out = set()
    for prefix, text in (("", chat[-1]), ("c:", " ".join(chat[:-1]))):
        w = re.sub(r"[^a-z0-9' ]+", " ", normalize(text)).split()
        out |= {prefix + x for x in w} | {f"{prefix}{a} {b}" for a, b in zip(w, w[1:])}
    return out


def ngram_scores(train, others: list[list]) -> list[list[dict]]:
    """Fit on `train` (features seen at least twice), score each list in `others`."""
    counts: dict[str, int] = {}
    rows = [ngrams(it.chat) for it in train]
    for r in rows:
        for f in r:
            counts[f] = counts.get(f, 0) + 1
    vocab = {f: i for i, f in enumerate(sorted(f for f, n in counts.items() if n >= 2))}

    def matrix(feature_rows):
        x = torch.zeros(len(feature_rows), len(vocab))
        for r, feats in enumerate(feature_rows):
            x[r, [vocab[f] for f in feats if f in vocab]] = 1.0
        return x

    x, y = matrix(rows), torch.tensor([[float(c in it.labels) for c in CATEGORIES] for it in train])
    model = torch.nn.Linear(len(vocab), len(CATEGORIES))
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y) + 1e-4 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return [[dict(zip(CATEGORIES, p)) for p in torch.sigmoid(model(matrix([ngrams(it.chat) for it in items]))).tolist()]
                for items in others]  # fmt: skip


def row(items, tiers: list[str]) -> list[str]:
    cells = []
    counted = outcomes(items, tiers)
    for key in COLUMNS:
        v = counted[key]
        low, high = rate_interval(v)
        cells.append(f"{sum(v) / len(v):.1%} ({low:.0%}-{high:.0%})")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guards", nargs="*", default=[], help="trained guard directories")
    parser.add_argument("--config", default="configs/guard.yaml", help="the guards' training config (its split)")
    parser.add_argument("--safeguarding_config", default="configs/safeguarding.yaml")
    parser.add_argument("--out", default="runs/compare_guards.md")
    args = parser.parse_args()

    cfg = load_dataclass(GuardTrainConfig, args.config)
    train, dev, dropped = load_splits(cfg)
    test = load_labelled(cfg.test_file)
    patterns = load_safeguard(args.safeguarding_config, with_guard=False)
    pattern_tiers = {name: [patterns.decide(list(it.chat[:-1]), it.chat[-1]).tier for it in items]
                     for name, items in (("dev", dev), ("test", test))}  # fmt: skip
    learned = {}
    started = time.monotonic()
    learned["n-gram regression"] = ngram_scores(train, [dev, test])
    print(f"n-gram regression: {time.monotonic() - started:.0f} s", file=sys.stderr)
    for directory in args.guards:
        guard = Guard(directory)
        learned[f"guard {directory}"] = [guard.scores_many([it.chat for it in items]) for items in (dev, test)]
        print(f"guard {directory} scored", file=sys.stderr)

    lines = [f"# Safeguarding layers: dev ({len(dev)} items, chooses) and frozen test ({len(test)}, reports)", "",
             f"Train {len(train)} items; {len(dropped)} left out as twins of the test split. Learned layers' "
             "thresholds chosen on dev (urgent: <= 1 % of ordinary messages urgent; concern: >= 90 % of concern "
             "messages flagged). Rates with 95 % intervals.", "",
             "| layer | thresholds | " + " | ".join(f"{split} {c}" for split in ("dev", "test") for c in COLUMNS.values()) + " |",
             "|---" * (2 + 2 * len(COLUMNS)) + "|"]  # fmt: skip
    rank = {"none": 0, "concern": 1, "urgent": 2}
    lines.append("| patterns | - | " + " | ".join(row(dev, pattern_tiers["dev"]) + row(test, pattern_tiers["test"])) + " |")
    for name, (dev_scores, test_scores) in learned.items():
        urgent, concern = choose_thresholds(dev, dev_scores, cfg.urgent_false_flags, cfg.concern_recall)
        alone = {split: [tier_of(s, urgent, concern)[0] for s in scores]
                 for split, scores in (("dev", dev_scores), ("test", test_scores))}  # fmt: skip
        for label, tiers in ((name, alone), (f"patterns + {name}", {
                split: [max(a, b, key=rank.get) for a, b in zip(alone[split], pattern_tiers[split])] for split in alone})):
            lines.append(f"| {label} | {urgent:.3f} / {concern:.3f} | "
                         + " | ".join(row(dev, tiers["dev"]) + row(test, tiers["test"])) + " |")  # fmt: skip
    table = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
