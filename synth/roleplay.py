"""Role-play mode: a student simulator and Tim take turns, each with its own system prompt.

The simulator sees the chat with roles flipped (Tim's turns as `user`), so any chat model can
play the student. Replies are cleaned with `clean_reply` (the same cleaning serving applies).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from tim.backends import ChatBackend, Sampling
from tim.conversation import clean_reply

LEARNERS = {
    "small_child": "a six-year-old child who uses short, simple words",
    "ten": "a ten-year-old student",
    "teen": "a teenager in high school",
    "adult": "an adult learner",
}
OPENER = "Hi, I'm Tim, your tutor. What would you like to work on today?"

@dataclass
class RoleplaySpec:
    topic: str
    learner: str
    turns: int
    seed: int


def _seed(spec: RoleplaySpec, turn: int, who: str) -> int:
    return zlib.crc32(f"{spec.seed}:{spec.topic}:{turn}:{who}".encode()) & 0x7FFFFFFF


def student_system_prompt(spec: RoleplaySpec, tutor_name: str) -> str:
    who = LEARNERS.get(spec.learner, spec.learner)
    return (
        f"You are role-playing {who} chatting with a tutor named {tutor_name} about {spec.topic}. "
        "Stay in character. Write only the student's next message: one or two short, casual sentences. "
        "No names, no labels, no stage directions."
    )


async def roleplay_conversation(
    backend: ChatBackend,
    spec: RoleplaySpec,
    tim_system_prompt: str,
    tutor_name: str,
    student_sampling: Sampling,
    tim_sampling: Sampling,
) -> tuple[list[dict], str | None]:
    """Returns (messages, rejection reason or None)."""
    student_system = student_system_prompt(spec, tutor_name)
    turns: list[tuple[str, str]] = []  # (role, content) in the dataset's roles
    for turn in range(spec.turns):
        # The student's view: Tim is the `user`, the student is the `assistant`.
        view = [{"role": "system", "content": student_system}, {"role": "user", "content": OPENER}]
        view += [{"role": "assistant" if r == "user" else "user", "content": c} for r, c in turns]
        sampling = Sampling(**{**student_sampling.__dict__, "seed": _seed(spec, turn, "student")})
        student = clean_reply(await backend.complete(view, sampling))
        if not student:
            return [], "empty_student_turn"
        turns.append(("user", student))
        tim_view = [{"role": "system", "content": tim_system_prompt}]
        tim_view += [{"role": r, "content": c} for r, c in turns]
        sampling = Sampling(**{**tim_sampling.__dict__, "seed": _seed(spec, turn, "tim")})
        reply = clean_reply(await backend.complete(tim_view, sampling))
        if not reply:
            return [], "empty_tim_turn"
        turns.append(("assistant", reply))
    messages = [{"role": "system", "content": tim_system_prompt}]
    messages += [{"role": r, "content": c} for r, c in turns]
    return messages, None
