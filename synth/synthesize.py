"""Synthesize student-Tim conversations into a chat dataset.

    tim synth --config configs/synth.yaml [--key value ...]

Plan: every topic (data/topics.yaml) x conversations_per_topic and every hard-case scenario
(data/scenarios.yaml) x conversations_per_scenario, each with a stable key and seed. Each
conversation is generated (role-play or one-shot transcript; in role-play each Tim turn is the
best of `tim_candidates` samples by the rule checks of `turn_checks`, synth/best_of_n.py), names
normalized, student voice augmented, then passed through the quality gates and near-duplicate
check (synth/gates.py); a rejected attempt is retried with a new seed up to max_attempts. Both
prompts show `exemplars_in_prompt` gold exemplars of the conversation's category
(data/exemplars.yaml), and `exemplars_in_train` copies of every exemplar join train.jsonl.
With an empty `base_url`, backend `openai` starts the project's own vLLM server
(generator_config) and stops it afterwards if this command started it; `llamacpp` generates with
the generator's GGUF in this process; `auto` (the default) takes vLLM on a GPU or an AVX-512 CPU
and llama.cpp on a CPU without AVX-512, and prints which and why (tutorkit/hardware.py).

Files in output_dir:
  conversations.jsonl   journal: every finished attempt, appended and flushed as it finishes
  requests.jsonl        every request: prompt, parameters, raw output(s), latency, backend
  train.jsonl, validation.jsonl   accepted `messages` rows with `meta` (schema: tutorkit/conversation.py)
  preferences.jsonl, preferences_validation.jsonl   best vs worst candidate of scored Tim turns
                        (TRL's conversational preference format: prompt, chosen, rejected)
  report.json           counts (requested, written, rejected per reason, per category), speed
  README.md, *.png      the dataset card with histograms
Crash-safe: rerunning the same command after a kill continues from the journal and ends with
exactly the planned conversations, no duplicates.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from synth.best_of_n import TurnScorer, first_vs_kept, preference_pairs, weight_failed_turns
from synth.card import write_card
from synth.catalog import ConversationSpec, exemplars_for, load_catalog_exemplars, load_scenarios, load_topics, plan
from synth.gates import GateLimits, NearDuplicates, check
from synth.postprocess import augment_student_voice, normalize_names
from synth.roleplay import roleplay
from synth.transcript import one_shot
from tutorkit import TimError, run_main
from tutorkit.backends import BackendSpec, Sampling, open_backend, vllm_server
from tutorkit.chat_template import load_template
from tutorkit.checks import CHECKS, Context, get_check
from tutorkit.config import ConfigParser
from tutorkit.conversation import split_rows, trained, write_jsonl
from tutorkit.hardware import local_engine
from tutorkit.exemplars import probe_student_texts
from tutorkit.model_files import embedded_gguf_path, resolve_model
from tutorkit.persona import load_persona
from tutorkit.safeguarding import load_safeguard

# Settings that change what a conversation is: a journal made with others cannot be resumed.
CONTENT_KEYS = ("topics_file", "scenarios_file", "persona_config", "mode", "turns", "seed", "temperature", "top_p",
                "student_max_tokens", "tim_max_tokens", "transcript_max_tokens", "student_voice_fraction",
                "tim_candidates", "turn_checks", "safeguarding_config", "exemplars_file", "exemplars_in_prompt",
                "probe_files")  # fmt: skip


@dataclass
class SynthConfig:
    output_dir: str = field(default="runs/synth", metadata={"help": "Where the dataset, journal and card go."})
    topics_file: str = field(default="data/topics.yaml")
    scenarios_file: str = field(default="data/scenarios.yaml")
    persona_config: str = field(default="configs/persona.yaml")
    mode: str = field(default="roleplay", metadata={"help": "roleplay (two prompts take turns) | transcript (one shot)"})
    backend: str = field(default="auto", metadata={"help": "auto (vLLM with a GPU or AVX-512, else llama.cpp) | openai "
                         "(vLLM or any compatible server) | llamacpp (the generator's GGUF in process) | transformers"})
    base_url: list[str] = field(
        default_factory=list, metadata={"help": "OpenAI-compatible servers (round-robin); empty = start our vLLM."}
    )
    api_key: str | None = field(default=None)
    model: str | None = field(
        default=None, metadata={"help": "openai: served model name; transformers: model. Default: generator's."}
    )
    generator_config: str = field(default="configs/generator.yaml", metadata={"help": "The local vLLM server."})
    conversations_per_topic: int = field(default=1)
    conversations_per_scenario: int = field(default=1)
    max_conversations: int = field(default=0, metadata={"help": "Plan only the first N (0 = all)."})
    turns: int = field(default=3, metadata={"help": "Student-Tim exchanges per conversation."})
    temperature: float = field(default=0.8)
    top_p: float = field(default=0.95)
    presence_penalty: float = field(default=0.0)
    student_max_tokens: int = field(default=64)
    tim_max_tokens: int = field(default=160)
    transcript_max_tokens: int = field(default=700, metadata={"help": "transcript mode: the whole chat."})
    seed: int = field(default=0)
    tim_candidates: int = field(
        default=1,
        metadata={"help": "roleplay: candidates per Tim turn, the best kept by turn_checks (1 = take the first)."},
    )
    turn_checks: dict[str, list[str]] = field(
        default_factory=dict,
        metadata={"help": "Checks (tutorkit/checks.py) that score Tim's candidates: under 'all', a learner group "
                  "or a scenario category."},
    )
    safeguarding_config: str = field(default="configs/safeguarding.yaml", metadata={"help": "For the not_abusive check."})
    exemplars_file: str = field(default="data/exemplars.yaml", metadata={"help": "Gold exemplars ('' = none)."})
    probe_files: list[str] = field(default_factory=lambda: ["data/probes.yaml", "data/probes_test.yaml"], metadata={
        "help": "The evaluation's probes (dev and test): a conversation whose student says one is rejected "
                "(probe_text), since tim eval refuses a dataset holding them ([] = no check)."})  # fmt: skip
    exemplars_in_prompt: int = field(
        default=0, metadata={"help": "Exemplars of the conversation's category shown to Tim and the student (0 = off)."}
    )
    exemplars_in_train: int = field(default=0, metadata={"help": "Copies of every exemplar added to train.jsonl (0 = none)."})
    mask_failed_turns: bool = field(
        default=False,
        metadata={"help": "Give weight 0 in train.jsonl to the Tim turns whose kept candidate failed one of its "
                  "turn_checks: the model reads them as context and is not trained to say them."},
    )
    request_seeds: bool = field(
        default=False,
        metadata={"help": "Send each request's seed to the server. Off for vLLM's CPU build, which crashes on "
                  "seeded requests once prefills are chunked (it rewinds a CUDA-only generator offset)."},
    )
    max_concurrency: int = field(default=32, metadata={"help": "Conversations in flight (fills vLLM's batches)."})
    transformers_batch_size: int = field(default=8, metadata={"help": "transformers backend: requests per generate()."})
    llamacpp_cache_mb: int = field(default=4096, metadata={"help": "llamacpp backend: RAM for earlier requests' states, "
                                   "~26 MB per 1200 tokens for the embedded model, so a conversation's next turn reads only its new messages (0 = off)."})
    request_timeout_s: float = field(default=120.0)
    max_retries: int = field(default=4, metadata={"help": "Per request, with exponential backoff."})
    max_attempts: int = field(default=3, metadata={"help": "Per conversation; each attempt a new seed."})
    validation_fraction: float = field(default=0.1)
    card_license: str = field(default="apache-2.0", metadata={"help": "The dataset card's license (a Hub license id)."})
    student_voice_fraction: float = field(default=0.3, metadata={"help": "Share of student turns made messy."})
    persona_break_patterns: list[str] = field(default_factory=list, metadata={"help": "Regexes; a match rejects."})
    min_tim_turns: int = field(default=1)
    tim_min_words: int = field(default=2)
    tim_max_words: int = field(default=180)
    student_max_words: int = field(default=120)
    dedupe_threshold: float = field(default=0.8, metadata={"help": "MinHash Jaccard above which it is a duplicate."})
    overwrite: bool = field(default=False, metadata={"help": "Start over even if output_dir holds another run."})

    def __post_init__(self):
        if self.backend not in ("auto", "openai", "llamacpp", "transformers"):
            raise ValueError(f"backend must be auto, openai, llamacpp or transformers, got {self.backend!r}")
        if self.mode not in ("roleplay", "transcript"):
            raise ValueError(f"mode must be 'roleplay' or 'transcript', got {self.mode!r}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.turns < 1 or self.max_attempts < 1 or self.tim_candidates < 1:
            raise ValueError("turns, max_attempts and tim_candidates must be at least 1")
        if self.exemplars_in_prompt < 0 or self.exemplars_in_train < 0:
            raise ValueError("exemplars_in_prompt and exemplars_in_train must be 0 or more")
        if (self.exemplars_in_prompt or self.exemplars_in_train) and not self.exemplars_file:
            raise ValueError("exemplars_in_prompt / exemplars_in_train need an exemplars_file")
        for key, names in self.turn_checks.items():
            for name in names:
                try:
                    get_check(name)
                except KeyError:
                    raise ValueError(f"turn_checks.{key}: unknown check '{name}' (one of {', '.join(CHECKS)}, "
                                     "words_LOW_HIGH)") from None  # fmt: skip
        if self.tim_candidates > 1 and not any(self.turn_checks.values()):
            raise ValueError("tim_candidates above 1 needs turn_checks to choose by")

    def backend_spec(self, generator: vllm_server.VllmServerConfig) -> BackendSpec:
        """The generator: a server at base_url, our own vLLM, llama.cpp or transformers in process.
        `auto` picks vLLM or llama.cpp for this machine and says which and why."""
        engine = self.backend
        if self.base_url:
            engine = "openai"
        elif engine == "auto":
            engine, why = local_engine(vllm_server.cuda_present())
            print(f"tim synth: generating with {'vLLM' if engine == 'vllm' else 'llama.cpp'}: {why}", file=sys.stderr)
        elif engine == "openai":
            engine = "vllm"  # no server given: our own
        if engine == "transformers":
            return BackendSpec("transformers", model=self.model or generator.model, batch_size=self.transformers_batch_size)
        if engine == "llamacpp":
            return BackendSpec("llamacpp", model=str(generator_gguf(self.model or generator.model)),
                               chat_template=load_template(resolve_model(generator.model)),
                               context_tokens=generator.max_model_len, prompt_cache_mb=self.llamacpp_cache_mb)  # fmt: skip
        return BackendSpec(engine, model=self.model or generator.served_model_name, base_url=self.base_url,
                           api_key=self.api_key, server=generator, max_concurrency=self.max_concurrency,
                           timeout_s=self.request_timeout_s, max_retries=self.max_retries)  # fmt: skip


def generator_gguf(model: str) -> Path:
    """The GGUF file llama.cpp generates with: the embedded model's own, or a .gguf path."""
    if model == "embedded":
        return embedded_gguf_path()
    if model.endswith(".gguf") and Path(model).is_file():
        return Path(model)
    raise TimError(f"the llama.cpp generator needs a GGUF file: model is {model!r} (use 'embedded', a .gguf file "
                   "from `tim export --gguf true`, or backend: openai)")  # fmt: skip


