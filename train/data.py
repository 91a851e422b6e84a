"""What training sees, before an hour is spent on it; and several datasets made one.

    tim data show  --dataset_dir DIR [--index N] [--split train] [--config configs/sft.yaml]
    tim data merge --inputs DIR DIR ... --output_dir DIR

show: conversation N as the trainer will see it, through the SFT config's chat_template_path
and the model's tokenizer, with the tokens the loss is on marked (Tim's turns, each with its
end-of-turn token, under assistant_only_loss): green on a terminal, «between guillemets»
otherwise. Then the split's totals: conversations, tokens, trained tokens and their share, the
longest row against max_length, and the rows max_length would cut (named by their meta.source).
train/sft.py prints the same totals before it trains (`summarize`).

merge: dataset dirs (synthetic, imported, exemplars...) into one dir with the same schema. Each
row's meta.dataset names the dir it came from; train/sft.py counts rows per dataset in
metrics.json. A row seen twice (same messages) is kept once and counted in report.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from tutorkit import TimError, run_main
from tutorkit.conversation import read_conversations, trained, write_jsonl

GREEN, RESET = "\033[42;30m", "\033[0m"


@dataclass
class Tokenized:
    ids: list[int]
    trained: list[bool]  # the loss is on this token


class TrainingView:
    """The tokenizer and chat template exactly as SFTTrainer applies them (TRL 1.x): the file in
    chat_template_path, or the tokenizer's own template patched with generation markers."""

    def __init__(self, tokenizer, chat_template_path: str | None, assistant_only_loss: bool, max_length: int | None):
        self.tokenizer, self.assistant_only_loss, self.max_length = tokenizer, assistant_only_loss, max_length
        if chat_template_path and Path(chat_template_path).is_file() and chat_template_path.endswith((".jinja", ".j2")):
            tokenizer.chat_template = Path(chat_template_path).read_text(encoding="utf-8")
        elif chat_template_path:
            raise TimError(f"chat_template_path: {chat_template_path} is not a .jinja file (tim data show reads only those)")
        self.template = None
        if assistant_only_loss and "{% generation" not in (tokenizer.chat_template or "").replace("{%-", "{%"):
            from trl.chat_template_utils import get_training_chat_template

            self.template = get_training_chat_template(tokenizer)
            if self.template is None:
                raise TimError("assistant_only_loss needs a chat template with {% generation %} markers; set chat_template_path")

    def tokenize(self, messages: list[dict]) -> Tokenized:
        out = self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=True, return_dict=True,
                                                 return_assistant_tokens_mask=self.assistant_only_loss)  # fmt: skip
        ids = list(out["input_ids"])
        mask = [bool(m) for m in out["assistant_masks"]] if self.assistant_only_loss else [True] * len(ids)
        if self.assistant_only_loss and not all(trained(m) for m in messages if m["role"] == "assistant"):
            mask = self._unweight(mask, messages)
        return Tokenized(ids, mask)

    @staticmethod
    def _unweight(mask: list[bool], messages: list[dict]) -> list[bool]:
        """The mask with the spans of weight-0 turns cleared. The template marks each assistant turn
        as one span (content + end-of-turn token; user turns lie between), so the k-th span is the
        k-th assistant message."""
        spans = [i for i in range(len(mask)) if mask[i] and (i == 0 or not mask[i - 1])]
        turns = [m for m in messages if m["role"] == "assistant"]
        if len(spans) != len(turns):
            raise TimError(f"the chat template marks {len(spans)} trained spans for {len(turns)} assistant turns, so "
                           "per-turn weights cannot be applied; use configs/chat_templates/chatml.jinja")  # fmt: skip
        mask = list(mask)
        for start, turn in zip(spans, turns):
            if not trained(turn):
                end = start
                while end < len(mask) and mask[end]:
                    mask[end] = False
                    end += 1
        return mask

    def dataset_rows(self, rows: list[dict]) -> list[dict]:
        """Rows tokenized for SFTTrainer (`input_ids`, `assistant_masks`: it skips its own
        tokenization then and builds labels and truncation from these). Used when a row has
        weight-0 turns, which TRL's own tokenization would train."""
        return [{"input_ids": t.ids, "assistant_masks": [int(b) for b in t.trained]}
                for t in (self.tokenize(row["messages"]) for row in rows)]  # fmt: skip

    def render(self, tokens: Tokenized, color: bool) -> str:
        """The text with trained spans marked; spans are decoded whole so words stay whole."""
        parts, start = [], 0
        for i in range(1, len(tokens.ids) + 1):
            if i == len(tokens.ids) or tokens.trained[i] != tokens.trained[start]:
                text = self.tokenizer.decode(tokens.ids[start:i])
                if tokens.trained[start]:
                    text = f"{GREEN}{text}{RESET}" if color else f"«{text}»"
                parts.append(text)
                start = i
        return "".join(parts)


def summarize(view: TrainingView, rows: list[dict]) -> dict:
    """Totals for a split as the trainer will see it; `cut` names rows longer than max_length."""
    lengths, trained, cut = [], 0, []
    for i, row in enumerate(rows):
        tokens = view.tokenize(row["messages"])
        kept = tokens.trained[: view.max_length] if view.max_length else tokens.trained
        lengths.append(len(tokens.ids))
        trained += sum(kept)
        if view.max_length and len(tokens.ids) > view.max_length:
            cut.append({"index": i, "source": row.get("meta", {}).get("source", ""), "tokens": len(tokens.ids)})
    seen = sum(min(n, view.max_length) if view.max_length else n for n in lengths)
    longest = max(range(len(lengths)), key=lengths.__getitem__) if lengths else None
    return {"conversations": len(rows), "tokens": seen, "trained_tokens": trained,
            "trained_share": round(trained / seen, 4) if seen else 0.0,
            "longest": {"index": longest, "tokens": lengths[longest]} if longest is not None else None,
            "max_length": view.max_length, "cut": cut}  # fmt: skip


