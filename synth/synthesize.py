"""Synthesize student-Tim conversations into a chat dataset.

    tim synth --config configs/synth.yaml [--key value ...]

Topics (data/topics.yaml) -> role-played conversations from a local generator -> in output_dir:
  train.jsonl, validation.jsonl   `messages` rows (schema: tim/conversation.py) with a `meta` field
  report.json                     counts: requested, written, rejected per reason, speed
With an empty `base_url` and backend `openai`, the project's own vLLM server is started from
`generator_config` (and stopped afterwards if this command started it).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

from synth.roleplay import RoleplaySpec, roleplay_conversation
from tim import TimError
from tim.backends import OpenAIChatBackend, Sampling, TransformersChatBackend
from tim.config import make_config_parser, parse_config
from tim.conversation import validate_messages, write_conversations
from tim.generator_server import GeneratorConfig, running
from tim.model_files import resolve_model
from tim.persona import load_persona


@dataclass
class SynthConfig:
    output_dir: str = field(default="runs/synth", metadata={"help": "Where train/validation.jsonl and report.json go."})
    topics_file: str = field(default="data/topics.yaml")
    persona_config: str = field(default="configs/persona.yaml")
    backend: str = field(default="openai", metadata={"help": "openai (vLLM or any compatible server) | transformers"})
    base_url: list[str] = field(
        default_factory=list, metadata={"help": "OpenAI-compatible servers (round-robin); empty = start our vLLM."}
    )
    api_key: str | None = field(default=None)
    model: str | None = field(
        default=None, metadata={"help": "openai: served model name; transformers: model. Default: generator's."}
    )
    generator_config: str = field(default="configs/generator.yaml", metadata={"help": "The local vLLM server."})
    conversations_per_topic: int = field(default=1)
    max_conversations: int = field(default=0, metadata={"help": "Stop after this many (0 = every topic)."})
    turns: int = field(default=3, metadata={"help": "Student-Tim exchanges per conversation."})
    temperature: float = field(default=0.8)
    top_p: float = field(default=0.95)
    presence_penalty: float = field(default=0.0)
    student_max_tokens: int = field(default=64)
    tim_max_tokens: int = field(default=160)
    seed: int = field(default=0)
    max_concurrency: int = field(default=32, metadata={"help": "Requests in flight (fills vLLM's batches)."})
    request_timeout_s: float = field(default=120.0)
    validation_fraction: float = field(default=0.1)

    def __post_init__(self):
        if self.backend not in ("openai", "transformers"):
            raise TimError(f"backend must be 'openai' or 'transformers', got {self.backend!r}")
        if not 0 <= self.validation_fraction < 1:
            raise TimError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.turns < 1:
            raise TimError("turns must be at least 1")


def load_topics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise TimError(f"topics file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    topics = data.get("topics") if isinstance(data, dict) else None
    if not topics:
        raise TimError(f"{path}: expected a 'topics' list")
    for i, t in enumerate(topics):
        if not isinstance(t, dict) or not isinstance(t.get("topic"), str) or not isinstance(t.get("learner"), str):
            raise TimError(f"{path}: topics[{i}] needs 'topic' and 'learner' strings")
    return topics


def plan(cfg: SynthConfig, topics: list[dict]) -> list[RoleplaySpec]:
    specs = [
        RoleplaySpec(topic=t["topic"], learner=t["learner"], turns=cfg.turns, seed=cfg.seed + i)
        for i in range(cfg.conversations_per_topic)
        for t in topics
    ]
    return specs[: cfg.max_conversations] if cfg.max_conversations else specs


async def generate(cfg: SynthConfig, backend, specs, system_prompt: str, tutor_name: str, meta: dict):
    student = Sampling(cfg.temperature, cfg.top_p, cfg.student_max_tokens, cfg.presence_penalty)
    tim = Sampling(cfg.temperature, cfg.top_p, cfg.tim_max_tokens, cfg.presence_penalty)
    rows, rejected = [], Counter()
    bar = tqdm(total=len(specs), desc="synth", unit="conv", dynamic_ncols=True)

    async def one(spec: RoleplaySpec):
        messages, reason = await roleplay_conversation(backend, spec, system_prompt, tutor_name, student, tim)
        if reason is None:
            validate_messages(messages, f"generated conversation ({spec.topic})")
            row_meta = {**meta, "topic": spec.topic, "learner": spec.learner, "mode": "roleplay", "seed": spec.seed}
            rows.append({"messages": messages, "meta": row_meta})
        else:
            rejected[reason] += 1
        bar.update(1)

    try:
        await asyncio.gather(*(one(s) for s in specs))
    finally:
        bar.close()
        await backend.aclose()
    return rows, rejected


def split(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    rows = sorted(rows, key=lambda r: (r["meta"]["topic"], r["meta"]["seed"]))
    random.Random(seed).shuffle(rows)
    n_val = round(len(rows) * fraction)
    if fraction > 0 and len(rows) >= 2:
        n_val = max(1, n_val)
    return rows[n_val:], rows[:n_val]


def make_parser():
    return make_config_parser((SynthConfig,), prog="tim synth", doc=__doc__)


def main(args=None) -> dict:
    (cfg,) = parse_config(make_parser(), args)
    persona = load_persona(cfg.persona_config)
    topics = load_topics(cfg.topics_file)
    specs = plan(cfg, topics)
    (gen_cfg,) = parse_config(make_config_parser((GeneratorConfig,), "generator", None), ["--config", cfg.generator_config])
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    if cfg.backend == "transformers":
        model = cfg.model or gen_cfg.model
        backend = TransformersChatBackend(resolve_model(model))
        meta = {"backend": "transformers", "model": model}
        rows, rejected = asyncio.run(generate(cfg, backend, specs, persona.render_system_prompt(), persona.name, meta))
    else:
        model = cfg.model or gen_cfg.served_model_name
        meta = {"backend": "openai", "model": model}

        def run(urls):
            backend = OpenAIChatBackend(urls, model, cfg.api_key, cfg.max_concurrency, cfg.request_timeout_s)
            return asyncio.run(generate(cfg, backend, specs, persona.render_system_prompt(), persona.name, meta))

        if cfg.base_url:
            rows, rejected = run(cfg.base_url)
        else:
            with running(gen_cfg) as url:
                rows, rejected = run([url])

    elapsed = time.monotonic() - started
    if not rows:
        raise TimError(f"no conversation passed ({dict(rejected)}); see the generator log")
    train, validation = split(rows, cfg.validation_fraction, cfg.seed)
    write_conversations(out / "train.jsonl", train)
    write_conversations(out / "validation.jsonl", validation)
    report = {
        "requested": len(specs),
        "written": len(rows),
        "train": len(train),
        "validation": len(validation),
        "rejected": dict(rejected),
        "backend": meta,
        "elapsed_s": round(elapsed, 1),
        "conversations_per_minute": round(60 * len(specs) / max(elapsed, 1e-9), 1),
        "config": asdict(cfg),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"tim synth: {len(rows)} conversations ({len(train)} train, {len(validation)} validation) in {out}", file=sys.stderr)
    return report


if __name__ == "__main__":
    from tim.cli import run_reporting_errors

    run_reporting_errors(main)
