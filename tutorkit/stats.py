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
