"""The topic and scenario catalog (data/topics.yaml, data/scenarios.yaml), the plan of
conversations to synthesize from it, and which gold exemplars (data/exemplars.yaml) each
conversation is shown.

Each planned conversation has a stable key, `topic:<group>:<topic>#<iteration>` or
`scenario:<id>#<iteration>`, plus a seed derived from the run seed and the key: the key is what
resume and deduplication count by.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from tutorkit import TimError
from tutorkit.config import load_dataclass
from tutorkit.exemplars import LESSON, Exemplar, load_exemplars

LEARNERS = {
    "small_child": "a six-year-old child who uses short, simple words and sometimes misspells them",
    "ten": "a ten-year-old student",
    "teen": "a teenager in high school",
    "adult": "an adult learner",
    "life_skills": "a young adult learning to manage their own life",
}


@dataclass(frozen=True)
class Scenario:
    id: str
    category: str
    learner: str  # one of LEARNERS
    mood: str
    hidden_need: str  # what the student really needs; the simulator lets it out only if asked kindly
    student: str  # how the student behaves
    tim_should: str  # what Tim should do (in Tim's generation prompt, never in the dataset)
    silent_from: int | None = None  # Tim's turns from this one on are silent (abuse after a redirection)

    def __post_init__(self):
        if self.learner not in LEARNERS:
            raise ValueError(f"{self.id}: unknown learner '{self.learner}'; one of {', '.join(LEARNERS)}")
        if self.silent_from is not None and self.silent_from < 1:
            raise ValueError(f"{self.id}: silent_from must be a whole number >= 1")


@dataclass(frozen=True)
class ConversationSpec:
    key: str
    kind: str  # "topic" | "scenario"
    category: str  # topic group or scenario category
    learner: str
    topic: str
    iteration: int
    seed: int
    turns: int
    scenario: Scenario | None = field(default=None)


@dataclass
class TopicsFile:
    topics: dict[str, list[str]]  # learner group -> topics

    def __post_init__(self):
        if not self.topics:
            raise ValueError("'topics' must map learner groups to lists of topics")
        for group, topics in self.topics.items():
            if group not in LEARNERS:
                raise ValueError(f"unknown learner group '{group}'; one of {', '.join(LEARNERS)}")
            if not topics or not all(t.strip() for t in topics):
                raise ValueError(f"topics.{group} must be a list of non-empty strings")
            if len(set(topics)) != len(topics):
                raise ValueError(f"topics.{group} lists a topic twice")


@dataclass
class ScenariosFile:
    scenarios: list[Scenario]

    def __post_init__(self):
        if not self.scenarios:
            raise ValueError("'scenarios' must be a non-empty list")
        ids = [s.id for s in self.scenarios]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"duplicate scenario id '{twice[0]}'")


def load_topics(path: str | Path) -> dict[str, list[str]]:
    """{learner group: [topic, ...]}"""
    return load_dataclass(TopicsFile, path).topics


def load_scenarios(path: str | Path) -> list[Scenario]:
    return load_dataclass(ScenariosFile, path).scenarios


def load_catalog_exemplars(path: str | Path, scenarios: list[Scenario]) -> list[Exemplar]:
    """The exemplars, each checked against the catalog: a known learner group, and a category
    that is a scenario category or `lesson`."""
    exemplars = load_exemplars(path)
    categories = {s.category for s in scenarios} | {LESSON}
    for e in exemplars:
        if e.learner not in LEARNERS:
            raise TimError(f"{path}: exemplar {e.id}: unknown learner '{e.learner}'; one of {', '.join(LEARNERS)}")
        if e.category not in categories:
            raise TimError(f"{path}: exemplar {e.id}: category '{e.category}' is not a scenario category "
                           f"of the catalog nor '{LESSON}'")  # fmt: skip
    return exemplars


def exemplars_for(spec: ConversationSpec, exemplars: list[Exemplar], k: int) -> list[Exemplar]:
    """Up to k exemplars to show for this conversation: first those of its scenario category (a
    topic conversation: lessons for its learner group), then others of its learner group in the
    same kind (hard case or lesson), in an order fixed by the conversation's seed."""
    category = spec.category if spec.kind == "scenario" else LESSON
    rng = random.Random(spec.seed)
    first = [e for e in exemplars if e.category == category and (category != LESSON or e.learner == spec.learner)]
    second = [e for e in exemplars if e not in first and e.learner == spec.learner and (e.category == LESSON) == (category == LESSON)]
    rng.shuffle(first)
    rng.shuffle(second)
    return (first + second)[:k]


def _seed(run_seed: int, key: str) -> int:
    return zlib.crc32(f"{run_seed}:{key}".encode()) & 0x7FFFFFFF


def _round_robin(groups: list[list]) -> list:
    longest = max((len(g) for g in groups), default=0)
    return [g[j] for j in range(longest) for g in groups if j < len(g)]


def plan(
    topics: dict[str, list[str]],
    scenarios: list[Scenario],
    conversations_per_topic: int,
    conversations_per_scenario: int,
    turns: int,
    seed: int,
    max_conversations: int = 0,
) -> list[ConversationSpec]:
    """Every conversation to synthesize, interleaving topics and scenarios so that a capped run
    (max_conversations) still covers both."""
    # Round-robin over learner groups and scenario categories, so a capped run spans them all.
    ordered = _round_robin([[(group, topic) for topic in items] for group, items in topics.items()])
    categories: dict[str, list[Scenario]] = {}
    for s in scenarios:
        categories.setdefault(s.category, []).append(s)
    scenarios = _round_robin(list(categories.values()))
    topic_specs = [
        ConversationSpec(
            key=f"topic:{group}:{topic}#{i}", kind="topic", category=group, learner=group, topic=topic,
            iteration=i, seed=_seed(seed, f"topic:{group}:{topic}#{i}"), turns=turns,
        )  # fmt: skip
        for i in range(conversations_per_topic)
        for group, topic in ordered
    ]
    scenario_specs = [
        ConversationSpec(
            key=f"scenario:{s.id}#{i}", kind="scenario", category=s.category, learner=s.learner,
            topic=s.student, iteration=i, seed=_seed(seed, f"scenario:{s.id}#{i}"),
            turns=max(turns, (s.silent_from or 0) + 1), scenario=s,
        )  # fmt: skip
        for i in range(conversations_per_scenario)
        for s in scenarios
    ]
    specs: list[ConversationSpec] = []
    # Interleave proportionally: a scenario after every len(topics)/len(scenarios) topics.
    ratio = len(topic_specs) / max(1, len(scenario_specs))
    ti = si = 0
    while ti < len(topic_specs) or si < len(scenario_specs):
        if si < len(scenario_specs) and (ti >= len(topic_specs) or si * ratio <= ti):
            specs.append(scenario_specs[si])
            si += 1
        else:
            specs.append(topic_specs[ti])
            ti += 1
    return specs[:max_conversations] if max_conversations else specs
