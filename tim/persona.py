"""Tim's persona (configs/persona.yaml): who he is, turned into the system prompt that synthesis,
training data and serving all share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tim.config import make_config_parser, parse_config


@dataclass
class Persona:
    name: str = field(default="Tim", metadata={"help": "The tutor's name, in prompts and replies."})
    tone: str = field(default="warm, patient, cool-headed and professional", metadata={"help": "How he sounds."})
    techniques: list[str] = field(default_factory=list, metadata={"help": "How he treats a learner."})
    system_prompt: str = field(
        default="You are {name}, a tutor. Your tone is {tone}.\n{techniques}",
        metadata={"help": "Template; {name}, {tone} and {techniques} are filled in."},
    )

    def render_system_prompt(self) -> str:
        techniques = "\n".join(f"- {t}" for t in self.techniques)
        return self.system_prompt.format(name=self.name, tone=self.tone, techniques=techniques).strip()


def load_persona(path: str | Path) -> Persona:
    parser = make_config_parser((Persona,), prog="persona", doc=__doc__)
    (persona,) = parse_config(parser, ["--config", str(path)])
    return persona
