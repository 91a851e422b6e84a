"""Safeguarding measured, and a school's own messages classified.

    tim safeguarding eval [--config configs/safeguarding_eval.yaml] [--key value ...]
    tim safeguarding classify FILE.jsonl [--safeguarding_config configs/safeguarding.yaml]

`eval` first measures the served decision (phrase patterns + Tim Guard) on the frozen test split
`test_file` by layer, tier and category (evaluation/safeguarding_tiers.py: test_split.md, .json),
then the phrase patterns alone on the labelled set `data`, described below.

`classify` reads JSON Lines `{"id": ..., "chat": ["earlier message", ..., "the message"]}` and
prints one JSON line per item, `{"id", "tier": "urgent"|"concern"|"none", "categories": [...],
"scores": {...}, "layer": ...}`: exactly the decision `tim serve` makes (same config, same guard).

The phrase patterns' labelled set: per label, recall and precision of the patterns' decision for
every message (tutorkit/safeguarding.py), and the share of ordinary messages flagged at all.

The set (data/safeguarding_eval.yaml, format in its header) maps each label to messages; an
item may be a list of messages one student sent in a row, assessed at the last one with the
others as the chat so far. Every third item of each label is held out: widen patterns from the
misses of the others, and read the held-out figures as the honest ones. Writes report.json and
report.md to output_dir and prints the table.

A message's predicted labels are its disclosure flags, plus `abusive`. Recall of a disclosure
category counts only its own flag (a hunger message flagged as trouble at home is a miss there);
the `any` column counts any disclosure flag (the student still got a safeguarding response).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from evaluation import safeguarding_tiers as tiers
from tutorkit import TimError, run_main
from tutorkit.config import ConfigParser
from tutorkit.safeguarding import ABUSIVE, Safeguard, load_safeguard

ORDINARY = "ordinary"
# Goals (issue 13): recall on every disclosure category, on abuse; flagged ordinary messages.
GOALS = {"disclosure_recall": 0.95, "abusive_recall": 0.9, "ordinary_flagged": 0.02}


@dataclass
class SafeguardingEvalConfig:
    safeguarding_config: str = field(default="configs/safeguarding.yaml", metadata={"help": "The rules measured."})
    data: str = field(default="data/safeguarding_eval.yaml", metadata={"help": "The patterns' labelled messages."})
    test_file: str = field(default="data/safeguarding/test.jsonl", metadata={"help": "The frozen test split of the "
                           "patterns + guard decision ('' = skip)."})
    output_dir: str = field(default="runs/safeguarding_eval", metadata={"help": "report.json, report.md"})


@dataclass(frozen=True)
class Item:
    label: str
    messages: tuple[str, ...]  # the last one is assessed; the others came before it in the chat
    line: int  # in the data file
    held_out: bool


def load_items(path: str | Path, labels: set[str]) -> list[Item]:
    """The labelled set; a TimError names the file and line of anything malformed."""
    path = Path(path)
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise TimError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise TimError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(root, yaml.MappingNode):
        raise TimError(f"{path}: expected a mapping of label -> list of messages")
    items = []
    for key, value in root.value:
        label, where = key.value, f"{path}:{key.start_mark.line + 1}"
        if label not in labels:
            raise TimError(f"{where}: unknown label {label!r}; one of: {', '.join(sorted(labels))}")
        if not isinstance(value, yaml.SequenceNode) or not value.value:
            raise TimError(f"{where}: {label}: expected a non-empty list of messages")
        for i, node in enumerate(value.value):
            line = node.start_mark.line + 1
            parts = node.value if isinstance(node, yaml.SequenceNode) else [node]
            texts = [p.value for p in parts if isinstance(p, yaml.ScalarNode) and str(p.value).strip()]
            if not texts or len(texts) != len(parts):
                raise TimError(f"{path}:{line}: {label}: an item is a message or a list of messages (text)")
            items.append(Item(label, tuple(texts), line, held_out=i % 3 == 2))
    return items


def predict(safeguard: Safeguard, item: Item) -> set[str]:
    return set(safeguard.decide(list(item.messages[:-1]), item.messages[-1]).flags)


def measure(items: list[Item], predicted: list[set[str]], labels: list[str]) -> dict[str, dict]:
    """Per label: n, recall, precision (None with nothing predicted), `any` (share flagged at all)."""
    out = {}
    disclosures = set(labels) - {ABUSIVE, ORDINARY}
    for label in labels:
        mine = [p for it, p in zip(items, predicted) if it.label == label]
        if label == ORDINARY:
            flagged = sum(bool(p) for p in mine)
            out[label] = {"n": len(mine), "flagged": flagged / len(mine) if mine else None}
            continue
        hits = sum(label in p for p in mine)
        claimed = sum(label in p for p in predicted)
        out[label] = {
            "n": len(mine),
            "recall": hits / len(mine) if mine else None,
            "precision": hits / claimed if claimed else None,
            "any": sum(bool(p & (disclosures if label != ABUSIVE else {ABUSIVE})) for p in mine) / len(mine) if mine else None,
        }  # fmt: skip
    return out


def goals_met(figures: dict[str, dict]) -> dict[str, bool]:
    met = {}
    for label, f in figures.items():
        if label == ORDINARY:
            met[label] = f["flagged"] is not None and f["flagged"] <= GOALS["ordinary_flagged"]
        elif f["recall"] is not None:
            met[label] = f["recall"] >= GOALS["abusive_recall" if label == ABUSIVE else "disclosure_recall"]
    return met


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}" if x in (0, 1) else f"{x:.1%}"


def write_markdown(report: dict, path: Path) -> None:
    lines = [f"# Safeguarding on {report['data']}", "",
             f"Rules: {report['safeguarding_config']}. Goals: recall >= {GOALS['disclosure_recall']:.0%} on every "
             f"disclosure category, >= {GOALS['abusive_recall']:.0%} on abusive; ordinary messages flagged "
             f"<= {GOALS['ordinary_flagged']:.0%}.", ""]  # fmt: skip
    for split in ("dev", "held_out"):
        lines += [f"## {split}", "", "| label | n | recall | precision | flagged at all | goal |", "|---|---|---|---|---|---|"]
        for label, f in report[split].items():
            met = "met" if report["goals_met"][split].get(label) else "**not met**"
            if label == ORDINARY:
                lines.append(f"| {label} | {f['n']} | | | {_pct(f['flagged'])} | {met} |")
            else:
                lines.append(f"| {label} | {f['n']} | {_pct(f['recall'])} | {_pct(f['precision'])} | {_pct(f['any'])} | {met} |")
        lines.append("")
    lines += ["## Wrong answers", ""]
    lines += [f"- {m['split']} {m['label']} (line {m['line']}): {' / '.join(m['messages'])!r} -> "
              f"{', '.join(m['predicted']) or 'no flag'}" for m in report["wrong"]]  # fmt: skip
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_parser() -> ConfigParser:
    parser = ConfigParser(SafeguardingEvalConfig, prog="tim safeguarding", doc=__doc__)
    parser.add_argument("action", choices=["eval", "classify"])
    parser.add_argument("file", nargs="?", default=None, help="classify: the JSON Lines file")
    return parser


def main(args=None) -> dict:
    cfg, extra = make_parser().parse(args)
    if extra.action == "classify":
        if not extra.file:
            raise TimError("safeguarding classify needs a FILE.jsonl of {\"id\", \"chat\": [...]} lines")
        items = tiers.read_items(extra.file)  # the whole file checked before the guard loads
        tiers.classify(load_safeguard(cfg.safeguarding_config), items)
        return {}
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {}
    if cfg.test_file:
        report["test_split"] = tiers.measure(load_safeguard(cfg.safeguarding_config), cfg.test_file)
        (out / "test_split.json").write_text(json.dumps(report["test_split"], indent=2) + "\n", encoding="utf-8")
        (out / "test_split.md").write_text(tiers.markdown(report["test_split"]), encoding="utf-8")
        print(tiers.markdown(report["test_split"]).split("\n## Wrong")[0], file=sys.stderr)
    report.update(patterns_report(cfg, out))
    return report


def patterns_report(cfg: SafeguardingEvalConfig, out: Path) -> dict:
    """The phrase patterns alone on the labelled set (report.json, report.md)."""
    safeguard = load_safeguard(cfg.safeguarding_config, with_guard=False)
    labels = [*safeguard.config.disclosures, ABUSIVE, ORDINARY]
    items = load_items(cfg.data, set(labels))
    predicted = [predict(safeguard, item) for item in items]
    report = {"data": cfg.data, "safeguarding_config": cfg.safeguarding_config, "items": len(items), "goals": GOALS}
    for split, keep in (("dev", False), ("held_out", True)):
        chosen = [(it, p) for it, p in zip(items, predicted) if it.held_out == keep]
        report[split] = measure([it for it, _ in chosen], [p for _, p in chosen], labels)
    report["all"] = measure(items, predicted, labels)
    report["goals_met"] = {split: goals_met(report[split]) for split in ("dev", "held_out", "all")}
    report["wrong"] = [
        {"label": it.label, "split": "held_out" if it.held_out else "dev", "line": it.line, "messages": list(it.messages),
         "predicted": sorted(p)}
        for it, p in zip(items, predicted)
        if (it.label == ORDINARY and p) or (it.label != ORDINARY and it.label not in p)
    ]  # fmt: skip
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_markdown(report, out / "report.md")
    print((out / "report.md").read_text(encoding="utf-8"), file=sys.stderr)
    return report


if __name__ == "__main__":
    run_main(main)
