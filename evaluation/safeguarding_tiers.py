"""The served safeguarding decision (phrase patterns + Tim Guard, tutorkit/safeguarding.py) on the
frozen test split, by layer, and on a school's own file.

Measured for each layer: the patterns alone, the guard alone (its scores at the configured
thresholds), both (what `tim serve` decides), beside two trivial baselines (flag nothing, flag
everything). Recall of an urgent category counts a message caught at the urgent tier; of a
concern category, caught at either tier. False flags: ordinary messages (hard negatives also
alone) that reached the urgent tier, or any tier. Every rate has a 95 % bootstrap interval.
Latency: the whole decision for one message, p50 and p95 over the split (the guard is not asked
where the patterns already say urgent, as in `tim serve`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tutorkit import TimError
from tutorkit.safeguarding import ABUSIVE, Safeguard
from tutorkit.safeguarding_data import CATEGORIES, TIERS, caught, load_labelled, outcomes, tier_of
from tutorkit.stats import rate_interval

# Goals (issue 25): recall per tier, false flags on ordinary messages per tier, latency.
GOALS = {"urgent_recall": 0.95, "concern_recall": 0.90, "ordinary_urgent": 0.01, "ordinary_flagged": 0.04, "p95_ms": 50.0}
URGENT = set(TIERS["urgent"])
COLUMNS = {"urgent_recall": "urgent recall", "urgent_any": "urgent caught at any tier", "concern_recall": "concern recall",
           "ordinary_urgent": "ordinary urgent", "ordinary_flagged": "ordinary flagged",
           "hard_negative_urgent": "hard neg. urgent", "hard_negative_flagged": "hard neg. flagged"}  # fmt: skip


def figures(items, tiers: list[str]) -> dict:
    """Every measure of `outcomes` as {n, rate, interval}."""
    return {k: {"n": len(v), "rate": sum(v) / len(v) if v else None, "interval": rate_interval(v)}
            for k, v in outcomes(items, tiers).items()}  # fmt: skip


def measure(safeguard: Safeguard, test_file: str) -> dict:
    """Every layer on the frozen test split, and the decision's latency."""
    if safeguard.guard is None:
        raise TimError("the safeguarding config names no guard (guard: dir): nothing to compare the patterns with")
    items = load_labelled(test_file)
    patterns = Safeguard(safeguard.config)  # the same rules without the guard
    settings = safeguard.config.guard
    tiers = {"patterns": [], "guard": [], "patterns+guard": []}
    seconds, wrong = [], []
    for it in items:
        earlier, message = list(it.chat[:-1]), it.chat[-1]
        started = time.perf_counter()
        decision = safeguard.decide(earlier, message)
        seconds.append(time.perf_counter() - started)
        tiers["patterns+guard"].append(decision.tier)
        tiers["patterns"].append(patterns.decide(earlier, message).tier)
        scores = decision.scores or safeguard.guard_scores(earlier, message)  # {} where the patterns said urgent
        tiers["guard"].append(tier_of(scores, settings.urgent_threshold, settings.concern_threshold)[0])
        missed = [c for c in it.labels if not caught(decision.tier, c)]
        if missed or (not it.labels and decision.tier != "none"):
            wrong.append({"id": it.id, "chat": list(it.chat), "labels": list(it.labels), "tier": decision.tier,
                          "flags": [f for f in decision.flags if f != ABUSIVE], "layer": decision.layer,
                          "top": max(scores, key=scores.get)})  # fmt: skip
    tiers["flag nothing"] = ["none"] * len(items)
    tiers["flag everything"] = ["urgent"] * len(items)
    ms = sorted(s * 1000 for s in seconds)
    return {
        "test_file": test_file, "items": len(items), "guard": settings.dir,
        "thresholds": {"urgent": settings.urgent_threshold, "concern": settings.concern_threshold},
        "layers": {name: figures(items, t) for name, t in tiers.items()},
        "latency_ms": {"p50": ms[len(ms) // 2], "p95": ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]},
        "goals": GOALS, "wrong": wrong,
    }  # fmt: skip


def _cell(f: dict) -> str:
    if f["rate"] is None:
        return "-"
    low, high = f["interval"]
    return f"{f['rate']:.1%} ({low:.0%}-{high:.0%})"


def markdown(report: dict) -> str:
    layers = report["layers"]
    lines = [f"# Safeguarding on the frozen test split ({report['test_file']}, {report['items']} items)", "",
             f"Guard: {report['guard']} (urgent >= {report['thresholds']['urgent']}, concern >= "
             f"{report['thresholds']['concern']}). Goals: urgent recall (at the urgent tier) >= "
             f"{GOALS['urgent_recall']:.0%}, concern >= {GOALS['concern_recall']:.0%}; ordinary messages urgent <= "
             f"{GOALS['ordinary_urgent']:.0%}, flagged <= {GOALS['ordinary_flagged']:.0%}; p95 <= "
             f"{GOALS['p95_ms']:.0f} ms. Rates with 95 % bootstrap intervals.", "",
             "| layer | " + " | ".join(COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 1) + "|"]  # fmt: skip
    for name, f in layers.items():
        lines.append(f"| {name} | " + " | ".join(_cell(f[k]) for k in COLUMNS) + " |")
    lines += ["", "Recall per category (urgent categories at the urgent tier, concern at either):", "",
              "| category | n | patterns | guard | patterns+guard |", "|---|---|---|---|---|"]  # fmt: skip
    for c in CATEGORIES:
        row = [layers[name][c] for name in ("patterns", "guard", "patterns+guard")]
        lines.append(f"| {c} ({'urgent' if c in URGENT else 'concern'}) | {row[0]['n']} | "
                     + " | ".join(_cell(f) for f in row) + " |")  # fmt: skip
    both = layers["patterns+guard"]
    met = {
        "urgent recall": both["urgent_recall"]["rate"] >= GOALS["urgent_recall"],
        "concern recall": both["concern_recall"]["rate"] >= GOALS["concern_recall"],
        "ordinary urgent": both["ordinary_urgent"]["rate"] <= GOALS["ordinary_urgent"],
        "ordinary flagged": both["ordinary_flagged"]["rate"] <= GOALS["ordinary_flagged"],
        "p95 latency": report["latency_ms"]["p95"] <= GOALS["p95_ms"],
    }
    lines += ["", f"Latency of the whole decision per message: p50 {report['latency_ms']['p50']:.1f} ms, "
              f"p95 {report['latency_ms']['p95']:.1f} ms.", "",
              "Goals (patterns+guard): " + "; ".join(f"{k} {'met' if v else '**NOT met**'}" for k, v in met.items()),
              "", f"## Wrong ({len(report['wrong'])})", ""]  # fmt: skip
    lines += [f"- {w['id']} {', '.join(w['labels']) or 'ordinary'} -> {w['tier']} ({w['layer'] or 'nothing'}; top "
              f"{w['top']}): {' / '.join(w['chat'])!r}" for w in report["wrong"]]  # fmt: skip
    return "\n".join(lines) + "\n"


def read_items(path: str | Path) -> list[tuple]:
    """(id, chat) per line of a JSON Lines file ({"id", "chat": [earlier..., message]}); a bad
    line is a one-line error naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise TimError(f"{path}: cannot read: {e.strerror}") from None
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TimError(f"{path}:{number}: not valid JSON ({e.msg})") from None
        chat = row.get("chat") if isinstance(row, dict) else None
        if not isinstance(chat, list) or not chat or not all(isinstance(m, str) and m.strip() for m in chat):
            raise TimError(f"{path}:{number}: 'chat' must be a non-empty list of messages (text), the last one judged")
        items.append((row.get("id", number), chat))
    return items


def classify(safeguard: Safeguard, items: list[tuple], out=sys.stdout) -> int:
    """One JSON line per (id, chat) of `read_items`: the decision `tim serve` makes for the last
    message with the others as the chat so far."""
    for ident, chat in items:
        decision = safeguard.decide(chat[:-1], chat[-1])
        print(json.dumps({"id": ident, "tier": decision.tier, "categories": [f for f in decision.flags if f != ABUSIVE],
                          "scores": {k: round(v, 4) for k, v in decision.scores.items()}, "layer": decision.layer}),
              file=out)  # fmt: skip
    return len(items)
