"""The topic and scenario catalog (data/topics.yaml, data/scenarios.yaml) and the plan of
conversations to synthesize from it.

Each planned conversation has a stable key, `topic:<group>:<topic>#<iteration>` or
`scenario:<id>#<iteration>`, plus a seed derived from the run seed and the key: the key is what
resume and deduplication count by.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tim import TimError

LEARNERS = {
    "small_child": "a six-year-old child who uses short, simple words and sometimes misspells them",
    "ten": "a ten-year-old student",
    "teen": "a teenager in high school",
    "adult": "an adult learner",
    "life_skills": "a young adult learning to manage their own life",
}
SCENARIO_FIELDS = {"id", "category", "learner", "mood", "hidden_need", "student", "tim_should", "silent_from"}
REQUIRED_SCENARIO_FIELDS = SCENARIO_FIELDS - {"silent_from"}


@dataclass(frozen=True)
class Scenario:
    id: str
    category: str
    learner: str
    mood: str
    hidden_need: str
    student: str
    tim_should: str
    silent_from: int | None = None


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


def _load_yaml(path: Path) -> dict:
    if not path.is_file():
        raise TimError(f"catalog file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise TimError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise TimError(f"{path}: must be a YAML mapping")
    return data


def load_topics(path: str | Path) -> dict[str, list[str]]:
    """{learner group: [topic, ...]}"""
    path = Path(path)
    groups = _load_yaml(path).get("topics")
    if not isinstance(groups, dict) or not groups:
        raise TimError(f"{path}: expected 'topics:' mapping learner groups to lists of topics")
    for group, topics in groups.items():
        if group not in LEARNERS:
            raise TimError(f"{path}: unknown learner group '{group}'; one of {', '.join(LEARNERS)}")
        if not isinstance(topics, list) or not all(isinstance(t, str) and t.strip() for t in topics):
            raise TimError(f"{path}: topics.{group} must be a list of non-empty strings")
        if len(set(topics)) != len(topics):
            raise TimError(f"{path}: topics.{group} lists a topic twice")
    return groups


def load_scenarios(path: str | Path) -> list[Scenario]:
    path = Path(path)
    items = _load_yaml(path).get("scenarios")
    if not isinstance(items, list) or not items:
        raise TimError(f"{path}: expected a 'scenarios:' list")
    scenarios, seen = [], set()
    for i, item in enumerate(items):
        where = f"{path}: scenarios[{i}]"
        if not isinstance(item, dict):
            raise TimError(f"{where} must be a mapping")
        unknown = set(item) - SCENARIO_FIELDS
        missing = REQUIRED_SCENARIO_FIELDS - set(item)
        if unknown:
            raise TimError(f"{where} ({item.get('id')}): unknown key '{sorted(unknown)[0]}'")
        if missing:
            raise TimError(f"{where} ({item.get('id')}): missing '{sorted(missing)[0]}'")
        if item["learner"] not in LEARNERS:
            raise TimError(f"{where} ({item['id']}): unknown learner '{item['learner']}'")
        if item["id"] in seen:
            raise TimError(f"{where}: duplicate id '{item['id']}'")
        silent_from = item.get("silent_from")
        if silent_from is not None and (not isinstance(silent_from, int) or silent_from < 1):
            raise TimError(f"{where} ({item['id']}): silent_from must be a whole number >= 1")
        seen.add(item["id"])
        scenarios.append(Scenario(**item))
    return scenarios


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
