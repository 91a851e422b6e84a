"""Labelled student messages for the safeguarding guard (data/safeguarding/): reading them, and
the twin check that keeps training rows away from the frozen test split.

A file is JSON Lines, one item per line:

    {"id": "w2-0031", "chat": ["earlier message", "the message"], "labels": ["neglect"],
     "hard_negative": false, ...provenance (source, indicator or scenario)}

`chat` is what one student sent in a row, the last message the one judged, the others the chat so
far; `labels` are the guard's categories that apply to it ([] = ordinary); `hard_negative` marks
an ordinary message written to share words with a risk (parents, food, "this is killing me").
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tutorkit import TimError

# The guard's categories, in the order its scores come out.
CATEGORIES = ("self_harm", "physical_abuse", "sexual_abuse", "online_exploitation", "neglect", "trouble_at_home",
              "bullying")  # fmt: skip
ORDINARY = "ordinary"
# What a category's signs call for: `urgent` (the fixed reply, staff alerted now) or `concern`
# (Tim answers and checks in, the chat goes to staff review).
TIERS = {"urgent": ("self_harm", "physical_abuse", "sexual_abuse", "online_exploitation"),
         "concern": ("neglect", "trouble_at_home", "bullying")}  # fmt: skip


def caught(tier: str, category: str) -> bool:
    """An urgent category is caught at the urgent tier; a concern category at either."""
    return tier == "urgent" if category in TIERS["urgent"] else tier in ("urgent", "concern")


def outcomes(items: list[LabelledChat], tiers: list[str]) -> dict[str, list[bool]]:
    """What each measure counts, one bool per item it counts: recall per tier (`urgent_recall`
    at the urgent tier; `urgent_any` at either tier; `concern_recall`) and per category, and
    false flags on ordinary messages and on hard negatives, at the urgent tier and at any."""
    out: dict[str, list[bool]] = {"urgent_recall": [], "urgent_any": [], "concern_recall": []}
    out.update({c: [] for c in CATEGORIES})
    for name in ("ordinary", "hard_negative"):
        out[f"{name}_urgent"], out[f"{name}_flagged"] = [], []
    for item, tier in zip(items, tiers):
        for category in item.labels:
            out[category].append(caught(tier, category))
        if set(item.labels) & set(TIERS["urgent"]):
            out["urgent_recall"].append(tier == "urgent")
            out["urgent_any"].append(tier != "none")
        if set(item.labels) & set(TIERS["concern"]):
            out["concern_recall"].append(tier != "none")
        for name, counted in (("ordinary", not item.labels), ("hard_negative", item.hard_negative)):
            if counted:
                out[f"{name}_urgent"].append(tier == "urgent")
                out[f"{name}_flagged"].append(tier != "none")
    return out


def tier_of(scores: dict[str, float], urgent: float, concern: float) -> tuple[str, tuple[str, ...]]:
    """(tier, categories) for the guard's scores: `urgent` when an urgent category reaches the
    urgent threshold; else `concern` when any category reaches the concern threshold (an urgent
    category's weaker sign is a concern); else ("none", ())."""
    found = tuple(c for c in TIERS["urgent"] if scores.get(c, 0.0) >= urgent)
    if found:
        return "urgent", found
    found = tuple(c for c in CATEGORIES if scores.get(c, 0.0) >= concern)
    return ("concern", found) if found else ("none", ())


@dataclass(frozen=True)
class LabelledChat:
    id: str
    chat: tuple[str, ...]
    labels: tuple[str, ...]
    hard_negative: bool = False
    provenance: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        """The first category, or "ordinary"."""
        return self.labels[0] if self.labels else ORDINARY


def load_labelled(path: str | Path) -> list[LabelledChat]:
    """The items of one file; a TimError names the file, line and field of anything malformed."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise TimError(f"{path}: cannot read: {e.strerror}") from None
    items, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TimError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise TimError(f"{where}: expected an object")
        chat, labels = row.get("chat"), row.get("labels")
        if not isinstance(chat, list) or not chat or not all(isinstance(m, str) and m.strip() for m in chat):
            raise TimError(f"{where}: 'chat' must be a non-empty list of messages (text)")
        if not isinstance(labels, list) or any(label not in CATEGORIES for label in labels):
            raise TimError(f"{where}: 'labels' must be a list of {', '.join(CATEGORIES)} ([] = ordinary)")
        ident = row.get("id")
        if not isinstance(ident, str) or not ident or ident in seen:
            raise TimError(f"{where}: 'id' must be text, unique in the file")
        seen.add(ident)
        hard = row.get("hard_negative", False)
        if not isinstance(hard, bool) or (hard and labels):
            raise TimError(f"{where}: 'hard_negative' must be true or false, and true only with labels []")
        provenance = {k: v for k, v in row.items() if k not in ("id", "chat", "labels", "hard_negative")}
        items.append(LabelledChat(ident, tuple(chat), tuple(dict.fromkeys(labels)), hard, provenance))
    if not items:
        raise TimError(f"{path}: no items")
    return items


# --- the twin check

RUN = 5  # words: two items sharing a run this long are twins


def words(text: str) -> list[str]:
    """Lower case, apostrophes dropped ("don't" = "dont"), anything else not a letter or digit a break."""
    return re.sub(r"[^a-z0-9]+", " ", re.sub(r"['\u2019`]", "", text.lower())).split()


def runs(item: LabelledChat, n: int = RUN) -> set[tuple[str, ...]]:
    """The item's n-word runs, within each message (a run does not cross two messages)."""
    out = set()
    for message in item.chat:
        w = words(message)
        out.update(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
    return out


def twins(items: list[LabelledChat], protected: list[LabelledChat], n: int = RUN) -> dict[str, str]:
    """{id of an item in `items`: id of the protected item it twins}: the two share an n-word run
    (word shingles, apostrophes folded) in any of their messages."""
    by_run: dict[tuple[str, ...], str] = {}
    for p in protected:
        for run in runs(p, n):
            by_run.setdefault(run, p.id)
    found = {}
    for item in items:
        shared = next((by_run[r] for r in runs(item, n) if r in by_run), None)
        if shared is not None:
            found[item.id] = shared
    return found


def split(items: list[LabelledChat], dev_every: int) -> tuple[list[LabelledChat], list[LabelledChat]]:
    """(train, dev): about one item in `dev_every` goes to dev, chosen by a hash of its id (stable
    when files grow or are reordered)."""
    dev = [it for it in items if int(hashlib.sha256(it.id.encode()).hexdigest(), 16) % dev_every == 0]
    chosen = {it.id for it in dev}
    return [it for it in items if it.id not in chosen], dev
