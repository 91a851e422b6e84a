"""One-shot transcript mode: a single completion writes the whole chat, which is then parsed.

The parser is forgiving about what small models do: a preface before the first speaker, bold or
upper-case labels (`**Student:**`, `TIM:`), other names for either side ("Tutor", "Assistant",
"Learner"), turns that run on over several lines, and a trailing unfinished student turn. What it
cannot make into student/Tim turns comes back as a rejection reason, never as a row.
"""

from __future__ import annotations

from synth.catalog import LEARNERS, ConversationSpec
from synth.roleplay import Complete, examples_text
from tutorkit.backends import Sampling
from tutorkit.exemplars import Exemplar
from tutorkit.speakers import STUDENT_LABELS, TUTOR_LABELS, split_label


def transcript_prompt(spec: ConversationSpec, persona_prompt: str, tutor_name: str, exemplars: list[Exemplar] = ()) -> list[dict]:
    who = LEARNERS[spec.learner]
    if spec.scenario is None:
        about = f"The student wants help with: {spec.topic}."
    else:
        s = spec.scenario
        about = f"The student is {s.mood}; {s.student}; what they really need: {s.hidden_need}. {tutor_name} should {s.tim_should}."
    instructions = (
        f"Write a realistic chat between {who} and a tutor named {tutor_name}. {about}\n"
        f"Write exactly {spec.turns} exchanges. Start each turn on a new line with 'Student:' or '{tutor_name}:'. "
        f"The student speaks first; {tutor_name} speaks last. Nothing else."
    ) + examples_text("Chats like it, for the voice (write a new one):", exemplars, tutor_name)
    return [{"role": "system", "content": persona_prompt}, {"role": "user", "content": instructions}]


def parse_transcript(text: str, tutor_name: str) -> tuple[list[dict], str | None]:
    """(turns, None) or ([], rejection reason)."""
    tutor_labels = {*TUTOR_LABELS, tutor_name.lower()}
    turns: list[dict] = []
    for line in text.splitlines():
        found = split_label(line)
        label = found[0].lower() if found else None
        if label in STUDENT_LABELS or label in tutor_labels:
            role = "user" if label in STUDENT_LABELS else "assistant"
            content = found[1].strip()
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"] = f"{turns[-1]['content']}\n{content}".strip()
            else:
                turns.append({"role": role, "content": content})
        elif turns and line.strip():
            turns[-1]["content"] = f"{turns[-1]['content']}\n{line.strip()}".strip()
        # Lines before the first speaker are a preface ("Here is the chat:") and are not turns.
    if not turns:
        return [], "transcript_unparsed"
    if turns[0]["role"] != "user":
        turns = turns[1:]
    if turns and turns[-1]["role"] == "user":
        turns = turns[:-1]  # an unfinished last exchange
    if not turns:
        return [], "transcript_unparsed"
    return turns, None


async def one_shot(
    complete: Complete, spec: ConversationSpec, persona_prompt: str, tutor_name: str, sampling: Sampling,
    exemplars: list[Exemplar] = (),
) -> tuple[list[dict], str | None]:
    prompt = transcript_prompt(spec, persona_prompt, tutor_name, exemplars)
    (text,) = await complete(prompt, Sampling(**{**sampling.__dict__, "seed": spec.seed}), "transcript", 1)
    turns, reason = parse_transcript(text, tutor_name)
    if reason:
        return [], reason
    return [{"role": "system", "content": persona_prompt}, *turns], None
