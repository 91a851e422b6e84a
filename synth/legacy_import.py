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
  row (the same chat cut earlier) are folded into it.

Real logs are untidy, so by default the import finishes and says what it did: a trailing student
line with no reply (the usual last line of a chat log) and a tutor greeting before the student's
first line are dropped; consecutive turns of one speaker are joined (also a completion that
continues the prompt's last tutor line); a file whose speaker labels are not in user_labels /
tutor_labels is skipped with the labels it uses, so they can be added; any other problem skips
that one conversation. report.json lists per file what was imported, skipped (file:line, reason)
and changed (file:line, what): nothing is dropped without a line there. `--strict true` stops at
the first problem instead, with the file and line.

Tutor names other than the persona's (a legacy bot called "Sam") are rewritten to the persona's
name in the tutor's words. Writes output_dir/train.jsonl, validation.jsonl (with the persona's
system prompt first), report.json and a dataset card (README.md, as the Hub writes one).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from synth import chat_formats
from synth.card import write_import_card
from synth.postprocess import normalize_names
from tutorkit import TimError, run_main
from tutorkit.config import ConfigParser
from tutorkit.conversation import split_rows, validate_messages, write_jsonl
from tutorkit.persona import load_persona
from tutorkit.speakers import names_pattern, split_label

SEPARATOR = re.compile(r"^\s*(-{3,}|={3,})\s*$")
# auto: .txt is a transcript; rows (.jsonl, .json, .parquet, a dataset folder) by their keys.
FORMATS = ["auto", "transcript", "prompt_completion", "openai", "sharegpt", "alpaca"]


@dataclass
class ImportConfig:
    inputs: list[str] = field(default_factory=list, metadata={"help": "Legacy files: .txt transcripts, .jsonl pairs."})
    output_dir: str = field(default="runs/imported")
    user_labels: list[str] = field(default_factory=lambda: ["User", "Student"])
    tutor_labels: list[str] = field(default_factory=lambda: ["TIM", "Tutor"])
    persona_config: str = field(default="configs/persona.yaml")
    add_system_prompt: bool = field(default=True, metadata={"help": "Start each chat with the persona's prompt."})
    validation_fraction: float = field(default=0.1)
    card_license: str = field(default="other", metadata={"help": "The dataset card's license (a Hub license id)."})
    format: str = field(default="auto", metadata={"help": f"One of {', '.join(FORMATS)}."})
    strict: bool = field(default=False, metadata={"help": "Stop at the first problem instead of skipping and reporting."})


