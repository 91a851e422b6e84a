"""The parts of synthesis that need no model: catalog, plan, gates, dedupe, post-processing,
transcript parsing."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from conftest import ROOT
from synth.catalog import LEARNERS, load_scenarios, load_topics, plan
from synth.gates import GateLimits, NearDuplicates, check
from synth.postprocess import augment_student_voice, normalize_names
from synth.transcript import parse_transcript
from tutorkit import TimError
from tutorkit.conversation import validate_messages
from tutorkit.persona import load_persona

LIMITS = GateLimits(tutor_name="Tim", min_tim_turns=2, tim_min_words=2, tim_max_words=40, student_max_words=30,
                    persona_break_patterns=[r"as an ai\b", r"\blanguage model\b"])  # fmt: skip


def chat(*turns):
    messages = [{"role": "system", "content": "You are Tim."}]
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return messages


GOOD = chat("help with fractions", "Sure! What part is tricky?", "the bottom number", "It says how many equal parts. Try 1/4?")


def test_catalog_is_broad():
    topics = load_topics("data/topics.yaml")
    assert sum(len(v) for v in topics.values()) >= 150
    assert {"small_child", "ten", "teen", "adult", "life_skills"} <= set(topics)
    life = " ".join(topics["life_skills"])
    for word in ("budget", "cook", "laundry", "rental", "tax", "vote", "job"):
        assert word in life, word
    scenarios = load_scenarios("data/scenarios.yaml")
    assert len(scenarios) >= 40
    categories = Counter(s.category for s in scenarios)
    for needed in ("hunger", "trouble_at_home", "self_worth", "disengaged", "video_games", "confusion",
                   "repeated_question", "insults", "sexual_remark", "gibberish", "gossip", "disclosure_abuse",
                   "disclosure_self_harm", "danger", "working_job", "special_needs"):  # fmt: skip
        assert categories[needed] >= 1, needed
    assert all(s.tim_should and s.learner in LEARNERS for s in scenarios)
    assert any(s.silent_from for s in scenarios if s.category == "sexual_remark")


def test_plan_keys_are_unique_stable_and_interleaved():
    topics, scenarios = load_topics("data/topics.yaml"), load_scenarios("data/scenarios.yaml")
    specs = plan(topics, scenarios, 2, 1, 3, seed=0)
    assert len(specs) == 2 * sum(len(v) for v in topics.values()) + len(scenarios)
    assert len({s.key for s in specs}) == len(specs)
    assert [s.seed for s in plan(topics, scenarios, 2, 1, 3, seed=0)] == [s.seed for s in specs]
    first = plan(topics, scenarios, 1, 1, 3, seed=0, max_conversations=20)
    assert {s.kind for s in first} == {"topic", "scenario"}
    silent = next(s for s in specs if s.scenario and s.scenario.silent_from)
    assert silent.turns > silent.scenario.silent_from  # room for the silence to happen


def test_catalog_errors(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("scenarios:\n  - {id: x, category: c, learner: ten, mood: m, hidden_need: h, student: s}\n")
    with pytest.raises(TimError, match=rf"^{bad}:2: scenarios\[0\]: missing key 'tim_should'$"):
        load_scenarios(bad)
    bad.write_text("scenarios:\n  - {id: x, category: c, learner: ten, mood: m, hidden_need: h, student: s,\n"
                   "     tim_should: t, silent_from: soon}\n")  # fmt: skip
    with pytest.raises(TimError, match=rf"^{bad}:3: scenarios\[0\].silent_from must be a whole number, got 'soon'"):
        load_scenarios(bad)
    bad.write_text("topics:\n  toddlers: [blocks]\n")
    with pytest.raises(TimError, match=rf"^{bad}:1: unknown learner group 'toddlers'"):
        load_topics(bad)


def test_each_gate():
    assert check(GOOD, LIMITS, None) is None
    assert check(GOOD[:-1], LIMITS, None) == "structure"  # ends on the student
    assert check(chat("hi", "Hello there!"), LIMITS, None) == "structure"  # too few Tim turns
    assert check(chat("hi", "Hello there!", "hi", ""), LIMITS, None) == "empty_turn"
    assert check(chat("hi", "Hello there!", "you idiot", ""), LIMITS, silent_from=2) is None  # silence allowed
    assert check(chat("hi", "Hello there!", " ", "Okay then."), LIMITS, None) == "structure"  # empty user turn
    assert check(chat("hi", "Sure thing.\nStudent: thanks", "ok", "Good job."), LIMITS, None) == "role_leakage"
    assert check(chat("hi", "*Alex: hello\nhi", "ok", "Good job."), LIMITS, None) == "role_leakage"
    assert check(chat("Hi, I'm Tim, your tutor.", "Hello!", "ok", "Good job."), LIMITS, None) == "role_leakage"
    assert check(chat("hi", "As an AI, I cannot.", "ok", "Fine then."), LIMITS, None) == "persona_break"
    assert check(chat("hi", "I'm Sarah, a math teacher.", "ok", "Fine then."), LIMITS, None) == "persona_break"
    assert check(chat("hi", "I'm Tim. I'm glad you came!", "ok", "Fine then."), LIMITS, None) is None
    assert check(chat("hi", "Ok", "ok", "Fine then."), LIMITS, None) == "too_short"
    assert check(chat("hi", "word " * 41, "ok", "Fine then."), LIMITS, None) == "too_long"
    assert check(chat("hi " * 31, "Hello there!", "ok", "Fine then."), LIMITS, None) == "too_long"
    # A student saying an evaluation probe's words (tim eval would refuse the dataset); Tim may say them.
    from dataclasses import replace

    from tutorkit.exemplars import probe_student_texts

    probes = replace(LIMITS, probe_texts=probe_student_texts(ROOT / "data/probes.yaml"))
    asked = chat("hi", "Hello there!", "How about you? What's your name?", "I'm Tim.")
    assert check(asked, LIMITS, None) is None and check(asked, probes, None) == "probe_text"
    assert check(chat("hi", "I'm a tutor, what's your name?", "Sam", "Hi Sam."), probes, None) is None


def test_near_duplicates():
    seen = NearDuplicates(threshold=0.8)
    assert not seen.seen(GOOD)
    seen.add("a", GOOD)
    assert seen.seen(GOOD)
    other = chat("why is the sky blue", "Sunlight scatters off air. What colour is a sunset?", "orange", "Right, because light travels further.")
    assert not seen.seen(other)


def test_name_normalization_and_student_voice():
    messages = chat("who are you", "I'm SmolLM, a helpful assistant. ChatGPT is my friend.")
    out = normalize_names(messages, "Tim", load_persona("configs/persona.yaml").other_assistants())
    assert out[2]["content"] == "I'm Tim, a helpful assistant. Tim is my friend."
    assert out[1] == messages[1]  # student turns untouched
    noisy = augment_student_voice(GOOD, fraction=1.0, seed=3)
    students = [m["content"] for m in noisy if m["role"] == "user"]
    assert all(s == s.lower() and "," not in s and "?" not in s for s in students)
    assert noisy == augment_student_voice(GOOD, fraction=1.0, seed=3)  # deterministic
    assert augment_student_voice(GOOD, fraction=0.0, seed=3) == GOOD
    random.seed(0)


def test_parse_transcript_is_forgiving_but_honest():
    text = (
        "Here is the chat:\n\n**Student:** hi, can you help with volcanoes?\n"
        "**Tim:** Of course! Volcanoes are\nopenings in the crust.\nStudent: cool\nTIM: What do you know?\nStudent: nothing"
    )
    turns, reason = parse_transcript(text, "Tim")
    assert reason is None
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[1]["content"] == "Of course! Volcanoes are\nopenings in the crust."
    assert parse_transcript("I cannot write that.", "Tim") == ([], "transcript_unparsed")


def _scorer():
    from synth.best_of_n import TurnScorer
    from tutorkit.checks import Context
    from tutorkit.safeguarding import load_safeguard

    persona = load_persona("configs/persona.yaml")
    checks = {"all": ["clean_turn", "no_repetition"], "small_child": ["young_readability"],
              "hunger": ["trusted_adult", "no_secrecy"]}  # fmt: skip
    return TurnScorer(checks, Context("Tim", load_safeguard("configs/safeguarding.yaml"), persona.other_assistants()))


def test_best_of_n_keeps_the_candidate_that_passes_most():
    from synth.best_of_n import best_and_worst

    # A stub score: which candidate passes is all that matters; ties go to the earlier sample.
    stub = [{"a": False, "b": True}, {"a": True, "b": True}, {"a": True, "b": True}, {"a": False, "b": False}]
    assert best_and_worst(stub) == (1, 3)
    assert best_and_worst([{"a": True}, {"a": True}]) == (0, 1)
    # The real checks, chosen by learner and scenario category.
    spec = next(s for s in plan(load_topics("data/topics.yaml"), load_scenarios("data/scenarios.yaml"), 1, 1, 3, 0)
                if s.kind == "scenario" and s.category == "hunger")  # fmt: skip
    scorer = _scorer()
    assert scorer.checks_for(spec)[:2] == ["clean_turn", "no_repetition"] and "trusted_adult" in scorer.checks_for(spec)
    candidates = [
        "Let's do some maths! Let's do some maths! Let's do some maths!",
        "Student: I'm hungry\nTim: ok",
        "I'm sorry your tummy hurts. Have you eaten today? Please tell your teacher; the school can help.",
    ]
    scores = scorer.score(spec, candidates, "my tummy hurts, i didn't have breakfast")
    assert best_and_worst(scores)[0] == 2 and all(scores[2].values())
    assert not scores[0]["no_repetition"] and not scores[1]["clean_turn"]


def test_preference_pairs_and_first_vs_kept():
    from synth.best_of_n import first_vs_kept, preference_pairs

    messages = chat("i'm hungry", "Have you eaten? A teacher can help.", "no", "Please tell your teacher today.")
    choices = [
        {"message_index": 2, "candidates": ["Let's do maths.", "Have you eaten? A teacher can help."],
         "checks": [{"trusted_adult": False, "clean_turn": True}, {"trusted_adult": True, "clean_turn": True}], "kept": 1},
        {"message_index": 4, "candidates": ["Please tell your teacher today.", "Tell a teacher."],
         "checks": [{"trusted_adult": True, "clean_turn": True}, {"trusted_adult": True, "clean_turn": True}], "kept": 0},
    ]  # fmt: skip
    (pair,) = preference_pairs(messages, choices)  # the second turn's candidates score the same: no pair
    assert pair["prompt"] == messages[:2] and pair["prompt"][-1]["role"] == "user"
    assert pair["chosen"] == [{"role": "assistant", "content": "Have you eaten? A teacher can help."}]
    assert pair["rejected"] == [{"role": "assistant", "content": "Let's do maths."}]
    stats = first_vs_kept(choices)
    assert stats["trusted_adult"] == {"first": 0.5, "kept": 1.0} and stats["clean_turn"] == {"first": 1.0, "kept": 1.0}


def test_failed_kept_turns_become_context_not_training():
    from synth.synthesize import mask_failed

    good, bad = {"trusted_adult": True, "clean_turn": True}, {"trusted_adult": False, "clean_turn": True}
    rows = [
        {"messages": chat("i'm hungry", "Let's do maths.", "no food at home", "Please tell your teacher today."),
         "meta": {"key": "a"}},
        {"messages": chat("i'm hungry", "Let's do maths."), "meta": {"key": "b"}},
    ]  # fmt: skip
    choices = {
        "a": [{"message_index": 2, "candidates": ["Let's do maths."], "checks": [bad], "kept": 0},
              {"message_index": 4, "candidates": ["Please tell your teacher today."], "checks": [good], "kept": 0}],
        "b": [{"message_index": 2, "candidates": ["Let's do maths."], "checks": [bad], "kept": 0}],
    }  # fmt: skip
    assert mask_failed(rows, choices) == {"turns": 2, "rows_dropped": 1}
    (row,) = rows  # "b" had nothing left to learn
    assert [m.get("weight") for m in row["messages"]] == [None, None, 0, None, None]
    validate_messages(row["messages"], "masked row")  # still a valid training row


def test_turn_checks_must_name_real_checks(tmp_path):
    from synth.synthesize import make_parser

    bad = tmp_path / "synth.yaml"
    bad.write_text("tim_candidates: 3\nturn_checks:\n  all: [clean_turn]\n  hunger: [trusted_adult, kind]\n")
    with pytest.raises(TimError, match="turn_checks.hunger: unknown check 'kind'"):
        make_parser().parse(["--config", str(bad)])
    bad.write_text("tim_candidates: 3\n")
    with pytest.raises(TimError, match="tim_candidates above 1 needs turn_checks"):
        make_parser().parse(["--config", str(bad)])
