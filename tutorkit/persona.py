"""Tim's persona (configs/persona.yaml): who he is, turned into the system prompt that synthesis,
training data and serving all share, plus the names he must never give himself."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tutorkit.config import load_dataclass
from tutorkit.speakers import names_pattern


@dataclass
class Persona:
    name: str = field(default="Tim", metadata={"help": "The tutor's name, in prompts, replies and the app."})
    tone: str = field(default="warm, patient, cool-headed and professional", metadata={"help": "How he sounds."})
    techniques: list[str] = field(default_factory=list, metadata={"help": "How he treats a learner."})
    system_prompt: str = field(
        default="You are {name}, a tutor. Your tone is {tone}.\n{techniques}",
        metadata={"help": "Template; {name}, {tone} and {techniques} are filled in."},
    )
    other_assistant_names: list[str] = field(
        default_factory=list,
        metadata={"help": "Names he must never give himself (other assistants, the base model's own): synthesis "
                  "rewrites them to his name, evaluation fails a reply that uses them."},
    )

    def __post_init__(self):
        if not re.fullmatch(r"[A-Z][\w'-]*", self.name or ""):
            raise ValueError(f"name must be one capitalised word, got {self.name!r}")
        try:
            self.render_system_prompt()
        except (KeyError, IndexError) as e:
            raise ValueError(f"system_prompt: unknown placeholder {e}; use {{name}}, {{tone}}, {{techniques}}") from None

    def render_system_prompt(self) -> str:
        techniques = "\n".join(f"- {t}" for t in self.techniques)
        return self.system_prompt.format(name=self.name, tone=self.tone, techniques=techniques).strip()

    def other_assistants(self) -> re.Pattern | None:
        """The pattern that finds any of `other_assistant_names` in a text."""
        return names_pattern(self.other_assistant_names)


def load_persona(path: str | Path) -> Persona:
    return load_dataclass(Persona, path)
