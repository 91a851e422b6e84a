"""Who is speaking in a piece of text: the one place for the text heuristics about speakers.

- speaker labels at the start of a line ("Student:", "**Tim:**", "TIM:"), which models write
  when they run on into the other side's turn, and which transcripts use to mark turns;
- a scene with named characters ("*Alex: ...");
- self-introductions ("I'm Sarah", "my name is Max");
- other assistants' names (ChatGPT, SmolLM ...; the list lives in the persona config).

Synthesis gates, reply cleaning in serving, transcript and legacy parsing, and the evaluation's
rule checks all use these functions, so a fix here changes every stage at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Labels that start a turn in chats and transcripts, besides the tutor's own name: the two
# sides, and labels that name no side but still start another line of dialogue.
STUDENT_LABELS = ("student", "user", "learner", "kid", "child", "pupil")
TUTOR_LABELS = ("tutor", "assistant", "teacher")
OTHER_LABELS = ("me", "you")

# "Label: text", allowing markdown around the label ("**Student:**", "> Tim:", "- TIM:").
# The label is a short word or two; what follows the colon is the turn's text.
_LABEL = re.compile(r"^\s*[*_#>\-\s]*([A-Za-z][\w .'-]{0,24}?)\s*[*_]*\s*:(?:[*_]+)?\s*(.*)$")
# "*Alex: ..." - a small model writing a scene with a named character.
_NAMED_SPEAKER = re.compile(r"^\s*\*{1,2}\s*[A-Z][a-z]+\s*\*{0,2}\s*:")
# "I'm Sarah" / "my name is Max": a self-introduction by name (the name's capital matters).
_SELF_NAME = re.compile(r"\b(?i:i['’]m called|i am called|i['’]m|i am|my name is|my name['’]s|call me)\s+([A-Z][a-z]+)\b")
# Capitalised words that follow "I'm" without being names.
_NOT_NAMES = {"So", "Sorry", "Glad", "Happy", "Here", "Not", "Just", "Really", "Very", "Always", "Also", "Still",
              "Excited", "Sure", "Afraid", "Fine", "Good", "Great", "Okay", "Ok", "Only", "Going", "Now"}  # fmt: skip


def speaker_labels(tutor_name: str) -> frozenset[str]:
    """Every label (lower case) that starts a turn in a chat with a tutor called `tutor_name`."""
    return frozenset({*STUDENT_LABELS, *TUTOR_LABELS, *OTHER_LABELS, tutor_name.lower()})


def split_label(line: str) -> tuple[str, str] | None:
    """(label as written, the text after it) when the line starts with "Label:", else None.
    Any word counts here; callers decide which labels they accept."""
    m = _LABEL.match(line)
    return (m.group(1).strip(), m.group(2)) if m else None


def is_speaker_line(line: str, tutor_name: str) -> bool:
    """The line starts a turn of some speaker ("Student: ...", "Tim: ...")."""
    found = split_label(line)
    return found is not None and found[0].lower() in speaker_labels(tutor_name)


def is_named_speaker_line(line: str) -> bool:
    """The line gives a named character a line, scene-style ("*Alex: ...")."""
    return _NAMED_SPEAKER.match(line) is not None


def starts_other_speaker(text: str, tutor_name: str) -> bool:
    """True once a line after the first begins another speaker's turn."""
    return any(is_speaker_line(line, tutor_name) for line in text.strip().splitlines()[1:])


def clean_reply(text: str, tutor_name: str) -> str:
    """Keep only the speaker's own words: drop a leading label, stop where another speaker starts."""
    lines = text.strip().splitlines()
    if lines and is_speaker_line(lines[0], tutor_name):
        lines[0] = split_label(lines[0])[1]
    kept = [lines[0]] if lines else []
    for line in lines[1:]:
        if is_speaker_line(line, tutor_name):
            break
        kept.append(line)
    # Stray markdown emphasis left where the model stopped ("... great!\n**").
    return "\n".join(kept).strip().strip('"').strip().rstrip("*").strip()


def may_become_speaker_label(text: str, tutor_name: str) -> bool:
    """True while a reply streamed so far could still turn into a leading label ("Tim:"), which
    clean_reply would then remove: text already sent to a client cannot be taken back."""
    if "\n" in text.strip():
        return False
    word = text.strip().strip("*").strip().lower()
    return any(label.startswith(word) for label in speaker_labels(tutor_name))


def introduced_names(text: str) -> set[str]:
    """Names the speaker gives themself ("I'm Sarah" -> {"Sarah"})."""
    return {m.group(1) for m in _SELF_NAME.finditer(text)} - _NOT_NAMES


def names_pattern(names: Iterable[str]) -> re.Pattern | None:
    """One case-insensitive pattern for a list of names (other assistants): a space in a name
    also matches no space ("Chat GPT" finds "ChatGPT"), and a version may follow ("GPT-4o",
    "SmolLM2"). None for an empty list."""
    parts = [r"\s*".join(re.escape(word) for word in name.split()) for name in names if name.strip()]
    if not parts:
        return None
    return re.compile(r"\b(?:" + "|".join(parts) + r")(?:-?\d[\w.]*)?\b", re.I)
