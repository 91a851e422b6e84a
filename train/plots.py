"""loss.png from a Trainer's log history: training loss per logging step, validation loss per
eval, and optionally one more logged value on a second panel (DPO's reward margin)."""

from __future__ import annotations

import sys
from pathlib import Path


def plot_loss(log_history: list[dict], path: Path, title: str = "LoRA fine-tune",
              extra: tuple[str, str] | None = None) -> None:  # fmt: skip
    """`extra`: (log key, axis label) of a value to plot under the loss, when it was logged.
    Without matplotlib (a bare GPU box) the plot is left out, with a line saying so."""
    try:
        import matplotlib
    except ImportError:
        print(f"tim: {path.name} not written: matplotlib is not installed (metrics.json has the same figures)",
              file=sys.stderr)  # fmt: skip
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> list[tuple[int, float]]:
        return [(h["step"], h[key]) for h in log_history if key in h and "step" in h]

    train, evals = series("loss"), series("eval_loss")
    more = series(extra[0]) if extra else []
    fig, axes = plt.subplots(2 if more else 1, 1, figsize=(6, 6 if more else 3.5), dpi=100, squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot(*zip(*train), label="train", color="#3b7dd8")
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation", color="#d8703b")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (Tim's tokens)" if extra is None else "loss")
    ax.set_title(title)
    ax.legend()
    if more:
        axes[1][0].plot(*zip(*more), color="#3b7dd8")
        axes[1][0].set_xlabel("step")
        axes[1][0].set_ylabel(extra[1])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
