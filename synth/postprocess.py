"""What happens to a conversation after generation and before the quality gates.

- Name normalization: the generator may call the tutor by its own name ("I'm SmolLM") or another
  assistant's; those names (the persona's `other_assistant_names`) are rewritten to the
  persona's name in Tim's turns.
- Student-voice augmentation: a configurable share of student turns is made to look typed by a
  real student (lowercased, punctuation stripped, a typo), so Tim learns to read messy input.
Both are deterministic for a conversation's seed.
"""

from __future__ import annotations

import random
import re
import string


def normalize_names(messages: list[dict], tutor_name: str, other_names: re.Pattern | None) -> list[dict]:
    """Tim's turns with every match of `other_names` (Persona.other_assistants()) rewritten to
    `tutor_name`."""
    if other_names is None:
        return messages
    return [
        {**m, "content": other_names.sub(tutor_name, m["content"])} if m["role"] == "assistant" else m for m in messages
    ]


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 4 or not word.isalpha():
        return word
    i = rng.randrange(len(word) - 1)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def student_voice(text: str, rng: random.Random) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation.replace("'", "")))
    words = text.split()
    if words:
        i = rng.randrange(len(words))
        words[i] = _typo(words[i], rng)
    return " ".join(words)


def augment_student_voice(messages: list[dict], fraction: float, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for m in messages:
        if m["role"] == "user" and m["content"] and rng.random() < fraction:
            m = {**m, "content": student_voice(m["content"], rng) or m["content"]}
        out.append(m)
    return out
