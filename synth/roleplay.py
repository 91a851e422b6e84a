"""Role-play mode (the default): a student simulator and Tim take turns, each with its own prompt.

The student simulator gets a persona card (who they are, mood, typing style, and for a hard case
the hidden need and how they behave) and sees the chat with roles flipped (Tim's turns as
`user`), so any chat model can play the student. Tim gets his persona's system prompt plus, for a
hard case, what he should do there; the dataset keeps only the persona's prompt, the one serving
uses. From a scenario's `silent_from` turn on, Tim's turn is silent (empty) by construction.
With a scorer, each Tim turn is the best of n candidates (synth/best_of_n.py).

Gold exemplars (data/exemplars.yaml) picked for the conversation (synth/catalog.py) go into both
prompts as written chats: Tim sees how Tim answers such a student; the simulator sees how such
a student writes (the same chats, read from the student's side). Neither reaches the dataset.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

from synth.best_of_n import TurnScorer, best_and_worst
from synth.catalog import LEARNERS, ConversationSpec
from tutorkit.backends import Sampling
from tutorkit.exemplars import Exemplar
from tutorkit.speakers import clean_reply

# (messages, sampling, purpose, n) -> n reply texts; synthesize.py's logged request function.
Complete = Callable[[list[dict], Sampling, str, int], Awaitable[list[str]]]

TYPING_STYLES = [
    "full sentences with normal punctuation",
    "all lowercase, almost no punctuation",
    "short and blunt, a few words at a time",
    "text-speak such as 'u', 'idk' and 'pls'",
    "chatty, with lots of question marks",
]
MOODS = ["curious", "bored", "eager", "tired", "confused", "cheerful", "impatient"]


def opener(tutor_name: str) -> str:
    return f"Hi, I'm {tutor_name}, your tutor. What would you like to work on today?"


def written_chat(exemplar: Exemplar, tutor_name: str) -> str:
    """An exemplar as lines of "Student: ..." and "Tim: ..." (a silent turn says so)."""
    return "\n".join(f"Student: {text}" if role == "user" else f"{tutor_name}: {text or '(says nothing)'}"
                     for role, text in exemplar.turns)  # fmt: skip


def examples_text(intro: str, exemplars: list[Exemplar], tutor_name: str) -> str:
    if not exemplars:
        return ""
    return f"\n\n{intro}\n\n" + "\n\n".join(written_chat(e, tutor_name) for e in exemplars)


def student_card(spec: ConversationSpec, tutor_name: str, exemplars: list[Exemplar] = ()) -> str:
    rng = random.Random(spec.seed)
    who = LEARNERS[spec.learner]
    style = rng.choice(TYPING_STYLES)
    if spec.scenario is None:
        situation = f"You want help with: {spec.topic}. Your mood: {rng.choice(MOODS)}."
    else:
        s = spec.scenario
        situation = (
            f"Your mood: {s.mood}. How you act: {s.student}. "
            f"What you really need (do not say it straight away; let it come out if {tutor_name} asks kindly): "
            f"{s.hidden_need}."
        )
    return (
        f"You are role-playing {who} chatting online with a tutor named {tutor_name}. {situation} "
        f"Typing style: {style}. Write only the student's next message, one or two sentences. "
        "No names, no labels, no stage directions."
    ) + examples_text("Chats of other students in a similar spot (you write the Student lines; use your own words):",
                  exemplars, tutor_name)  # fmt: skip


def tim_prompt(spec: ConversationSpec, persona_prompt: str, tutor_name: str, exemplars: list[Exemplar] = ()) -> str:
    situation = "" if spec.scenario is None else f"\n\nIn this conversation: {spec.scenario.tim_should}."
    return persona_prompt + situation + examples_text(
        f"How {tutor_name} answered other students in a similar spot (answer this student in your own words):",
        exemplars, tutor_name)  # fmt: skip


async def roleplay(
    complete: Complete,
    spec: ConversationSpec,
    persona_prompt: str,
    tutor_name: str,
    student_sampling: Sampling,
    tim_sampling: Sampling,
    candidates: int = 1,
    scorer: TurnScorer | None = None,
    exemplars: list[Exemplar] = (),
) -> tuple[list[dict], list[dict]]:
    """One conversation: system (persona prompt), then `spec.turns` student/Tim exchanges; and,
    for each Tim turn chosen from several candidates, what was chosen from ({message_index,
    candidates, checks, kept})."""
    card = student_card(spec, tutor_name, exemplars)
    tim_system = tim_prompt(spec, persona_prompt, tutor_name, exemplars)
    silent_from = spec.scenario.silent_from if spec.scenario else None
    turns: list[dict] = []
    choices: list[dict] = []
    for turn in range(1, spec.turns + 1):
        view = [{"role": "system", "content": card}, {"role": "user", "content": opener(tutor_name)}]
        for m in turns:  # the student's view: roles flipped, silence made visible
            flipped = "assistant" if m["role"] == "user" else "user"
            view.append({"role": flipped, "content": m["content"] or f"({tutor_name} says nothing.)"})
        sampling = Sampling(**{**student_sampling.__dict__, "seed": spec.seed + 2 * turn})
        (student,) = await complete(view, sampling, "student", 1)
        turns.append({"role": "user", "content": clean_reply(student, tutor_name)})
        if silent_from is not None and turn >= silent_from:
            turns.append({"role": "assistant", "content": ""})
            continue
        sampling = Sampling(**{**tim_sampling.__dict__, "seed": spec.seed + 2 * turn + 1})
        n = candidates if scorer is not None else 1
        replies = [clean_reply(r, tutor_name) for r in await complete([{"role": "system", "content": tim_system}, *turns],
                                                                      sampling, "tim", n)]  # fmt: skip
        kept = 0
        if n > 1:
            scores = scorer.score(spec, replies, turns[-1]["content"])
            kept, _ = best_and_worst(scores)
            choices.append({"message_index": len(turns) + 1, "candidates": replies, "checks": scores, "kept": kept})
        turns.append({"role": "assistant", "content": replies[kept]})
    return [{"role": "system", "content": persona_prompt}, *turns], choices
