"""Serving speed per backend, in one run, for the tuned model (base + trained adapter):

  - batch-1: time to first token and decode tokens/s for one chat (--decode_tokens, greedy)
  - aggregate generated tokens/s with 8 and with 32 chats at once (--concurrent_tokens each)

    .venv/bin/python scripts/bench_serve.py --adapter runs/demo/adapter [--backends vllm transformers] [--record]

Backends are measured through the chat backend interface `tim serve` uses (tim/backends.py):
`vllm` = the project's vLLM server as `tim serve` starts it (merged weights on a CPU),
`transformers` = the model in process (fp32 on a CPU). The prompt is the persona's system
prompt plus a student's question, rendered by the chat template saved at training time; tokens
are counted by re-tokenizing each reply. Goal for vLLM on a 2-core CPU with the embedded model:
>= 600 tokens/s aggregate at 32 chats and <= 0.15 s to first token for one chat.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import time
from pathlib import Path

from perf_record import report

from serve.app import ServeConfig, make_backend
from tim.backends import Sampling
from tim.persona import load_persona

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "Can you explain how fractions work?", "Why do volcanoes erupt?", "What is a noun and what is a verb?",
    "How do plants make food?", "What happened in the Roman Empire?", "How do I work out 15% of 80?",
]  # fmt: skip


async def one_chat(backend, tokenizer, system: str, question: str, sampling: Sampling) -> dict:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    sent = time.perf_counter()
    first, text = None, ""
    async for piece in backend.stream(messages, sampling):
        first = first or time.perf_counter()
        text += piece
    done = time.perf_counter()
    tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return {"ttft": (first or done) - sent, "seconds": done - sent, "decode_s": done - (first or done), "tokens": tokens}


async def measure(backend, tokenizer, system: str, args) -> dict:
    greedy = Sampling(temperature=0.0, max_tokens=args.decode_tokens)
    await one_chat(backend, tokenizer, system, "Hello!", Sampling(temperature=0.0, max_tokens=8))  # warm-up
    singles = [await one_chat(backend, tokenizer, system, q, greedy) for q in QUESTIONS[: args.single_runs]]
    ttft = sorted(r["ttft"] for r in singles)[len(singles) // 2]
    decode = sum(r["tokens"] - 1 for r in singles) / sum(r["decode_s"] for r in singles)
    result = {"ttft_s": ttft, "decode_tokens_per_s": decode}
    sampling = Sampling(temperature=0.7, top_p=0.9, max_tokens=args.concurrent_tokens)
    for n in args.concurrency:
        t0 = time.perf_counter()
        runs = await asyncio.gather(
            *(one_chat(backend, tokenizer, system, QUESTIONS[i % len(QUESTIONS)], sampling) for i in range(n))
        )
        result[f"aggregate_{n}"] = sum(r["tokens"] for r in runs) / (time.perf_counter() - t0)
    return result


def bench_backend(name: str, args, system: str, tokenizer) -> dict:
    cfg = ServeConfig(adapter=args.adapter, backend=name, require_login=True, max_concurrent=max(args.concurrency))
    backend, vllm = make_backend(cfg)
    try:
        return asyncio.run(measure(backend, tokenizer, system, args))
    finally:
        if vllm is not None:
            from tim import generator_server

            generator_server.stop(vllm)


def main() -> None:
    from transformers import AutoTokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", default="runs/demo/adapter")
    ap.add_argument("--backends", nargs="+", default=["vllm", "transformers"], choices=["vllm", "transformers"])
    ap.add_argument("--decode_tokens", type=int, default=128)
    ap.add_argument("--single_runs", type=int, default=3)
    ap.add_argument("--concurrent_tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--record", action="store_true", help="append the results to docs/performance.md")
    args = ap.parse_args()

    os.chdir(ROOT)
    system = load_persona("configs/persona.yaml").render_system_prompt()
    tokenizer = AutoTokenizer.from_pretrained(args.adapter)
    prompt_tokens = len(tokenizer.apply_chat_template(
        [{"role": "system", "content": system}, {"role": "user", "content": QUESTIONS[0]}],
        add_generation_prompt=True, return_dict=True,
    )["input_ids"])  # fmt: skip
    results = {name: bench_backend(name, args, system, tokenizer) for name in args.backends}

    columns = [f"aggregate tokens/s at {n}" for n in args.concurrency]
    lines = [
        f"\n### bench_serve.py, {datetime.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores",
        "",
        f"Command: `.venv/bin/python scripts/bench_serve.py --adapter {args.adapter} --backends {' '.join(args.backends)}`"
        f" (prompt {prompt_tokens} tokens; batch-1 greedy up to {args.decode_tokens} tokens, median of "
        f"{args.single_runs}; concurrent chats sample up to {args.concurrent_tokens} tokens each)",
        "",
        "| backend | time to first token s | batch-1 decode tokens/s | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]  # fmt: skip
    for name, r in results.items():
        cells = " | ".join(f"{r[f'aggregate_{n}']:.1f}" for n in args.concurrency)
        lines.append(f"| {name} | {r['ttft_s']:.3f} | {r['decode_tokens_per_s']:.1f} | {cells} |")
    report(lines, args.record)


if __name__ == "__main__":
    main()
