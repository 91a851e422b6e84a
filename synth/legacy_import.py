"""Convert legacy tutoring data into Tim's `messages` datasets.

    tim import --config configs/import.yaml --inputs old/*.txt old/pairs.jsonl [--key value ...]

Two legacy formats, chosen by file extension:

- `.txt` transcripts: speaker lines such as `User: ...` and `TIM: ...` (labels from user_labels
  and tutor_labels, any case). A turn runs on over following lines until the next label; blank
  lines between turns are ignored; consecutive lines of one speaker form one turn. A line of only
  `---` separates conversations in one file. An empty tutor line (`TIM:`) is a silent turn.
- `.jsonl` prompt/completion pairs: `{"prompt": "User: ...\\nTIM: ...\\nUser: ...\\nTIM:",
  "completion": "the tutor's next turn"}`. The prompt holds the history as speaker lines; a bare
  tutor label at its end is the cue for the completion. Rows that are an exact prefix of a longer
  row (the same chat cut earlier) are folded into it and counted in the report.

Tutor names other than the persona's (a legacy bot called "Sam") are rewritten to the persona's
name in the tutor's words. Anything that cannot be read as alternating user/tutor turns stops the
import with the file and line; nothing is dropped silently. Writes output_dir/train.jsonl,
validation.jsonl (with the persona's system prompt first) and report.json.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from synth.postprocess import normalize_names
from tutorkit import TimError, run_main
from tutorkit.config import ConfigParser
from tutorkit.conversation import iter_jsonl, split_rows, validate_messages, write_jsonl
from tutorkit.persona import load_persona
from tutorkit.speakers import names_pattern, split_label

SEPARATOR = re.compile(r"^\s*(-{3,}|={3,})\s*$")


@dataclass
class ImportConfig:
    inputs: list[str] = field(default_factory=list, metadata={"help": "Legacy files: .txt transcripts, .jsonl pairs."})
    output_dir: str = field(default="runs/imported")
    user_labels: list[str] = field(default_factory=lambda: ["User", "Student"])
    tutor_labels: list[str] = field(default_factory=lambda: ["TIM", "Tutor"])
    persona_config: str = field(default="configs/persona.yaml")
    add_system_prompt: bool = field(default=True, metadata={"help": "Start each chat with the persona's prompt."})
    validation_fraction: float = field(default=0.1)


class SpeakerLines:
    """Turns from speaker-labelled lines; errors name the file and line."""

    def __init__(self, user_labels: list[str], tutor_labels: list[str]):
        self.users = {label.lower() for label in user_labels}
        self.tutors = {label.lower() for label in tutor_labels}

    def label(self, line: str) -> tuple[str, str] | None:
        """("user" | "assistant", the text after the label) for a line with a known label."""
        found = split_label(line)
        if found is None or found[0].lower() not in self.users | self.tutors:
            return None
        return ("user" if found[0].lower() in self.users else "assistant"), found[1]

    def parse(self, lines: list[tuple[int, str]], source: str) -> tuple[list[dict], list[int]]:
        """(turns, line number where each turn starts)."""
        turns: list[dict] = []
        starts: list[int] = []
        pending_blank = False
        for lineno, line in lines:
            labelled = self.label(line)
            if labelled:
                role, text = labelled[0], labelled[1].rstrip()
                if turns and turns[-1]["role"] == role:
                    turns[-1]["content"] = "\n".join(x for x in (turns[-1]["content"], text) if x)
                else:
                    turns.append({"role": role, "content": text})
                    starts.append(lineno)
                pending_blank = False
            elif not line.strip():
                pending_blank = bool(turns)
            elif not turns:
                raise TimError(f"{source}:{lineno}: text before the first speaker label: {line.strip()[:60]!r}")
            else:  # a turn that runs on over several lines (a blank line inside keeps a paragraph)
                joiner = "\n\n" if pending_blank else "\n"
                turns[-1]["content"] = (turns[-1]["content"] + joiner + line.strip()).strip()
                pending_blank = False
        if turns and turns[0]["role"] != "user":
            raise TimError(f"{source}:{starts[0]}: the conversation starts with the tutor; Tim's data starts with the user")
        for turn, start in zip(turns, starts):
            turn["content"] = turn["content"].strip()
            if turn["role"] == "user" and not turn["content"]:
                raise TimError(f"{source}:{start}: empty user turn")
        return turns, starts


def read_transcripts(path: Path, speakers: SpeakerLines) -> list[tuple[str, list[dict]]]:
    """[(source, turns)] for each conversation in a plain-text transcript file."""
    blocks: list[list[tuple[int, str]]] = [[]]
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if SEPARATOR.match(line):
            blocks.append([])
        else:
            blocks[-1].append((lineno, line))
    conversations = []
    for block in blocks:
        if not any(line.strip() for _, line in block):
            continue
        first = next(n for n, line in block if line.strip())
        source = f"{path}:{first}"
        turns, starts = speakers.parse(block, str(path))
        if turns[-1]["role"] == "user":
            raise TimError(f"{path}:{starts[-1]}: the conversation ends with a user turn that has no reply")
        conversations.append((source, turns))
    if not conversations:
        raise TimError(f"{path}: no conversations (empty file)")
    return conversations


def read_pairs(path: Path, speakers: SpeakerLines) -> list[tuple[str, list[dict]]]:
    """[(source, turns)] for each prompt/completion row."""
    conversations = []
    for where, row in iter_jsonl(path):
        lineno = int(where.rsplit(":", 1)[1])
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(row.get("completion"), str):
            raise TimError(f"{where}: expected an object with string 'prompt' and 'completion'")
        prompt_lines = [(lineno, x) for x in row["prompt"].splitlines()]
        try:
            turns, _ = speakers.parse(prompt_lines, str(path))
        except TimError as e:
            raise TimError(f"{where}: prompt: {str(e).split(': ', 1)[1]}") from None
        if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
            turns.pop()  # the bare tutor label that cues the completion
        if not turns or turns[-1]["role"] != "user":
            raise TimError(f"{where}: the prompt must end with a user turn (then an empty tutor label)")
        completion = row["completion"].strip()
        first, _, rest = completion.partition("\n")
        labelled = speakers.label(first)
        if labelled and labelled[0] == "user":
            raise TimError(f"{where}: the completion is a user turn")
        if labelled:  # "TIM: text" -> "text" (only the first line carries a label)
            completion = "\n".join(x for x in (labelled[1], rest) if x)
        turns.append({"role": "assistant", "content": completion.strip()})
        conversations.append((where, turns))
    if not conversations:
        raise TimError(f"{path}: no rows (empty file)")
    return conversations


def fold_prefixes(conversations: list[tuple[str, list[dict]]]) -> tuple[list[tuple[str, list[dict]]], int]:
    """Drop conversations that are an exact prefix of a longer one; return (kept, number folded)."""
    ordered = sorted(conversations, key=lambda c: -len(c[1]))
    kept: list[tuple[str, list[dict]]] = []
    folded = 0
    for source, turns in ordered:
        if any(len(k) > len(turns) and k[: len(turns)] == turns for _, k in kept):
            folded += 1
        else:
            kept.append((source, turns))
    order = {id(t): i for i, (_, t) in enumerate(conversations)}
    return sorted(kept, key=lambda c: order[id(c[1])]), folded


def make_parser() -> ConfigParser:
    return ConfigParser(ImportConfig, prog="tim import", doc=__doc__)


def main(args=None) -> dict:
    cfg, _ = make_parser().parse(args)
    if not cfg.inputs:
        raise TimError("no inputs: pass --inputs FILE [FILE ...]")
    persona = load_persona(cfg.persona_config)
    speakers = SpeakerLines(cfg.user_labels, cfg.tutor_labels)
    other_names = names_pattern(x for x in cfg.tutor_labels if x.lower() != persona.name.lower())
    conversations, folded, per_file = [], 0, {}
    for name in cfg.inputs:
        path = Path(name)
        if not path.is_file():
            raise TimError(f"input file not found: {path}")
        if path.suffix == ".txt":
            found = read_transcripts(path, speakers)
        elif path.suffix == ".jsonl":
            found, n = fold_prefixes(read_pairs(path, speakers))
            folded += n
        else:
            raise TimError(f"{path}: unknown legacy format (expected .txt transcripts or .jsonl prompt/completion)")
        per_file[str(path)] = len(found)
        conversations += found

    imported = []
    for source, turns in conversations:
        messages = normalize_names(turns, persona.name, other_names)
        if cfg.add_system_prompt:
            messages = [{"role": "system", "content": persona.render_system_prompt()}, *messages]
        validate_messages(messages, source)
        imported.append({"messages": messages, "meta": {"source": source, "mode": "import"}})
    rows = split_rows(imported, lambda row: row["meta"]["source"], cfg.validation_fraction)
    out = Path(cfg.output_dir)
    write_jsonl(out / "train.jsonl", rows["train"])
    write_jsonl(out / "validation.jsonl", rows["validation"])
    report = {"conversations": len(conversations), "train": len(rows["train"]), "validation": len(rows["validation"]),
              "folded_prefix_rows": folded, "per_file": per_file, "config": asdict(cfg)}  # fmt: skip
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"tim import: {len(conversations)} conversations in {out} ({folded} prefix rows folded)", file=sys.stderr)
    return report


if __name__ == "__main__":
    run_main(main)