class Journal:
    """Append-only record of finished attempts; a torn last line (kill -9) is cut off on open."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict] = []
        if path.exists():
            data = path.read_bytes()
            good = data[: data.rfind(b"\n") + 1]
            if len(good) != len(data):
                with open(path, "r+b") as f:
                    f.truncate(len(good))
            self.records = [json.loads(line) for line in good.decode().splitlines() if line.strip()]
        self._file = open(path, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records.append(record)

    def close(self) -> None:
        self._file.close()


class RequestLog:
    def __init__(self, path: Path, backend_name: str, model: str):
        self._file = open(path, "a", encoding="utf-8")
        self.backend_name, self.model = backend_name, model

    def write(self, key: str, purpose: str, messages, sampling: Sampling, output: str | None, latency: float, error=None):
        record = {
            "time": time.time(), "key": key, "purpose": purpose, "backend": self.backend_name, "model": self.model,
            "sampling": asdict(sampling), "messages": messages, "output": output, "latency_s": round(latency, 3),
        }  # fmt: skip
        if error is not None:
            record["error"] = str(error)
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _fingerprint(cfg: SynthConfig) -> str:
    settings = {k: getattr(cfg, k) for k in CONTENT_KEYS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _gate_limits(cfg: SynthConfig, tutor_name: str) -> GateLimits:
    return GateLimits(
        tutor_name,
        cfg.min_tim_turns, cfg.tim_min_words, cfg.tim_max_words, cfg.student_max_words, cfg.persona_break_patterns,
        {key: texts for path in cfg.probe_files for key, texts in probe_student_texts(path).items()},
    )


async def synthesize(cfg: SynthConfig, backend, backend_meta: dict, specs, exemplars, journal: Journal, requests: RequestLog):
    persona = load_persona(cfg.persona_config)
    persona_prompt = persona.render_system_prompt()
    student = Sampling(cfg.temperature, cfg.top_p, cfg.student_max_tokens, cfg.presence_penalty)
    tim = Sampling(cfg.temperature, cfg.top_p, cfg.tim_max_tokens, cfg.presence_penalty)
    transcript = Sampling(cfg.temperature, cfg.top_p, cfg.transcript_max_tokens, cfg.presence_penalty)
    limits = _gate_limits(cfg, persona.name)
    send_seed = cfg.request_seeds or cfg.backend == "transformers"
    scorer = TurnScorer(cfg.turn_checks, Context(persona.name, load_safeguard(cfg.safeguarding_config, with_guard=False),
                                                 persona.other_assistants()))  # fmt: skip

    accepted = {r["key"] for r in journal.records if r["status"] == "accepted"}
    attempts = Counter(r["key"] for r in journal.records)
    duplicates = NearDuplicates(cfg.dedupe_threshold)
    for r in journal.records:
        if r["status"] == "accepted":
            duplicates.add(r["key"], r["messages"])
    todo = [s for s in specs if s.key not in accepted and attempts[s.key] < cfg.max_attempts]
    in_flight = asyncio.Semaphore(cfg.max_concurrency)
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc="synth", unit="conv", dynamic_ncols=True)

    async def attempt(spec: ConversationSpec, number: int) -> bool:
        async def complete(messages, sampling, purpose, n):
            if not send_seed:
                sampling = dataclasses.replace(sampling, seed=None)
            started = time.monotonic()
            try:
                outputs = await (backend.complete_n(messages, sampling, n) if n > 1 else backend.complete(messages, sampling))
            except Exception as e:
                requests.write(spec.key, purpose, messages, sampling, None, time.monotonic() - started, e)
                raise
            requests.write(spec.key, purpose, messages, sampling, outputs, time.monotonic() - started)
            return outputs if n > 1 else [outputs]

        tried = dataclasses.replace(spec, seed=spec.seed + 7919 * number)
        shown = exemplars_for(spec, exemplars, cfg.exemplars_in_prompt)
        choices = []
        if cfg.mode == "transcript":
            messages, reason = await one_shot(complete, tried, persona_prompt, persona.name, transcript, shown)
        else:
            messages, choices = await roleplay(complete, tried, persona_prompt, persona.name, student, tim,
                                               cfg.tim_candidates, scorer, shown)  # fmt: skip
            reason = None
        if reason is None:
            messages = normalize_names(messages, persona.name, persona.other_assistants())
            messages = augment_student_voice(messages, cfg.student_voice_fraction, tried.seed)
            reason = check(messages, limits, spec.scenario.silent_from if spec.scenario else None)
        if reason is None and duplicates.seen(messages):
            reason = "near_duplicate"
        meta = {
            "key": spec.key, "kind": spec.kind, "category": spec.category, "learner": spec.learner,
            "topic": spec.topic if spec.kind == "topic" else None,
            "scenario": spec.scenario.id if spec.scenario else None,
            "mode": cfg.mode, **backend_meta, "seed": tried.seed, "attempt": number,
            "exemplars_shown": [e.id for e in shown],
        }  # fmt: skip
        record = {"key": spec.key, "attempt": number, "status": "rejected" if reason else "accepted", "reason": reason,
                  "messages": messages, "meta": meta, "choices": choices}  # fmt: skip
        if reason is None:
            duplicates.add(spec.key, messages)
        journal.append(record)
        return reason is None

    async def one(spec: ConversationSpec):
        async with in_flight:
            for number in range(attempts[spec.key], cfg.max_attempts):
                if await attempt(spec, number):
                    break
        bar.update(1)

    try:
        await asyncio.gather(*(one(s) for s in todo))
    finally:
        bar.close()
        await backend.aclose()


def _prepare_output(cfg: SynthConfig) -> Path:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "run.json"
    fingerprint = _fingerprint(cfg)
    if run_file.exists() and not cfg.overwrite:
        previous = json.loads(run_file.read_text()).get("fingerprint")
        if previous != fingerprint:
            raise TimError(f"{out} holds a run with other settings; use another output_dir or --overwrite true")
    if cfg.overwrite:
        for name in ("conversations.jsonl", "requests.jsonl"):
            (out / name).unlink(missing_ok=True)
    run_file.write_text(json.dumps({"fingerprint": fingerprint, "settings": {k: getattr(cfg, k) for k in CONTENT_KEYS}}) + "\n")
    return out


def exemplar_rows(cfg: SynthConfig, exemplars) -> list[dict]:
    """`exemplars_in_train` copies of every exemplar as training rows, with the persona's prompt
    (the one serving sends); meta kind "exemplar". Training only: validation stays synthetic."""
    persona_prompt = load_persona(cfg.persona_config).render_system_prompt()
    return [{"messages": e.messages(persona_prompt),
             "meta": {"key": f"exemplar:{e.id}#{copy}", "kind": "exemplar", "category": e.category,
                      "learner": e.learner, "topic": None, "scenario": None, "mode": "exemplar"}}
            for copy in range(cfg.exemplars_in_train) for e in exemplars]  # fmt: skip


def mask_failed(train: list[dict], choices: dict[str, list[dict]]) -> dict[str, int]:
    """In place: weight 0 on the training rows' Tim turns that failed a check; a row left with no
    trained turn is dropped (nothing in it to learn). Preference pairs still come from every row."""
    turns, kept = 0, []
    for row in train:
        messages, n = weight_failed_turns(row["messages"], choices[row["meta"]["key"]])
        turns += n
        if any(m["role"] == "assistant" and trained(m) for m in messages):
            kept.append({**row, "messages": messages})
    dropped = len(train) - len(kept)
    train[:] = kept
    return {"turns": turns, "rows_dropped": dropped}


def finish(cfg: SynthConfig, out: Path, specs, exemplars, journal: Journal, elapsed: float, backend_meta: dict,
           tokens: int) -> dict:  # fmt: skip
    """Write train/validation.jsonl, report.json and the card from the journal."""
    order = {s.key: i for i, s in enumerate(specs)}
    accepted = sorted(
        (r for r in journal.records if r["status"] == "accepted" and r["key"] in order), key=lambda r: order[r["key"]]
    )
    rows = split_rows([{"messages": r["messages"], "meta": r["meta"]} for r in accepted], lambda row: row["meta"]["key"],
                      cfg.validation_fraction)  # fmt: skip
    if not accepted:
        reasons = Counter(r["reason"] for r in journal.records)
        raise TimError(f"no conversation passed the gates ({dict(reasons)}); see {out}/requests.jsonl")
    gold = exemplar_rows(cfg, exemplars)
    # Preference pairs from the best-of-n turns, each in the split of its conversation.
    choices = {r["key"]: r.get("choices", []) for r in accepted}
    pairs = {}
    for split, name in (("train", "preferences.jsonl"), ("validation", "preferences_validation.jsonl")):
        pairs[split] = [{**pair, "meta": {**pair["meta"], "key": row["meta"]["key"]}}
                        for row in rows[split] for pair in preference_pairs(row["messages"], choices[row["meta"]["key"]])]  # fmt: skip
        write_jsonl(out / name, pairs[split])
    # SFT rows: failed turns kept as context only (validation keeps the generator's turns as they are).
    masked = mask_failed(rows["train"], choices) if cfg.mask_failed_turns else {"turns": 0, "rows_dropped": 0}
    write_jsonl(out / "train.jsonl", rows["train"] + gold)
    write_jsonl(out / "validation.jsonl", rows["validation"])
    done = {r["key"] for r in accepted}
    report = {
        "requested": len(specs),
        "written": len(accepted),
        "train": len(rows["train"]) + len(gold),
        "exemplars": {"file": cfg.exemplars_file, "count": len(exemplars), "in_prompt": cfg.exemplars_in_prompt,
                      "rows_in_train": len(gold)},
        "validation": len(rows["validation"]),
        "gave_up": sorted(s.key for s in specs if s.key not in done),
        "rejected": dict(Counter(r["reason"] for r in journal.records if r["status"] == "rejected")),
        "attempts": len(journal.records),
        "per_category": dict(Counter(f"{r['meta']['kind']}:{r['meta']['category']}" for r in accepted)),
        "silent_turns": sum(1 for r in accepted for m in r["messages"] if m["role"] == "assistant" and not m["content"]),
        "best_of_n": {"candidates": cfg.tim_candidates, "scored_turns": sum(len(c) for c in choices.values()),
                      "preference_pairs": {split: len(p) for split, p in pairs.items()},
                      "failed_turns_masked": masked["turns"], "rows_left_with_no_trained_turn": masked["rows_dropped"],
                      "checks_first_vs_kept": first_vs_kept([c for cs in choices.values() for c in cs])},  # fmt: skip
        "backend": backend_meta,
        "elapsed_s": round(elapsed, 1),
        "generated_tokens": tokens,
        "generated_tokens_per_s": round(tokens / max(elapsed, 1e-9), 1),
        "config": asdict(cfg),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_card(out, report, {"train": rows["train"] + gold, "validation": rows["validation"]}, cfg.card_license)
    return report


def make_parser() -> ConfigParser:
    return ConfigParser(SynthConfig, prog="tim synth", doc=__doc__)


def main(args=None) -> dict:
    cfg, _ = make_parser().parse(args)
    load_persona(cfg.persona_config)  # fail on a bad persona before any server starts
    scenarios = load_scenarios(cfg.scenarios_file)
    specs = plan(
        load_topics(cfg.topics_file), scenarios, cfg.conversations_per_topic,
        cfg.conversations_per_scenario, cfg.turns, cfg.seed, cfg.max_conversations,
    )  # fmt: skip
    wanted = cfg.exemplars_in_prompt or cfg.exemplars_in_train
    exemplars = load_catalog_exemplars(cfg.exemplars_file, scenarios) if wanted else []
    spec = cfg.backend_spec(vllm_server.load_config(cfg.generator_config))
    out = _prepare_output(cfg)
    journal = Journal(out / "conversations.jsonl")
    started = time.monotonic()
    # What rows record as their source: the engine kind (vLLM is reached over its OpenAI API).
    meta = {"backend": "openai" if spec.engine in ("openai", "vllm") else spec.engine, "model": spec.model}
    requests = RequestLog(out / "requests.jsonl", meta["backend"], meta["model"])
    try:
        with open_backend(spec) as backend:
            asyncio.run(synthesize(cfg, backend, meta, specs, exemplars, journal, requests))
        report = finish(cfg, out, specs, exemplars, journal, time.monotonic() - started, meta, backend.completion_tokens)
    finally:
        requests.close()
        journal.close()
    print(
        f"tim synth: {report['written']}/{report['requested']} conversations ({report['train']} train, "
        f"{report['validation']} validation) in {out}; rejected {report['rejected'] or 'none'}",
        file=sys.stderr,
    )
    return report


if __name__ == "__main__":
    run_main(main)
