"""Would an offline offensive-language classifier help safeguarding? Measured, not guessed.

    python -m venv /tmp/apvenv && /tmp/apvenv/bin/pip install alt-profanity-check pyyaml
    PYTHONPATH=. /tmp/apvenv/bin/python scripts/compare_profanity_classifier.py [--threshold 0.5]

Runs `alt-profanity-check` (a linear model shipped inside the package, no download) on every
message of data/safeguarding_eval.yaml and prints, for the configured patterns alone and for
patterns OR classifier: recall on `abusive`, and the share of ordinary messages and of
disclosures that would count as abusive (a disclosure counted as abuse moves a child towards
silence). Not a dependency of the project: docs/performance.md says why.
"""

from __future__ import annotations

import argparse

from evaluation.safeguarding_eval import ORDINARY, load_items
from tutorkit.safeguarding import ABUSIVE, load_safeguard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--data", default="data/safeguarding_eval.yaml")
    parser.add_argument("--safeguarding_config", default="configs/safeguarding.yaml")
    args = parser.parse_args()
    from profanity_check import predict_prob

    safeguard = load_safeguard(args.safeguarding_config)
    items = load_items(args.data, {*safeguard.config.disclosures, ABUSIVE, ORDINARY})
    patterns = [safeguard.assess(it.messages[-1]).abusive for it in items]
    model = [p >= args.threshold for p in predict_prob([it.messages[-1] for it in items])]
    groups = {"abusive (recall)": ABUSIVE, "ordinary counted abusive": ORDINARY, "disclosures counted abusive": None}
    print(f"threshold {args.threshold}; {len(items)} messages")
    print(f"{'':32} {'patterns':>10} {'classifier':>11} {'either':>8}")
    for title, label in groups.items():
        idx = [i for i, it in enumerate(items) if (it.label == label if label else it.label not in (ABUSIVE, ORDINARY))]
        rate = lambda flags: sum(flags[i] for i in idx) / len(idx)  # noqa: E731
        either = [a or b for a, b in zip(patterns, model)]
        print(f"{title:32} {rate(patterns):>10.1%} {rate(model):>11.1%} {rate(either):>8.1%}   (n={len(idx)})")
    for i, it in enumerate(items):
        if model[i] and it.label != ABUSIVE:
            print(f"  classifier flags {it.label}: {it.messages[-1]!r}")


if __name__ == "__main__":
    main()
