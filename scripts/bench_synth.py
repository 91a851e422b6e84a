"""Synthesis throughput, four ways in one run, on the same plan of conversations:

  1. the local vLLM server with many conversations in flight (the configured max_concurrency)
  2. the raw engine: the requests of (1), from its requests.jsonl, replayed straight at the same
     server with the same concurrency, sampling and n (no turn waits for the one before it, so
     this is what vLLM gives with the same prompts; (1) / (2) is what the project's layer keeps)
  3. the in-process transformers generator, batched
  4. the local vLLM server, one conversation at a time

    .venv/bin/python scripts/bench_synth.py [--conversations 64] [--concurrency 32] [--record]

Prints conversations per minute and generated tokens/s for each, and the ratios (1)/(2) and
(1)/(4). --record appends the table to docs/performance.md. Goals on a 2-core CPU with the
embedded model: >= 0.9x the raw replay, >= 600 generated tokens/s through vLLM, and >= 5x the
one-at-a-time rate.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import tempfile
from pathlib import Path

from perf_record import report

from synth import synthesize
from tutorkit.backends import vllm_server

ROOT = Path(__file__).resolve().parent.parent


def run(out: Path, conversations: int, turns: int, extra: list[str]) -> dict:
    report = synthesize.main(
        ["--config", str(ROOT / "configs/synth.yaml"), "--output_dir", str(out), "--overwrite", "true",
         "--max_conversations", str(conversations), "--turns", str(turns), "--max_attempts", "1", *extra]
    )  # fmt: skip
    return {
        "conversations": report["attempts"],
        "seconds": report["elapsed_s"],
        "conversations_per_min": round(60 * report["attempts"] / report["elapsed_s"], 1),
        "generated_tokens": report["generated_tokens"],
        "tokens_per_s": report["generated_tokens_per_s"],
    }


def replay(url: str, model: str, requests_file: Path, concurrency: int) -> dict:
    """The logged requests sent straight at the server, `concurrency` at a time; generated tokens
    as the server counts them (usage)."""
    import asyncio
    import time

    import httpx

    records = [json.loads(line) for line in requests_file.read_text().splitlines()]

    async def one(client, limit, r) -> int:
        sampling = {k: v for k, v in r["sampling"].items() if v not in (None, [])}  # as the backend sends them
        n = len(r["output"]) if isinstance(r["output"], list) else 1  # a list: the n candidates of one request
        async with limit:
            reply = await client.post(f"{url}/v1/chat/completions", json={
                "model": model, "messages": r["messages"], "n": n, **sampling})  # fmt: skip
        return reply.json()["usage"]["completion_tokens"]

    async def go() -> tuple[int, float]:
        limit = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=600) as client:
            started = time.perf_counter()
            tokens = await asyncio.gather(*(one(client, limit, r) for r in records if r.get("output")))
            return sum(tokens), time.perf_counter() - started

    tokens, seconds = asyncio.run(go())
    return {"conversations": "-", "seconds": round(seconds, 1), "conversations_per_min": "-",
            "generated_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conversations", type=int, default=64)
    ap.add_argument("--sequential_conversations", type=int, default=8)
    ap.add_argument("--transformers_conversations", type=int, default=16)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--generator_config", default=str(ROOT / "configs/generator.yaml"))
    ap.add_argument("--record", action="store_true", help="append the results to docs/performance.md")
    args = ap.parse_args()

    gen_cfg = vllm_server.load_config(args.generator_config)
    tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    results = {}
    try:
        with vllm_server.running(gen_cfg) as url:
            server = ["--base_url", url, "--model", gen_cfg.served_model_name]
            # A short warm-up so that vLLM's first-batch compilation is not timed.
            run(tmp / "warmup", 4, 1, [*server, "--max_concurrency", "4"])
            results["vllm_concurrent"] = run(
                tmp / "vllm", args.conversations, args.turns, [*server, "--max_concurrency", str(args.concurrency)]
            )
            results["raw_vllm_replay"] = replay(url, gen_cfg.served_model_name, tmp / "vllm" / "requests.jsonl",
                                                args.concurrency)  # fmt: skip
            results["vllm_one_at_a_time"] = run(
                tmp / "seq", args.sequential_conversations, args.turns, [*server, "--max_concurrency", "1"]
            )
        results["transformers_batched"] = run(
            tmp / "hf", args.transformers_conversations, args.turns,
            ["--backend", "transformers", "--max_concurrency", "8", "--transformers_batch_size", "8"],
        )  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ratio = results["vllm_concurrent"]["tokens_per_s"] / max(results["vllm_one_at_a_time"]["tokens_per_s"], 1e-9)
    kept = results["vllm_concurrent"]["tokens_per_s"] / max(results["raw_vllm_replay"]["tokens_per_s"], 1e-9)
    print(json.dumps({**results, "vllm_concurrent_over_one_at_a_time": round(ratio, 2),
                      "tim_synth_over_raw_replay": round(kept, 2)}, indent=2))  # fmt: skip
    lines = [
        f"### bench_synth.py, {datetime.date.today()}, {platform.machine()}, {__import__('os').cpu_count()} cores",
        "",
        f"Command: `.venv/bin/python scripts/bench_synth.py --conversations {args.conversations} "
        f"--concurrency {args.concurrency} --turns {args.turns}` (embedded model, `max_attempts 1`)",
        "",
        "| generator | conversations | seconds | conversations/min | generated tokens/s |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {r['conversations']} | {r['seconds']} | {r['conversations_per_min']} | {r['tokens_per_s']} |"
            for name, r in results.items()
        ),
        "",
        f"vLLM with {args.concurrency} conversations in flight vs one at a time: {ratio:.1f}x generated tokens/s. "
        f"`tim synth` vs the raw replay of its own requests: {kept:.2f}x (goal >= 0.9x).",
        "",
    ]
    report(lines, args.record)


if __name__ == "__main__":
    main()
