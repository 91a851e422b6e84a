"""The dataset card: README.md beside train/validation.jsonl, as the Hugging Face Hub writes one
(YAML front matter: license, language, task, size, and `configs` naming the split files, so
`datasets.load_dataset(output_dir)` loads the splits), with counts, sample rows and histograms.
For `tim synth` (write_card) and `tim import` (write_import_card)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

# datasets 5.x caches a local folder by its name and keeps serving the old rows after the files
# change (seen here with a rewritten train.jsonl; force_redownload then fails its size check).
RELOAD_NOTE = ("(datasets caches a folder by its name: after this folder is rewritten, load it with "
               "`load_dataset(\"json\", data_files={\"train\": \".../train.jsonl\", ...})` or a new `cache_dir`).")

# The Hub's size buckets, by number of rows.
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


def size_category(rows: int) -> str:
    return next((name for limit, name in SIZE_CATEGORIES if rows < limit), "1M<n<10M")


def front_matter(pretty_name: str, license: str, splits: dict[str, list[dict]], tags: list[str]) -> list[str]:
    """The card's YAML header; only splits with rows are listed (an empty file is no split)."""
    meta = {
        "pretty_name": pretty_name,
        "license": license,
        "language": ["en"],
        "task_categories": ["text-generation"],
        "tags": ["tutoring", "conversational", *tags],
        "size_categories": [size_category(sum(len(r) for r in splits.values()))],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": name, "path": f"{name}.jsonl"} for name, rows in splits.items() if rows]}],
    }  # fmt: skip
    return ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", ""]


def samples(rows: list[dict], k: int = 2, max_chars: int = 400) -> list[str]:
    """The first k rows as they read (the system prompt left out: it is the persona's)."""
    lines = ["## Sample rows", ""]
    for i, row in enumerate(rows[:k]):
        lines += [f"Row {i} ({row.get('meta', {}).get('source') or row.get('meta', {}).get('key', '')}):", ""]
        for m in row["messages"]:
            if m["role"] != "system":
                text = m["content"][:max_chars].replace("\n", " ") or "(silent)"
                lines.append(f"> **{'student' if m['role'] == 'user' else 'Tim'}:** {text}  ")
        lines.append("")
    return lines


def per_kind(rows: list[dict]) -> list[str]:
    counts = Counter(r.get("meta", {}).get("mode", "unknown") for r in rows)
    return ["| rows by kind (meta.mode) | rows |", "|---|---|", *(f"| {k} | {v} |" for k, v in sorted(counts.items())), ""]


def histograms(out: Path, rows: list[dict]) -> list[str]:
    turns = [sum(1 for m in r["messages"] if m["role"] != "system") for r in rows]
    tim_words = [len(m["content"].split()) for r in rows for m in r["messages"] if m["role"] == "assistant"]
    _histogram(out / "turns_per_conversation.png", turns, "Turns per conversation", "turns (student + Tim)")
    _histogram(out / "words_per_tim_turn.png", tim_words, "Words per Tim turn", "words (0 = silent)")
    return ["## Shape", "", "![turns per conversation](turns_per_conversation.png)",
            "![words per Tim turn](words_per_tim_turn.png)", ""]  # fmt: skip


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
        f"{pairs['train']} in preferences.jsonl, {pairs['validation']} in preferences_validation.jsonl."
        + (f" {stats['failed_turns_masked']} kept turns still failed a check and have weight 0 in train.jsonl "
           f"(context, not trained); {stats['rows_left_with_no_trained_turn']} rows left with no trained turn "
           "were dropped." if stats.get("failed_turns_masked") else ""),
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


def write_card(out: Path, report: dict, splits: dict[str, list[dict]], license: str) -> None:
    """The card of a `tim synth` output dir; `splits` are the rows as written (gold rows included)."""
    backend = report["backend"]
    lines = [
        *front_matter("Tim synthetic tutoring conversations", license, splits, ["synthetic"]),
        "# Tim synthetic tutoring conversations",
        "",
        f"Synthesized by `tim synth` with the `{backend['backend']}` backend, model `{backend['model']}`, "
        f"mode `{report['config']['mode']}`. Rows are `{{\"messages\": [...], \"meta\": {{...}}}}` "
        "(schema: tutorkit/conversation.py); an assistant turn with empty content is Tim staying silent. "
        "`datasets.load_dataset(\"<this folder>\")` loads the splits " + RELOAD_NOTE,
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
        *per_kind(splits["train"] + splits["validation"]),
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
        *samples(splits["train"]),
        *histograms(out, splits["train"] + splits["validation"]),
        "## Caveats",
        "",
        "Synthetic data: the student and Tim are both played by the generator model, so the data is "
        "only as good as that model. Read a sample before training on it (`tim data show`).",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))


def write_import_card(out: Path, report: dict, splits: dict[str, list[dict]], license: str) -> None:
    """The card of a `tim import` output dir: where the rows came from and what the import did."""
    lines = [
        *front_matter("Tutoring conversations imported for Tim", license, splits, ["imported"]),
        "# Tutoring conversations imported for Tim",
        "",
        "Imported by `tim import` from existing logs and datasets; the tutor's name is rewritten to "
        "Tim's and the persona's system prompt put first. Rows are `{\"messages\": [...], \"meta\": "
        "{\"source\": \"file:line\"}}`. `datasets.load_dataset(\"<this folder>\")` loads the splits " + RELOAD_NOTE,
        "",
        "| split | conversations |",
        "|---|---|",
        *(f"| {name} | {len(rows)} |" for name, rows in splits.items()),
        "",
        f"Skipped {report['skipped']} conversations or files and changed {report['changed']} (each with its "
        "file:line in report.json).",
        "",
        "| input | format | imported | skipped | changed |",
        "|---|---|---|---|---|",
        *(f"| {name} | {f['format'] or '-'} | {f['imported']} | {len(f['skipped'])} | {len(f['changed'])} |"
          for name, f in report["files"].items()),
        "",
        *samples(splits["train"] or splits["validation"]),
        *histograms(out, splits["train"] + splits["validation"]),
        "## Caveats",
        "",
        "Real logs of another bot: its replies are what it said, not what Tim should say. Read them "
        "before training (`tim data show`).",
        "",
    ]  # fmt: skip
    (out / "README.md").write_text("\n".join(lines))
