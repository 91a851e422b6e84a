"""loss.png from a Trainer's log history: training loss per logging step, validation loss per eval."""

from __future__ import annotations

from pathlib import Path


def plot_loss(log_history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train", color="#3b7dd8")
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation", color="#d8703b")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (Tim's tokens)")
    ax.set_title("LoRA fine-tune")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