def row_sources(dataset_dir: str, limit: int = 0) -> dict:
    """Training rows per source dataset (meta.dataset, written by merge; else dataset_dir) and per
    kind (meta.mode: roleplay, exemplar, import ...), for metrics.json."""
    datasets, modes = {}, {}
    rows = read_conversations(Path(dataset_dir) / "train.jsonl")
    for row in rows[:limit] if limit else rows:
        meta = row.get("meta", {})
        datasets[meta.get("dataset", dataset_dir)] = datasets.get(meta.get("dataset", dataset_dir), 0) + 1
        modes[meta.get("mode", "unknown")] = modes.get(meta.get("mode", "unknown"), 0) + 1
    return {"per_dataset": datasets, "per_mode": modes}


def summary_lines(name: str, s: dict) -> list[str]:
    lines = [f"{name}: {s['conversations']} conversations, {s['tokens']} tokens, {s['trained_tokens']} trained "
             f"({100 * s['trained_share']:.1f} %)"]  # fmt: skip
    if s["longest"]:
        lines.append(f"  longest row: #{s['longest']['index']}, {s['longest']['tokens']} tokens (max_length {s['max_length']})")
    for c in s["cut"]:
        lines.append(f"  cut at max_length: #{c['index']} {c['source']} ({c['tokens']} tokens)")
    return lines


def view_from_sft_config(config: str, dataset_dir: str) -> TrainingView:
    """The tokenizer and template settings of an SFT config (train/sft.py's own parser)."""
    from transformers import AutoTokenizer

    from train.sft import parse_args
    from tutorkit.model_files import resolve_model

    _, training_args, model_args = parse_args(["--config", config, "--dataset_dir", dataset_dir])
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(model_args.model_name_or_path or "embedded")))
    return TrainingView(tokenizer, training_args.chat_template_path, training_args.assistant_only_loss, training_args.max_length)


def show(args: argparse.Namespace) -> dict:
    path = Path(args.dataset_dir) / f"{args.split}.jsonl"
    rows = read_conversations(path)
    if not 0 <= args.index < len(rows):
        raise TimError(f"--index {args.index}: {path} has rows 0 to {len(rows) - 1}")
    view = view_from_sft_config(args.config, args.dataset_dir)
    row = rows[args.index]
    tokens = view.tokenize(row["messages"])
    color = sys.stdout.isatty()
    print(f"# {path} row {args.index} ({row.get('meta', {}).get('source', 'no source')}): {len(tokens.ids)} tokens, "
          f"{sum(tokens.trained)} trained ({'green' if color else '«marked»'})\n")  # fmt: skip
    print(view.render(tokens, color))
    totals = summarize(view, rows)
    print("\n" + "\n".join(summary_lines(f"{path}", totals)))
    return {"row": args.index, "ids": tokens.ids, "trained": tokens.trained, "summary": totals}


def merge(args: argparse.Namespace) -> dict:
    if not args.inputs or not args.output_dir:
        raise TimError("tim data merge needs --inputs DIR [DIR ...] and --output_dir DIR")
    out = Path(args.output_dir)
    if out.resolve() in {Path(d).resolve() for d in args.inputs}:
        raise TimError(f"--output_dir {out} is one of the inputs; merge into a new folder")
    report = {"inputs": args.inputs, "splits": {}, "duplicates_dropped": 0}
    for split in ("train", "validation"):
        rows, seen, counts = [], set(), {}
        for d in args.inputs:
            path = Path(d) / f"{split}.jsonl"
            if split == "train" and not path.is_file():
                raise TimError(f"{d}: no train.jsonl (not a dataset folder?)")
            for row in read_conversations(path) if path.is_file() and path.read_text().strip() else []:
                key = json.dumps(row["messages"], sort_keys=True)
                if key in seen:
                    report["duplicates_dropped"] += 1
                    continue
                seen.add(key)
                row["meta"] = {**row.get("meta", {}), "dataset": d}
                rows.append(row)
                counts[d] = counts.get(d, 0) + 1
        write_jsonl(out / f"{split}.jsonl", rows)
        report["splits"][split] = {"rows": len(rows), "per_dataset": counts}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"tim data merge: {report['splits']['train']['rows']} train and {report['splits']['validation']['rows']} "
          f"validation rows in {out} ({report['duplicates_dropped']} duplicates dropped)", file=sys.stderr)  # fmt: skip
    return report


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tim data", description=__doc__.strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("action", choices=["show", "merge"])
    parser.add_argument("--dataset_dir", default="runs/synth", help="show: the dataset folder (default: runs/synth)")
    parser.add_argument("--index", type=int, default=0, help="show: which row (default: 0)")
    parser.add_argument("--split", choices=["train", "validation"], default="train", help="show: which file")
    parser.add_argument("--config", default="configs/sft.yaml", help="show: the SFT config whose template and tokenizer to use")
    parser.add_argument("--inputs", nargs="*", default=[], help="merge: dataset folders")
    parser.add_argument("--output_dir", default="", help="merge: the new dataset folder")
    return parser


def main(args=None) -> dict:
    parsed = make_parser().parse_args(list(sys.argv[1:] if args is None else args))
    return show(parsed) if parsed.action == "show" else merge(parsed)


if __name__ == "__main__":
    run_main(main)
