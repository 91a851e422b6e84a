"""Synthesis throughput, three ways in one run, on the same plan of conversations:

  1. the local vLLM server with many conversations in flight (the configured max_concurrency)
  2. the in-process transformers generator, batched
  3. the local vLLM server, one conversation at a time

    .venv/bin/python scripts/bench_synth.py [--conversations 64] [--concurrency 32] [--record]

Prints conversations per minute and generated tokens/s for each, and the ratio of (1) to (3).
--record appends the table to docs/performance.md. Goals on a 2-core CPU with the embedded model:
>= 600 generated tokens/s through vLLM, and >= 5x the one-at-a-time rate.
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
    print(json.dumps({**results, "vllm_concurrent_over_one_at_a_time": round(ratio, 2)}, indent=2))
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
        f"vLLM with {args.concurrency} conversations in flight vs one at a time: {ratio:.1f}x generated tokens/s.",
        "",
    ]
    report(lines, args.record)


if __name__ == "__main__":
    main()
