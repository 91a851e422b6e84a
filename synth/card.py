"""The dataset card: README.md beside train/validation.jsonl, with counts and two histograms."""

from __future__ import annotations

from pathlib import Path


def _histogram(path: Path, values: list[int], title: str, xlabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.hist(values, bins=min(30, max(1, len(set(values)))), color="#3b7dd8", edgecolor="white")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _best_of_n(stats: dict) -> list[str]:
    """The best-of-n section: per check, how often the first sample passed and the kept one did."""
    if stats["candidates"] <= 1:
        return []
    pairs = stats["preference_pairs"]
    return [
        "## Best of n Tim turns",
        "",
        f"Each Tim turn was chosen from {stats['candidates']} candidates by the rule checks of `turn_checks` "
        f"({stats['scored_turns']} scored turns). Preference pairs (best vs worst where they differ): "
        f"{pairs['train']} in preferences.jsonl, {pairs['validation']} in preferences_validation.jsonl.",
        "",
        "| check | first sample passed | kept turn passed |",
        "|---|---|---|",
        *(f"| {name} | {r['first']:.0%} | {r['kept']:.0%} |" for name, r in sorted(stats["checks_first_vs_kept"].items())),
        "",
    ]


def _exemplars(stats: dict) -> list[str]:
    if not stats["in_prompt"] and not stats["rows_in_train"]:
        return ["No gold exemplars were used.", ""]
    return [f"Gold exemplars ({stats['file']}, {stats['count']} conversations written for the project): "
            f"{stats['in_prompt']} of the conversation's category shown to Tim and to the student simulator "
            f"in their prompts; {stats['rows_in_train']} exemplar rows in train.jsonl (counted above).", ""]  # fmt: skip


def write_card(out: Path, report: dict, accepted: list[dict]) -> None:
    turns = [sum(1 for m in r["messages"] if m["role"] != "system") for r in accepted]
    tim_words = [len(m["content"].split()) for r in accepted for m in r["messages"] if m["role"] == "assistant"]
    _histogram(out / "turns_per_conversation.png", turns, "Turns per conversation", "turns (student + Tim)")
    _histogram(out / "words_per_tim_turn.png", tim_words, "Words per Tim turn", "words (0 = silent)")
    backend = report["backend"]
    lines = [
        "# Tim synthetic tutoring conversations",
        "",
        f"Synthesized by `tim synth` with the `{backend['backend']}` backend, model `{backend['model']}`, "
        f"mode `{report['config']['mode']}`. Rows are `{{\"messages\": [...], \"meta\": {{...}}}}` "
        "(schema: tutorkit/conversation.py); an assistant turn with empty content is Tim staying silent.",
        "",
        "| split | conversations |",
        "|---|---|",
        f"| train | {report['train']} |",
        f"| validation | {report['validation']} |",
        "",
        f"Planned {report['requested']}, written {report['written']}, attempts {report['attempts']}, "
        f"silent Tim turns {report['silent_turns']}.",
        "",
        *_exemplars(report["exemplars"]),
        "## Conversations per category",
        "",
        "| category | conversations |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in sorted(report["per_category"].items())),
        "",
        "## Rejected attempts per reason",
        "",
        "| reason | attempts |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in sorted(report["rejected"].items())),
        *([] if report["rejected"] else ["| (none) | 0 |"]),
        "",
        *_best_of_n(report["best_of_n"]),
        "## Shape",
        "",
        "![turns per conversation](turns_per_conversation.png)",
        "![words per Tim turn](words_per_tim_turn.png)",
        "",
        "## Caveats",
        "",
        "Synthetic data: the student and Tim are both played by the generator model, so the data is "
        "only as good as that model. Read a sample before training on it.",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))
