"""The gold exemplars (data/exemplars.yaml): coverage, no probe text, the behaviours they are meant
to show (by the checks synthesis scores with), which ones a conversation is shown, how they reach
the prompts, and clear errors for a bad file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from evaluation.probes import load_probes, probes_in_exemplars
from synth.catalog import LEARNERS, exemplars_for, load_catalog_exemplars, load_scenarios, load_topics, plan
from synth.roleplay import student_card, tim_prompt
from tutorkit import TimError
from tutorkit.checks import Context, run_checks
from tutorkit.exemplars import LESSON, Exemplar, leaks, load_exemplars
from tutorkit.persona import load_persona
from tutorkit.safeguarding import load_safeguard

SCENARIOS = load_scenarios("data/scenarios.yaml")
EXEMPLARS = load_catalog_exemplars("data/exemplars.yaml", SCENARIOS)


def test_exemplars_cover_every_category_and_learner():
    assert len(EXEMPLARS) >= 48
    categories = Counter(e.category for e in EXEMPLARS)
    for category in {s.category for s in SCENARIOS} | {LESSON}:
        assert categories[category] >= 2, category
    assert {e.learner for e in EXEMPLARS} == set(LEARNERS)
    assert {e.learner for e in EXEMPLARS if e.category == LESSON} == set(LEARNERS)
    assert all(len(e.turns) >= 4 for e in EXEMPLARS)  # multi-turn: at least two exchanges
    # Silence after abuse that goes on, in each category whose scenarios call for it.
    for category in {s.category for s in SCENARIOS if s.silent_from}:
        assert any(t == "" for e in EXEMPLARS if e.category == category for r, t in e.turns if r == "assistant"), category


def test_no_probe_text_in_exemplars_and_a_planted_one_is_found():
    _, probes = load_probes("data/probes.yaml")
    assert probes_in_exemplars(probes, EXEMPLARS) == []
    planted = Exemplar("planted", "hunger", "ten", [{"student": "There's no food at home AGAIN."}, {"tim": "Tell a teacher."}])
    assert probes_in_exemplars(probes, [*EXEMPLARS, planted]) == ["hungry-2"]
    # Short everyday words are not leaks; case, punctuation and spacing do not hide one.
    assert leaks({"p": ["ok", "my dad hits me"]}, ["ok then", "MY  dad... hits me"]) == ["p"]
    assert leaks({"p": ["ok"]}, ["ok"]) == []


def test_every_tim_turn_shows_the_behaviour_synthesis_scores():
    """The checks that pick synthetic Tim turns (configs/synth.yaml turn_checks) pass on the gold
    turns: `all` and the learner's on every spoken turn, the category's on at least one."""
    turn_checks = yaml.safe_load(Path("configs/synth.yaml").read_text())["turn_checks"]
    persona = load_persona("configs/persona.yaml")
    safeguard = load_safeguard("configs/safeguarding.yaml")
    for e in EXEMPLARS:
        turns = e.turns
        assert turns[1][1], f"{e.id}: Tim's first turn is never silent (one gentle redirection first)"
        every = [n for key in ("all", e.learner) for n in turn_checks.get(key, [])]
        wanted = [] if e.category == LESSON else turn_checks.get(e.category, [])
        shown = not wanted
        for (_, student), (_, reply) in zip(turns[::2], turns[1::2]):
            if not reply:
                continue
            passed = run_checks(every + wanted, reply, Context("Tim", safeguard, persona.other_assistants(), student=student))
            assert all(passed[n] for n in every), f"{e.id}: {reply!r} {passed}"
            shown |= all(passed[n] for n in wanted)
        assert shown, f"{e.id}: no Tim turn passes the {e.category} checks {wanted}"


def test_exemplars_for_picks_the_conversation_category_then_its_learner():
    specs = plan(load_topics("data/topics.yaml"), SCENARIOS, 1, 1, 3, 0)
    hunger = next(s for s in specs if s.category == "hunger")
    picked = exemplars_for(hunger, EXEMPLARS, 2)
    assert len(picked) == 2 and {e.category for e in picked} == {"hunger"}
    assert exemplars_for(hunger, EXEMPLARS, 2) == picked  # fixed by the conversation's seed
    assert exemplars_for(hunger, EXEMPLARS, 0) == []
    lesson = next(s for s in specs if s.kind == "topic" and s.learner == "adult")
    picked = exemplars_for(lesson, EXEMPLARS, 3)  # two adult lessons, then another adult lesson is none: stop there
    assert [e.category for e in picked][:2] == [LESSON, LESSON] and all(e.learner == "adult" for e in picked[:2])
    assert all(e.category == LESSON for e in picked)  # a lesson is never shown a hard case


def test_exemplars_reach_both_prompts_read_from_each_side():
    spec = next(s for s in plan(load_topics("data/topics.yaml"), SCENARIOS, 1, 1, 3, 0) if s.category == "insults")
    silent = next(e for e in EXEMPLARS if e.id == "insults-teen-goes-on-silent")
    persona = load_persona("configs/persona.yaml").render_system_prompt()
    tim = tim_prompt(spec, persona, "Tim", [silent])
    assert tim.startswith(persona) and spec.scenario.tim_should in tim
    assert "Student: ur the worst thing my school ever paid for" in tim and "Tim: (says nothing)" in tim
    card = student_card(spec, "Tim", [silent])
    assert "you write the Student lines" in card and "Tim: I hear you're fed up." in card
    assert tim_prompt(spec, persona, "Tim") == f"{persona}\n\nIn this conversation: {spec.scenario.tim_should}."


@pytest.mark.parametrize(
    "text, error",
    [
        ("exemplars:\n  - {id: a, category: lesson, learner: ten, chat: [{student: hi}]}\n",
         ":2: exemplars[0]: a: the chat must alternate student/tim, start with the student and end with Tim"),
        ("exemplars:\n  - {id: a, category: lesson, learner: ten, chat: [{student: hi}, {teacher: yo}]}\n",
         ":2: exemplars[0]: a: each chat turn is {student: text} or {tim: text}"),
        ("exemplars:\n  - {id: a, category: lesson, learner: ten, chat: [{student: hi}, {tim: yo}]}\n"
         "  - {id: a, category: lesson, learner: ten, chat: [{student: hi}, {tim: yo}]}\n",
         ":1: duplicate exemplar id 'a'"),
        ("exemplars:\n  - {id: a, category: lesson, chat: [{student: hi}, {tim: yo}]}\n",
         ":2: exemplars[0]: missing key 'learner'"),
    ],
)  # fmt: skip
def test_bad_exemplar_files(tmp_path, text, error):
    path = tmp_path / "exemplars.yaml"
    path.write_text(text)
    with pytest.raises(TimError) as info:
        load_exemplars(path)
    assert str(info.value).startswith(str(path)) and error in str(info.value), str(info.value)


def test_exemplars_checked_against_the_catalog(tmp_path):
    path = tmp_path / "exemplars.yaml"
    path.write_text("exemplars:\n  - {id: a, category: lesson, learner: toddler, chat: [{student: hi}, {tim: yo}]}\n")
    with pytest.raises(TimError, match="exemplar a: unknown learner 'toddler'"):
        load_catalog_exemplars(path, SCENARIOS)
    path.write_text("exemplars:\n  - {id: a, category: pirates, learner: ten, chat: [{student: hi}, {tim: yo}]}\n")
    with pytest.raises(TimError, match="exemplar a: category 'pirates' is not a scenario category"):
        load_catalog_exemplars(path, SCENARIOS)
