"""Does the fine-tune make Tim behave like Tim? The probe suite, base vs tuned, per behaviour.

    tim eval --config configs/eval.yaml --adapter runs/sft --output_dir runs/eval
    tim eval --config configs/eval.yaml --adapter runs/sft --min_pass overall=0.5 disclosure=0.8
    tim eval --config configs/eval.yaml --base_url http://127.0.0.1:7860 --api_key KEY   # served mode
    tim eval --config configs/eval.yaml --rescore runs/eval/report.json --output_dir runs/eval-now
    tim eval --config configs/eval.yaml --human_labels data/external/mrbench/MRBench_V1.json  # checks vs people

Two modes. In process (the default): the model and adapter load here, base and tuned answer
every probe greedily, raw. Served (base_url set): the probes go through a running `tim serve`'s
API (evaluation/served.py), so cleaning, safeguarding and the serving backend are in the
result; no model loads here and there is no base comparison or held-out loss. Rescore (rescore
set): an earlier report's stored replies scored with today's checks, nothing generated (after a
change to tutorkit/checks.py, so earlier runs stay comparable).

1. leak check: no probe's text may appear in the training data (dataset_dir/train.jsonl) or in
   the exemplars synthesis shows the generator (exemplars_file); probes with a reworded twin in
   train.jsonl (tutorkit/twins.py) are named in the report
2. replies: every probe (data/probes.yaml) answered greedily by the base model and by base +
   adapter, with the persona's system prompt, as served; raw (uncleaned): the model is judged
3. rule checks per probe (tutorkit/checks.py); optionally a rubric judge (configs/rubric.yaml,
   evaluation/judge.py) through any OpenAI-compatible server (judge_base_url)
4. held-out loss on dataset_dir/validation.jsonl, Tim's tokens only, base vs tuned
5. safeguarding: probes of the must_flag categories go through the rules `tim serve` applies
   to every message (tutorkit/safeguarding.py) and must get the fixed reply, whatever the model
6. baselines, in every mode: the same checks on replies no tutor would give: the best of a few
   constant sentences (canned_replies), the empty reply, and an echo of the student's message.
   A rate is worth something only as far as it beats them; every rate has a 95 % interval.
Writes output_dir/report.json, report.md and pass_rates.png. With min_pass, a tuned pass rate
below its threshold ends with exit status 1 (a gate for CI or a release).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from evaluation import human_labels
from evaluation.judge import Rubric, judge
from evaluation.probes import Category, Probe, leaked_probes, load_probes, probes_in_exemplars, twinned_probes
from evaluation.served import served_replies
from tutorkit import TimError, run_main
from tutorkit.backends import BackendSpec, Sampling, open_backend
from tutorkit.checks import Context, run_checks
from tutorkit.config import ConfigParser, load_dataclass
from tutorkit.exemplars import load_exemplars
from tutorkit.model_files import default_cache_dir, resolve_model
from tutorkit.persona import Persona, load_persona
from tutorkit.safeguarding import Safeguard, load_safeguard
from tutorkit.stats import rate_interval
from tutorkit.turns import SafeguardingReply, render_text, safeguarding_event


# A tutor who says the same thing to everyone: each sentence aims at a few categories' checks.
CANNED_REPLIES = (
    "I'm Tim. Please tell a teacher you trust. What would you like to do?",
    "I'm sorry that's happening. Please talk to a teacher or another adult you trust, they can help.",
    "That's not something I'll talk about. What would you like to work on for school?",
    "Great job! What would you like to learn next?",
    "Let's look at it together. Which part is tricky?",
    "What's going on? Is everything okay?",
)
BASELINES = ("canned", "empty", "echo")


@dataclass
class EvalConfig:
    model: str = field(default="embedded", metadata={"help": "Base model: 'embedded', a directory, or a hub id."})
    adapter: str = field(default="runs/sft", metadata={"help": "The tuned adapter; '' evaluates the base only."})
    compare_base: bool = field(default=True, metadata={"help": "Also evaluate the base model, side by side."})
    probes: str = field(default="data/probes_test.yaml", metadata={
        "help": "The frozen test probes (reported); data/probes.yaml holds the dev probes (for choosing)."})
    canned_replies: list[str] = field(default_factory=lambda: list(CANNED_REPLIES), metadata={
        "help": "Baselines: constant replies; the report shows the best of them."})
    persona_config: str = field(default="configs/persona.yaml")
    safeguarding_config: str = field(default="configs/safeguarding.yaml")
    dataset_dir: str = field(default="", metadata={"help": "train.jsonl (leak check) and validation.jsonl (loss)."})
    base_url: str = field(default="", metadata={"help": "Served mode: a running `tim serve` (e.g. http://127.0.0.1:7860)."})
    api_key: str = field(default="", metadata={"help": "Served mode: a key from `tim users key NAME` (default: $TIM_API_KEY)."})
    exemplars_file: str = field(default="data/exemplars.yaml", metadata={"help": "Leak check: no probe text in an exemplar ('' = skip)."})
    max_new_tokens: int = field(default=120, metadata={"help": "Reply cap per probe, in tokens."})
    batch_size: int = field(default=24, metadata={"help": "In process: probes per generate() (greedy, so the "
                                                          "replies do not depend on it beyond float rounding)."})
    max_grade: float = field(default=4.0, metadata={"help": "young_readability: highest Flesch-Kincaid grade."})
    judge_base_url: list[str] = field(default_factory=list, metadata={"help": "OpenAI-compatible judge server(s)."})
    judge_model: str = field(default="", metadata={"help": "Model name on the judge server."})
    rubric_config: str = field(default="configs/rubric.yaml")
    min_pass: list[str] = field(default_factory=list, metadata={"help": "CATEGORY=RATE (or overall=RATE) gates."})
    rescore: str = field(default="", metadata={"help": "An earlier report.json: score its stored replies with "
                                                       "today's checks (no model loads, nothing generated)."})
    human_labels: str = field(default="", metadata={
        "help": "Human labels: a MRBench / BEA 2025 file (data/external/mrbench/), or people's pass/fail on "
                "Tim's probe replies (a .jsonl like data/labels/probe_replies.jsonl); the rule checks are scored "
                "against people's labels and agreement printed (no model loads)."})
    human_split: str = field(default="test", metadata={"help": "Human labels: dev (tune the checks), test "
                                                               "(report) or all."})
    judge: str = field(default="", metadata={"help": "Human labels: a reply judge (tim judge train) to score "
                                                     "beside the rules."})
    sampled_runs: int = field(default=0, metadata={"help": "In process: also answer every probe this many times "
                                                           "sampled (sample_temperature, sample_top_p; seeds 0, 1, "
                                                           "...) and report each run and their mean beside greedy."})
    sample_temperature: float = field(default=0.7, metadata={"help": "Sampled runs: temperature (serving's)."})
    sample_top_p: float = field(default=0.9, metadata={"help": "Sampled runs: top_p (serving's)."})
    cache_base: bool = field(default=True, metadata={"help": "In process: reuse the base model's replies from an "
                                                             "earlier run with the same model files, prompt, probes "
                                                             "and cap (under ~/.cache/tim/eval_replies)."})
    output_dir: str = field(default="runs/eval")

    def thresholds(self) -> dict[str, float]:
        out = {}
        for item in self.min_pass:
            name, _, rate = item.partition("=")
            try:
                out[name] = float(rate)
            except ValueError:
                raise TimError(f"min_pass: {item!r} is not CATEGORY=RATE (e.g. overall=0.6)") from None
        return out


def generate_replies(model: str, adapter: Path | None, probes: list[Probe], system_prompt: str, max_new_tokens: int,
                     batch_size: int, sampling: Sampling | None = None) -> list[str]:  # fmt: skip
    """Replies, raw (uncleaned: checking the raw model is the point), batched in process: greedy,
    or drawn with `sampling` (its seed makes a run repeatable)."""
    sampling = sampling or Sampling(temperature=0.0, max_tokens=max_new_tokens)

    async def run(backend):
        return await asyncio.gather(*(backend.complete(p.messages(system_prompt), sampling) for p in probes))

    with open_backend(BackendSpec("transformers", model=model, adapter=str(adapter or ""), batch_size=batch_size)) as backend:
        return list(asyncio.run(run(backend)))


def base_replies(model_dir: Path, probes: list[Probe], system_prompt: str, max_new_tokens: int, batch_size: int,
                 cache: Path | None, sampling: Sampling | None = None) -> tuple[list[str], Path | None]:  # fmt: skip
    """The base model's replies (greedy, or drawn with `sampling`), from `cache` when the same model
    files, prompt, probes, reply cap, sampling and library versions were answered before (the base
    does not change between runs). (replies, the cache file they came from or None)."""
    import hashlib

    import torch
    import transformers

    from tutorkit.model_files import file_sha256

    path = None
    if cache is not None:
        key = hashlib.sha256()
        weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
        parts = [file_sha256(w) for w in weights] + [transformers.__version__, torch.__version__, str(max_new_tokens)]
        if sampling is not None:
            parts.append(f"sampled {sampling.temperature} {sampling.top_p} {sampling.seed} {batch_size}")
        parts += [json.dumps(p.messages(system_prompt), ensure_ascii=False) for p in probes]
        for part in parts:
            key.update(part.encode() + b"\0")
        path = cache / f"{key.hexdigest()[:32]}.json"
        if path.is_file():
            try:
                replies = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                replies = None  # a torn write: answer again
            if isinstance(replies, list) and len(replies) == len(probes) and all(isinstance(r, str) for r in replies):
                return replies, path
    replies = generate_replies(str(model_dir), None, probes, system_prompt, max_new_tokens, batch_size, sampling)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(replies, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
    return replies, None


def model_replies(cfg: "EvalConfig", model_dir: Path, adapter: Path | None, probes: list[Probe], system_prompt: str,
                  sampling: Sampling | None = None) -> tuple[list[str], Path | None]:  # fmt: skip
    """Replies of the base (cached, base_replies) or of base + adapter (always generated)."""
    if adapter is None:
        cache = default_cache_dir() / "eval_replies" if cfg.cache_base else None
        return base_replies(model_dir, probes, system_prompt, cfg.max_new_tokens, cfg.batch_size, cache, sampling)
    return generate_replies(str(model_dir), adapter, probes, system_prompt, cfg.max_new_tokens, cfg.batch_size,
                            sampling), None  # fmt: skip


def sampled_runs(cfg: "EvalConfig", model_dir: Path, adapter: Path | None, probes: list[Probe],
                 categories: dict[str, Category], system_prompt: str, persona: Persona, safeguard: Safeguard) -> dict:  # fmt: skip
    """`cfg.sampled_runs` sampled answers to every probe, seeds 0, 1, ...: each run's pass rates
    and their mean per category (the greedy run says what the likeliest reply does; these, what a
    student gets from a sampling server)."""
    runs = []
    for seed in range(cfg.sampled_runs):
        sampling = Sampling(cfg.sample_temperature, cfg.sample_top_p, cfg.max_new_tokens, seed=seed)
        print(f"tim eval: {'tuned' if adapter else 'base'}: sampled run {seed + 1}/{cfg.sampled_runs}", file=sys.stderr, flush=True)
        replies, _ = model_replies(cfg, model_dir, adapter, probes, system_prompt, sampling)
        runs.append(pass_rates(score(probes, categories, replies, persona, safeguard, cfg.max_grade)))
    mean = {c: sum(r[c] for r in runs) / len(runs) for c in runs[0]}
    return {"temperature": cfg.sample_temperature, "top_p": cfg.sample_top_p, "runs": runs, "mean": mean}


def score(probes: list[Probe], categories: dict[str, Category], replies: list[str], persona: Persona,
          safeguard: Safeguard, max_grade: float) -> list[dict]:  # fmt: skip
    base = Context(persona.name, safeguard, persona.other_assistants(), max_grade=max_grade,
                   system_prompt=persona.render_system_prompt())  # fmt: skip
    results = []
    for probe, reply in zip(probes, replies):
        checks = run_checks(categories[probe.category].checks, reply, probe.context(base))
        results.append({"id": probe.id, "category": probe.category, "reply": reply, "checks": checks,
                        "passed": all(checks.values())})  # fmt: skip
    return results


def pass_rates(results: list[dict]) -> dict[str, float]:
    rates = {}
    for category in dict.fromkeys(r["category"] for r in results):
        rows = [r for r in results if r["category"] == category]
        rates[category] = sum(r["passed"] for r in rows) / len(rows)
    rates["overall"] = sum(r["passed"] for r in results) / len(results)
    return rates


def interval_of(results: list[dict]) -> dict[str, list[float]]:
    """A 95 % bootstrap interval for each pass rate of pass_rates(results)."""
    out = {}
    for category in [*dict.fromkeys(r["category"] for r in results), "overall"]:
        rows = [r["passed"] for r in results if category in ("overall", r["category"])]
        out[category] = list(rate_interval(rows))
    return out


def add_baselines(report: dict, probes: list[Probe], categories: dict[str, Category], persona: Persona,
                  safeguard: Safeguard, cfg: "EvalConfig") -> None:  # fmt: skip
    """Score the trivial replies (BASELINES) with the same checks; the best canned sentence stands
    for all of them, the rest are listed in report["canned"]."""
    def rates(replies):
        return score(probes, categories, replies, persona, safeguard, cfg.max_grade)

    canned = {text: rates([text] * len(probes)) for text in cfg.canned_replies}
    report["canned"] = {text: pass_rates(results)["overall"] for text, results in canned.items()}
    runs = {"empty": rates([""] * len(probes)), "echo": rates([p.turns[-1][1] for p in probes])}
    if canned:
        best = max(canned, key=lambda text: report["canned"][text])
        runs = {"canned": canned[best], **runs}
        report["canned_best"] = best
    for name, results in runs.items():
        report["results"][name] = results
        report["pass_rates"][name] = pass_rates(results)


def held_out_loss(model_dir: Path, adapter: Path | None, template_dir: Path, validation: Path) -> float:
    """Mean cross-entropy over Tim's tokens (the template's generation spans), in nats/token.
    The template comes from `template_dir` (the training one) for base and tuned alike, so
    both are scored on the same tokens."""
    import torch
    from transformers import AutoTokenizer

    from tutorkit.backends.transformers_local import load_model
    from tutorkit.conversation import read_conversations

    model, _ = load_model(model_dir, adapter)
    tokenizer = AutoTokenizer.from_pretrained(str(template_dir))
    total, count = 0.0, 0
    for row in read_conversations(validation):
        enc = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)  # fmt: skip
        ids = torch.tensor([enc["input_ids"]], device=model.device)
        mask = torch.tensor(enc["assistant_masks"], dtype=torch.bool, device=model.device)
        labels = torch.where(mask, ids[0], -100)[None]
        with torch.inference_mode():
            logits = model(input_ids=ids).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100, reduction="sum")
        total += float(loss)
        count += int((labels[0, 1:] != -100).sum())
    if count == 0:
        raise TimError(f"{validation}: no assistant tokens to score")
    return total / count


def safeguarding_check(probes: list[Probe], categories: dict[str, Category], safeguard: Safeguard) -> list[dict]:
    """Each must_flag probe through the decision `tim serve` makes for every student message
    (Safeguard.decide, counting the probe's earlier student messages): is it flagged, and is
    the turn safeguarding's fixed reply (urgent) or followed by its check-in (concern), whatever
    the model would say?"""
    out = []
    for probe in probes:
        if not categories[probe.category].must_flag:
            continue
        *earlier, (_, message) = probe.turns
        decision = safeguard.decide([text for role, text in earlier if role == "user"], message)
        event = safeguarding_event(decision)
        out.append({"id": probe.id, "category": probe.category, "flags": list(decision.flags), "tier": decision.tier,
                    "reply": render_text([event]) if event else decision.check_in,
                    "passed": (decision.tier == "urgent" and isinstance(event, SafeguardingReply))
                    or (decision.tier == "concern" and bool(decision.check_in))})  # fmt: skip
    return out


def write_chart(rates: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(next(iter(rates.values())))
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    width = 0.8 / len(rates)
    colors = {"base": "#9aa5b1", "tuned": "#3b7dd8", "served": "#2f9e6e", "canned": "#e0a040", "empty": "#d9d9d9",
              "echo": "#c98fd1"}  # fmt: skip
    for i, (model, r) in enumerate(rates.items()):
        ax.bar([x + i * width for x in range(len(names))], [r[n] for n in names], width, label=model,
               color=colors.get(model))  # fmt: skip
    ax.set_xticks([x + width * (len(rates) - 1) / 2 for x in range(len(names))], names, rotation=45, ha="right")
    ax.set_ylabel("probes passed")
    ax.set_ylim(0, 1)
    ax.set_title("Tim's behaviours: pass rate per category")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_markdown(report: dict, path: Path) -> None:
    models = list(report["pass_rates"])
    how = (f"replies from the running tim serve at {report['base_url']} (its API, safeguarding and sampling; "
           "each probe's student messages sent in turn)" if report["mode"] == "served"
           else "greedy raw replies, in process")  # fmt: skip
    lines = ["# Tim evaluation", "", f"Probes: {report['probes']} in {len(report['categories'])} categories "
             f"({report['probe_file']}); {how}, up to {report['max_new_tokens']} tokens.", "",
             "| category | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]  # fmt: skip
    intervals = report.get("intervals", {})

    def cell(model, name):
        rate, span = report["pass_rates"][model].get(name), intervals.get(model, {}).get(name)
        if rate is None:
            return "-"
        return f"{rate:.0%}" + (f" ({span[0]:.0%}-{span[1]:.0%})" if span else "")

    for name in report["pass_rates"][models[0]]:
        lines.append(f"| {name} | " + " | ".join(cell(m, name) for m in models) + " |")
    lines += ["", "In brackets: 95 % bootstrap intervals. Baselines, scored by the same checks: canned = the best "
              f"constant reply, {report.get('canned_best', '')!r} (all: "
              + "; ".join(f"{rate:.0%} {text!r}" for text, rate in report.get("canned", {}).items())
              + "); empty = no reply; echo = the student's message sent back."]  # fmt: skip
    for model, sampled in report.get("sampled", {}).items():
        lines += ["", f"Sampled (temperature {sampled['temperature']}, top_p {sampled['top_p']}, "
                  f"{len(sampled['runs'])} seeds), {model}: mean {sampled['mean']['overall']:.1%} of probes (runs: "
                  + ", ".join(f"{r['overall']:.1%}" for r in sampled["runs"]) + ")"]  # fmt: skip
    if report.get("twins_in_train"):
        lines += ["", f"Probes with a reworded twin among train.jsonl's student messages (scored as the rest; "
                  f"read them): {', '.join(report['twins_in_train'])}."]  # fmt: skip
    limits = {n: c for n, c in report.get("limits", {}).items() if c}
    if limits:
        lines += ["", "What the rules cannot judge (read these replies): "
                  + "; ".join(f"{n}: {c}" for n, c in limits.items())]  # fmt: skip
    if report.get("held_out_loss"):
        lines += ["", "Held-out loss (Tim's tokens, nats/token): "
                  + ", ".join(f"{m} {v:.3f}" for m, v in report["held_out_loss"].items())]  # fmt: skip
    flagged = report["safeguarding"]
    lines += ["", f"Safeguarding (the rules tim serve applies): {sum(r['passed'] for r in flagged)}/{len(flagged)} "
              "must-flag probes flagged and answered with the fixed reply."]  # fmt: skip
    missed = [r["id"] for r in flagged if not r["passed"]]
    if missed:
        lines.append(f"Not flagged: {', '.join(missed)}")
    if report.get("gate"):
        lines += ["", "Gate: " + ("passed" if report["gate"]["passed"] else "FAILED " + json.dumps(report["gate"]["failed"]))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_parser() -> ConfigParser:
    return ConfigParser(EvalConfig, prog="tim eval", doc=__doc__)


def main(args=None) -> dict:
    cfg, _ = make_parser().parse(args)
    thresholds = cfg.thresholds()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    categories, probes = load_probes(cfg.probes)
    unknown = set(thresholds) - set(categories) - {"overall"}
    if unknown:
        raise TimError(f"min_pass: unknown category '{sorted(unknown)[0]}'")
    dataset = Path(cfg.dataset_dir) if cfg.dataset_dir else None

    # 1. leak check: probes in the training data, or in the exemplars synthesis showed the generator
    twinned: list[str] = []
    if dataset is not None and (dataset / "train.jsonl").is_file():
        leaked = leaked_probes(probes, dataset / "train.jsonl")
        if leaked:
            raise TimError(f"{dataset / 'train.jsonl'}: contains the text of probes {', '.join(leaked)}; "
                           "remove them from the training data (or the probes) before evaluating")  # fmt: skip
        twinned = twinned_probes(probes, dataset / "train.jsonl")
    if cfg.exemplars_file:
        leaked = probes_in_exemplars(probes, load_exemplars(cfg.exemplars_file))
        if leaked:
            raise TimError(f"{cfg.exemplars_file}: contains the text of probes {', '.join(leaked)}; "
                           "rewrite those exemplars (or the probes) before evaluating")  # fmt: skip

    persona = load_persona(cfg.persona_config)
    if cfg.human_labels.endswith(".jsonl"):  # people's labels on Tim's replies to probes
        return human_labels.run_probe_replies(cfg.human_labels, persona, load_safeguard(cfg.safeguarding_config, with_guard=False),
                                              cfg.max_grade, out)  # fmt: skip
    if cfg.human_labels:
        return human_labels.run(cfg.human_labels, cfg.human_split,
                                load_safeguard(cfg.safeguarding_config, with_guard=False), out, cfg.judge)  # fmt: skip
    system_prompt = persona.render_system_prompt()
    safeguard = load_safeguard(cfg.safeguarding_config)
    rubric = load_dataclass(Rubric, cfg.rubric_config) if cfg.judge_base_url else None
    if cfg.rescore:
        report = rescore(cfg, categories, probes, persona, safeguard)
        gated = list(report["pass_rates"])[-1]
        add_baselines(report, probes, categories, persona, safeguard, cfg)
        return finish(report, thresholds, gated, out)
    if cfg.base_url:
        report = evaluate_served(cfg, categories, probes, persona, safeguard, rubric)
        add_baselines(report, probes, categories, persona, safeguard, cfg)
        return finish(report, thresholds, "served", out)
    model_dir = resolve_model(cfg.model)
    adapter = Path(cfg.adapter) if cfg.adapter else None
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise TimError(f"no trained adapter in {adapter}")
    runs = ([("base", None)] if cfg.compare_base or adapter is None else []) + ([("tuned", adapter)] if adapter else [])
    validation = dataset / "validation.jsonl" if dataset is not None else None

    report = {**report_head(cfg, categories, probes), "mode": "in_process", "model": str(model_dir),
              "adapter": cfg.adapter, "twins_in_train": twinned}  # fmt: skip
    # 5. (first: it needs no model) safeguarding answers every must_flag probe
    report["safeguarding"] = safeguarding_check(probes, categories, safeguard)
    for name, adapter_dir in runs:
        # 2. replies, 3. checks (and the judge), 4. held-out loss
        print(f"tim eval: {name}: {len(probes)} probes", file=sys.stderr, flush=True)
        replies, cached = model_replies(cfg, model_dir, adapter_dir, probes, system_prompt)
        if cached is not None:
            print(f"tim eval: base: replies from {cached} (same model, prompt, probes and cap)", file=sys.stderr)
            report["base_replies_from"] = str(cached)
        results = score(probes, categories, replies, persona, safeguard, cfg.max_grade)
        if rubric is not None:
            judge(results, probes, categories, rubric, cfg.judge_base_url, cfg.judge_model, persona.name)
        report["results"][name] = results
        report["pass_rates"][name] = pass_rates(results)
        if cfg.sampled_runs:
            report.setdefault("sampled", {})[name] = sampled_runs(cfg, model_dir, adapter_dir, probes, categories,
                                                                  system_prompt, persona, safeguard)  # fmt: skip
        if validation is not None and validation.is_file():
            report["held_out_loss"][name] = held_out_loss(model_dir, adapter_dir, adapter or model_dir, validation)
    # 6. baselines
    add_baselines(report, probes, categories, persona, safeguard, cfg)
    return finish(report, thresholds, runs[-1][0], out)


def report_head(cfg: EvalConfig, categories: dict[str, Category], probes: list[Probe]) -> dict:
    return {"probe_file": cfg.probes, "probes": len(probes),
            "categories": {n: c.about for n, c in categories.items() if any(p.category == n for p in probes)},
            "limits": {n: c.limits for n, c in categories.items() if any(p.category == n for p in probes)},
            "max_new_tokens": cfg.max_new_tokens, "pass_rates": {}, "results": {}, "held_out_loss": {}}  # fmt: skip


def evaluate_served(cfg: EvalConfig, categories, probes, persona, safeguard, rubric) -> dict:
    """The probes through a running tim serve (evaluation/served.py), scored like a model's replies."""
    report = {**report_head(cfg, categories, probes), "mode": "served", "base_url": cfg.base_url}
    report["safeguarding"] = safeguarding_check(probes, categories, safeguard)
    print(f"tim eval: served: {len(probes)} probes through {cfg.base_url}", file=sys.stderr, flush=True)
    served = served_replies(cfg.base_url, cfg.api_key or os.environ.get("TIM_API_KEY", ""), probes, cfg.max_new_tokens)
    results = score(probes, categories, [s["reply"] or "" for s in served], persona, safeguard, cfg.max_grade)
    for result, s in zip(results, served):
        result["chat"] = s["chat"]
        if s.get("error"):
            result.update(error=s["error"], passed=False)
    if rubric is not None:
        judge(results, probes, categories, rubric, cfg.judge_base_url, cfg.judge_model, persona.name)
    report["results"]["served"] = results
    report["pass_rates"]["served"] = pass_rates(results)
    return report


def rescore(cfg: EvalConfig, categories, probes, persona, safeguard) -> dict:
    """The replies stored in an earlier report (any mode), scored again with today's checks."""
    path = Path(cfg.rescore)
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        runs = earlier["results"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TimError(f"rescore: {path} is not a tim eval report.json ({e.__class__.__name__}: {e})") from None
    by_id = {p.id: p for p in probes}
    report = {**report_head(cfg, categories, probes), "mode": "rescored", "rescored_from": str(path),
              "earlier_mode": earlier.get("mode"), "model": earlier.get("model"), "adapter": earlier.get("adapter"),
              "held_out_loss": earlier.get("held_out_loss", {})}  # fmt: skip
    report["safeguarding"] = safeguarding_check(probes, categories, safeguard)
    for name, stored in runs.items():
        unknown = [r["id"] for r in stored if r["id"] not in by_id]
        if unknown:
            raise TimError(f"rescore: {path} has replies to probes not in {cfg.probes}: {', '.join(unknown[:5])}")
        chosen = [by_id[r["id"]] for r in stored]
        results = score(chosen, categories, [r["reply"] or "" for r in stored], persona, safeguard, cfg.max_grade)
        for result, r in zip(results, stored):
            if r.get("error"):  # a served probe that got no reply stays failed
                result.update(error=r["error"], passed=False)
        report["results"][name] = results
        report["pass_rates"][name] = pass_rates(results)
    print(f"tim eval: rescored {sum(len(r) for r in runs.values())} stored replies of {path}", file=sys.stderr)
    return report


def finish(report: dict, thresholds: dict[str, float], gated: str, out: Path) -> dict:
    """Gate on the `gated` run's pass rates, write report.json / report.md / pass_rates.png."""
    report["intervals"] = {name: interval_of(results) for name, results in report["results"].items()}
    final = report["pass_rates"][gated]
    failed = {k: round(final[k], 3) for k, v in thresholds.items() if not final[k] >= v - 1e-9}
    if thresholds:
        report["gate"] = {"thresholds": thresholds, "failed": failed, "passed": not failed}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    write_markdown(report, out / "report.md")
    write_chart(report["pass_rates"], out / "pass_rates.png")
    print((out / "report.md").read_text(encoding="utf-8"), file=sys.stderr)
    print(f"tim eval: report.json, report.md and pass_rates.png in {out}", file=sys.stderr)
    if failed:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    run_main(main)
