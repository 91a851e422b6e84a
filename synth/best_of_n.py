"""Best-of-n Tim turns: the generator writes n candidates for each of Tim's turns, each is scored
with the rule checks `tim eval` uses (tutorkit/checks.py), and the best is kept. Which checks
apply comes from `turn_checks` in configs/synth.yaml, by the learner group and the scenario's
category (trusted_adult and no_secrecy for a disclosure, young_readability for a small child,
asks_question for a disengaged student ...), plus the checks listed under `all`.

The best and the worst candidate of a turn whose scores differ make a preference pair in TRL's
conversational format (`prompt` messages, `chosen`, `rejected`), for DPO after SFT. A kept turn
that still fails one of its checks (the best of n bad ones) can stay in the conversation as
context with weight 0, so SFT does not learn it (`mask_failed_turns`).
"""

from __future__ import annotations

from dataclasses import dataclass

from synth.catalog import ConversationSpec
from tutorkit.checks import Context, run_checks


@dataclass
class TurnScorer:
    turn_checks: dict[str, list[str]]  # "all" | learner group | scenario category -> check names
    context: Context  # the persona's name and names to avoid, the safeguarding patterns

    def checks_for(self, spec: ConversationSpec) -> list[str]:
        keys = ["all", spec.learner, spec.category]
        return list(dict.fromkeys(name for key in keys for name in self.turn_checks.get(key, [])))

    def score(self, spec: ConversationSpec, candidates: list[str], student: str) -> list[dict[str, bool]]:
        """{check: passed} for each candidate reply to the student's message `student`."""
        ctx = Context(self.context.tutor_name, self.context.safeguard, self.context.other_assistants,
                      max_grade=self.context.max_grade, student=student)  # fmt: skip
        names = self.checks_for(spec)
        return [run_checks(names, candidate, ctx) for candidate in candidates]


def best_and_worst(scores: list[dict[str, bool]]) -> tuple[int, int]:
    """Indices of the candidate passing the most checks (the earliest among equals: the sampler's
    own order decides ties) and of the one passing the fewest (the latest among equals)."""
    passed = [sum(s.values()) for s in scores]
    best = max(range(len(passed)), key=lambda i: (passed[i], -i))
    worst = min(range(len(passed)), key=lambda i: (passed[i], -i))
    return best, worst


def preference_pairs(messages: list[dict], choices: list[dict]) -> list[dict]:
    """The pairs of one finished conversation: for each scored turn whose best candidate passed
    more checks than its worst, the conversation up to that turn as `prompt`, the turn as kept in
    the dataset as `chosen` and the worst candidate as `rejected`."""
    pairs = []
    for choice in choices:
        scores, index = choice["checks"], choice["message_index"]
        best, worst = best_and_worst(scores)
        if sum(scores[best].values()) <= sum(scores[worst].values()):
            continue
        pairs.append({
            "prompt": messages[:index],
            "chosen": [{"role": "assistant", "content": messages[index]["content"]}],
            "rejected": [{"role": "assistant", "content": choice["candidates"][worst]}],
            "meta": {"chosen_checks": scores[best], "rejected_checks": scores[worst]},
        })  # fmt: skip
    return pairs


def first_vs_kept(choices: list[dict]) -> dict[str, dict[str, float]]:
    """Per check, the share of scored turns where the first candidate passed (what sampling once
    gives) and where the kept one did (what best-of-n gives)."""
    tally: dict[str, list[int]] = {}
    for choice in choices:
        first, kept = choice["checks"][0], choice["checks"][choice["kept"]]
        for name in first:
            counts = tally.setdefault(name, [0, 0, 0])
            counts[0] += first[name]
            counts[1] += kept[name]
            counts[2] += 1
    return {name: {"first": round(f / n, 3), "kept": round(k / n, 3)} for name, (f, k, n) in tally.items()}


def weight_failed_turns(messages: list[dict], choices: list[dict]) -> tuple[list[dict], int]:
    """(the conversation with weight 0 on each scored Tim turn whose kept candidate failed one of
    its checks, how many turns that is). Turns that were not scored keep their weight."""
    failed = {c["message_index"] for c in choices if not all(c["checks"][c["kept"]].values())}
    out = [{**m, "weight": 0} if i in failed and m["role"] == "assistant" else m for i, m in enumerate(messages)]
    return out, sum(1 for i in failed if i < len(messages) and messages[i]["role"] == "assistant")