class Problem(Exception):
    """One conversation cannot be imported as it is: `where` is file:line."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


@dataclass
class FileReport:
    """What the import did with one input file (report.json's `files`). Under strict, the first
    skip, and any change the old importer refused, stops the import instead."""

    strict: bool
    format: str = ""
    imported: int = 0
    skipped: list[dict] = field(default_factory=list)  # {"where": "file:line", "reason": ...}
    changed: list[dict] = field(default_factory=list)  # {"where": "file:line", "what": ...}

    def skip(self, where: str, reason: str) -> None:
        if self.strict:
            raise TimError(f"{where}: {reason}")
        self.skipped.append({"where": where, "reason": reason})

    def change(self, where: str, what: str, *, refused_by_strict: str = "") -> None:
        if self.strict and refused_by_strict:
            raise TimError(f"{where}: {refused_by_strict}")
        self.changed.append({"where": where, "what": what})

    def as_json(self) -> dict:
        return {"format": self.format, "imported": self.imported, "skipped": self.skipped, "changed": self.changed}


class SpeakerLines:
    """Turns from speaker-labelled lines; problems name the file and line."""

    def __init__(self, user_labels: list[str], tutor_labels: list[str]):
        self.users = {label.lower() for label in user_labels}
        self.tutors = {label.lower() for label in tutor_labels}

    def label(self, line: str) -> tuple[str, str] | None:
        """("user" | "assistant", the text after the label) for a line with a known label."""
        found = split_label(line)
        if found is None or found[0].lower() not in self.users | self.tutors:
            return None
        return ("user" if found[0].lower() in self.users else "assistant"), found[1]

    def unknown_speakers(self, chats: list[list[str]]) -> Counter:
        """Labels this config lacks, when a file uses them for a side it never labels the
        configured way (a bot called "Sam:" where tutor_labels has no Sam). A label counts when it
        starts lines in at least half of the file's conversations and twice in all, so "Step 1:"
        inside a tutor's turn of a file that labels both sides stays text. Counted in lines."""
        lines, chats_with, roles = Counter(), Counter(), set()
        known = self.users | self.tutors
        for chat in chats:
            found = [f for f in map(split_label, chat) if f]
            roles.update("user" if f[0].lower() in self.users else "assistant" for f in found if f[0].lower() in known)
            labels = [f[0] for f in found if f[0].lower() not in known]
            lines.update(labels)
            chats_with.update(set(labels))
        if roles >= {"user", "assistant"}:
            return Counter()
        return Counter({k: n for k, n in lines.items() if n >= 2 and chats_with[k] * 2 >= len(chats)})

    def parse(self, lines: list[tuple[int, str]], where: Callable[[int], str]) -> list[Turn]:
        """The labelled turns, in order (one speaker's lines in a row are joined later, by
        `tidy`); `where(lineno)` names a line in problems."""
        turns: list[Turn] = []
        pending_blank = False
        for lineno, line in lines:
            labelled = self.label(line)
            if labelled:
                turns.append(Turn(where(lineno), labelled[0], labelled[1].rstrip()))
                pending_blank = False
            elif not line.strip():
                pending_blank = bool(turns)
            elif not turns:
                raise Problem(where(lineno), f"text before the first speaker label: {line.strip()[:60]!r}")
            else:  # a turn that runs on over several lines (a blank line inside keeps a paragraph)
                joiner = "\n\n" if pending_blank else "\n"
                turns[-1].content = (turns[-1].content + joiner + line.strip()).strip()
                pending_blank = False
        return turns


@dataclass
class Turn:
    where: str  # file:line (or file[row]) where the turn starts
    role: str  # "user" | "assistant"
    content: str


def tidy(turns: list[Turn], report: FileReport, source: str, *, reply_follows: bool = False) -> list[dict]:
    """Turns as Tim's data needs them: one speaker's turns in a row joined, a tutor greeting
    before the student's first line and (unless a reply follows) a last student line with no
    reply dropped, each said in the report. Raises Problem when nothing usable is left."""
    joined: list[Turn] = []
    for turn in turns:
        turn.content = turn.content.strip()
        if joined and joined[-1].role == turn.role:
            if turn.content:  # an empty label after a line of the same speaker adds nothing
                joined[-1].content = "\n".join(x for x in (joined[-1].content, turn.content) if x)
                report.change(turn.where, f"joined to the {turn.role} turn above (same speaker)")
        else:
            joined.append(turn)
    while joined and joined[0].role == "assistant":
        report.change(joined.pop(0).where, "dropped the tutor's turn before the student's first line",
                      refused_by_strict="the conversation starts with the tutor; Tim's data starts with the user")  # fmt: skip
    if joined and joined[-1].role == "user" and not reply_follows:
        report.change(joined.pop().where, "dropped the last student line (no reply)",
                      refused_by_strict="the conversation ends with a user turn that has no reply")  # fmt: skip
    for turn in joined:
        if turn.role == "user" and not turn.content:
            raise Problem(turn.where, "empty user turn")
    if not joined:
        raise Problem(source, "no student line with a tutor reply")
    return [{"role": t.role, "content": t.content} for t in joined]


def read_transcripts(path: Path, speakers: SpeakerLines, report: FileReport) -> list[tuple[str, list[dict]]]:
    """[(source, turns)] for each conversation of a plain-text transcript file that can be read."""
    report.format = "transcript"
    blocks: list[list[tuple[int, str]]] = [[]]
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if SEPARATOR.match(line):
            blocks.append([])
        else:
            blocks[-1].append((lineno, line))
    blocks = [b for b in blocks if any(line.strip() for _, line in b)]
    if not blocks:
        report.skip(str(path), "no conversations (empty file)")
        return []
    if unknown := speakers.unknown_speakers([[line for _, line in b] for b in blocks]):
        report.skip(str(path), unknown_labels_reason(unknown, speakers))
        return []
    conversations = []
    for block in blocks:
        source = f"{path}:{next(n for n, line in block if line.strip())}"
        try:
            conversations.append((source, tidy(speakers.parse(block, lambda n: f"{path}:{n}"), report, source)))
        except Problem as p:
            report.skip(p.where, p.reason)
    return conversations


def read_rows(path: Path, fmt: str, speakers: SpeakerLines, report: FileReport) -> list[tuple[str, list[dict]]]:
    """[(source, turns)] for each row of a JSONL / JSON / parquet file or dataset folder that can
    be read; `fmt` "auto" takes the format of the first row that is an object."""
    rows = []
    for where, row in chat_formats.iter_rows(path):
        if isinstance(row, chat_formats.RowError):
            report.skip(where, str(row))
        else:
            rows.append((where, row))
    if fmt == "auto":
        fmt = next((f for f in (chat_formats.detect(r) for _, r in rows) if f), "")
        if not fmt and rows:
            keys = sorted(rows[0][1]) if isinstance(rows[0][1], dict) else type(rows[0][1]).__name__
            report.skip(str(path), f"rows are none of the known formats (first row's keys: {keys}); name one with --format")
            return []
    report.format = fmt
    if not rows:
        report.skip(str(path), "no rows (empty file)")
        return []
    if fmt == "prompt_completion":
        return read_pairs(path, rows, speakers, report)
    conversations = []
    for where, row in rows:
        try:
            if not isinstance(row, dict):
                raise chat_formats.RowError("a row must be an object")
            turns, notes = chat_formats.row_turns(fmt, row)
            for note in notes:
                report.change(where, note)
            conversations.append((where, tidy([Turn(where, t["role"], t["content"]) for t in turns], report, where)))
        except chat_formats.RowError as e:
            report.skip(where, str(e))
        except Problem as p:
            report.skip(p.where, p.reason)
    return conversations


def read_pairs(path: Path, rows: list[tuple[str, object]], speakers: SpeakerLines, report: FileReport) -> list[tuple[str, list[dict]]]:
    """[(source, turns)] for each prompt/completion row that can be read."""
    good = []
    for where, row in rows:
        if isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
            good.append((where, row))
        else:
            report.skip(where, "expected an object with string 'prompt' and 'completion'")
    chats = [[*row["prompt"].splitlines(), *row["completion"].splitlines()[:1]] for _, row in good]
    if unknown := speakers.unknown_speakers(chats):
        report.skip(str(path), unknown_labels_reason(unknown, speakers))
        return []
    conversations = []
    for where, row in good:
        try:
            conversations.append((where, pair_turns(where, row, speakers, report)))
        except Problem as p:
            report.skip(p.where, p.reason)
    return fold_prefixes(conversations, report)


def pair_turns(where: str, row: dict, speakers: SpeakerLines, report: FileReport) -> list[dict]:
    """The turns of one prompt/completion row: the prompt's history, then the completion."""
    prompt_lines = row["prompt"].splitlines()
    while prompt_lines and not prompt_lines[-1].strip():
        prompt_lines.pop()
    cue = speakers.label(prompt_lines[-1]) if prompt_lines else None
    if cue and cue[0] == "assistant" and not cue[1].strip():
        prompt_lines.pop()  # the bare tutor label that cues the completion
    try:
        turns = tidy(speakers.parse(list(enumerate(prompt_lines)), lambda _: where), report, where, reply_follows=True)
    except Problem as p:
        raise Problem(where, f"prompt: {p.reason}") from None
    completion = row["completion"].strip()
    first, _, rest = completion.partition("\n")
    labelled = speakers.label(first)
    if labelled and labelled[0] == "user":
        raise Problem(where, "the completion is a user turn")
    if labelled:  # "TIM: text" -> "text" (only the first line carries a label)
        completion = "\n".join(x for x in (labelled[1], rest) if x).strip()
    if turns[-1]["role"] == "assistant":  # the prompt ends on a tutor line: the completion goes on with it
        turns[-1]["content"] = "\n".join(x for x in (turns[-1]["content"], completion) if x)
        report.change(where, "joined the completion to the prompt's last tutor turn",
                      refused_by_strict="the prompt must end with a user turn (then an empty tutor label)")  # fmt: skip
    else:
        turns.append({"role": "assistant", "content": completion})
    return turns


def unknown_labels_reason(unknown: Counter, speakers: SpeakerLines) -> str:
    found = ", ".join(f"{label} ({n} lines)" for label, n in unknown.most_common(8))
    return (f"speaker labels not in user_labels {sorted(speakers.users)} or tutor_labels {sorted(speakers.tutors)}: "
            f"{found}; add them to the config to import this file")  # fmt: skip


def fold_prefixes(conversations: list[tuple[str, list[dict]]], report: FileReport) -> list[tuple[str, list[dict]]]:
    """Fold conversations that are an exact prefix of a longer one into it (reported)."""
    ordered = sorted(conversations, key=lambda c: -len(c[1]))
    kept: list[tuple[str, list[dict]]] = []
    for source, turns in ordered:
        into = next((s for s, k in kept if len(k) > len(turns) and k[: len(turns)] == turns), None)
        if into:
            report.change(source, f"folded into {into} (the same chat, cut earlier)")
        else:
            kept.append((source, turns))
    order = {id(t): i for i, (_, t) in enumerate(conversations)}
    return sorted(kept, key=lambda c: order[id(c[1])])


def make_parser() -> ConfigParser:
    return ConfigParser(ImportConfig, prog="tim import", doc=__doc__)


def main(args=None) -> dict:
    cfg, _ = make_parser().parse(args)
    if not cfg.inputs:
        raise TimError("no inputs: pass --inputs FILE [FILE ...]")
    if cfg.format not in FORMATS:
        raise TimError(f"format: '{cfg.format}' is none of {', '.join(FORMATS)}")
    persona = load_persona(cfg.persona_config)
    speakers = SpeakerLines(cfg.user_labels, cfg.tutor_labels)
    other_names = names_pattern(x for x in cfg.tutor_labels if x.lower() != persona.name.lower())
    for name in cfg.inputs:  # a missing or unreadable input is a mistake on the command line: stop
        path = Path(name)
        if not path.exists():
            raise TimError(f"input not found: {name}")
        if path.is_file() and path.suffix not in (".txt", *chat_formats.DATA_FILES):
            raise TimError(f"{name}: unknown input type (expected .txt transcripts, .jsonl, .json, .parquet or a dataset folder)")
        if path.is_dir() and cfg.format != "auto" and not chat_formats.data_files(path):
            raise TimError(f"{name}: a folder without parquet, JSON or JSONL files")

    imported, files = [], {}
    for name in cfg.inputs:
        path, report = Path(name), FileReport(strict=cfg.strict)
        files[name] = report
        if cfg.format == "transcript" or (cfg.format == "auto" and path.suffix == ".txt"):
            found = read_transcripts(path, speakers, report)
        else:
            found = read_rows(path, cfg.format, speakers, report)
        for source, turns in found:
            messages = normalize_names(turns, persona.name, other_names)
            if cfg.add_system_prompt:
                messages = [{"role": "system", "content": persona.render_system_prompt()}, *messages]
            try:
                validate_messages(messages, source)
            except TimError as e:
                report.skip(source, str(e).removeprefix(f"{source}: "))
                continue
            report.imported += 1
            imported.append({"messages": messages, "meta": {"source": source, "mode": "import"}})

    out = Path(cfg.output_dir)
    rows = split_rows(imported, lambda row: row["meta"]["source"], cfg.validation_fraction)
    skipped = sum(len(r.skipped) for r in files.values())
    changed = sum(len(r.changed) for r in files.values())
    report = {"conversations": len(imported), "train": len(rows["train"]), "validation": len(rows["validation"]),
              "skipped": skipped, "changed": changed, "files": {k: r.as_json() for k, r in files.items()},
              "config": asdict(cfg)}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if not imported:
        raise TimError(f"no conversation could be imported ({skipped} skipped); the reasons are in {out / 'report.json'}")
    write_jsonl(out / "train.jsonl", rows["train"])
    write_jsonl(out / "validation.jsonl", rows["validation"])
    write_import_card(out, report, rows, cfg.card_license)
    print(f"tim import: {len(imported)} conversations from {len(files)} files in {out}; {skipped} skipped, "
          f"{changed} changed (each listed in {out / 'report.json'})", file=sys.stderr)  # fmt: skip
    return report


if __name__ == "__main__":
    run_main(main)
