"""Intervals for the rates the project reports (recall, false flags, pass rates)."""

from __future__ import annotations


def rate_interval(outcomes: list[bool], resamples: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """A 95 % bootstrap interval for the share of True in `outcomes` (None if empty): the items
    resampled with replacement, which for a share is a binomial draw."""
    import numpy as np

    n = len(outcomes)
    if not n:
        return None
    rates = np.sort(np.random.default_rng(seed).binomial(n, sum(outcomes) / n, size=resamples) / n)
    return float(rates[int(0.025 * resamples)]), float(rates[min(resamples - 1, int(0.975 * resamples))])


def agreement(truth: list[bool], predicted: list[bool]) -> dict:
    """How far `predicted` agrees with `truth` (people's labels), two classes: accuracy, macro-F1
    (the mean of both classes' F1), Cohen's kappa (agreement beyond what the two label rates give
    by chance) and the confusion matrix [[true no, said yes], [true yes, said no]] as counts."""
    n = len(truth)
    tp = sum(t and p for t, p in zip(truth, predicted))
    tn = sum(not t and not p for t, p in zip(truth, predicted))
    fp = sum(not t and p for t, p in zip(truth, predicted))
    fn = n - tp - tn - fp

    def f1(hit, miss_a, miss_b):
        return 2 * hit / (2 * hit + miss_a + miss_b) if hit else 0.0

    accuracy = (tp + tn) / n if n else 0.0
    chance = ((tp + fn) * (tp + fp) + (tn + fp) * (tn + fn)) / (n * n) if n else 0.0
    kappa = (accuracy - chance) / (1 - chance) if chance < 1 else 0.0
    return {"n": n, "accuracy": accuracy, "macro_f1": (f1(tp, fp, fn) + f1(tn, fn, fp)) / 2, "kappa": kappa,
            "confusion": {"no_said_no": tn, "no_said_yes": fp, "yes_said_no": fn, "yes_said_yes": tp}}
