"""What a busy neighbour costs each local engine, per thread setting (issue 15).

    .venv/bin/python scripts/bench_neighbour.py [--vllm_threads all auto] [--llamacpp_threads 1 2] [--record]

On a shared 2-core machine another process often takes part of a core. For each setting, the
same work runs quiet and then beside a neighbour (`--neighbours` plain `python -c` busy loops,
each bounded to `--neighbour_s` seconds), and the ratio busy / quiet is printed (goal: a
neighbour on one core costs at most half the quiet speed, i.e. ratio >= 0.5):

- vLLM (the generator `tim synth` starts, embedded model), per `cpu_threads` (configs/generator.yaml:
  `all` = compute threads bound to every core, `auto` = vLLM's default, one core left to its
  front end): a burst of `--requests` chat requests of `--tokens` tokens each (ignore_eos, so
  every run generates the same number), generated tokens/s;
- llama.cpp (`llama_cpp.Llama` on the embedded Q4_1 GGUF), per thread count: batch-1 greedy
  decode of `--tokens` tokens, tokens/s.

The CPU flags that matter (avx2, avx512f, avx512_bf16, amx) are printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from perf_record import report, shown_cpu_flags  # noqa: E402

PROMPT = [{"role": "user", "content": "Tell me a long story about a fox who learns to read."}]


def neighbours(count: int, seconds: float) -> list[subprocess.Popen]:
    """`count` busy loops, each ending by itself after `seconds` (never left running)."""
    loop = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(count)]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def vllm_burst(base_url: str, model: str, requests: int, tokens: int) -> float:
    """Generated tokens/s for `requests` chat requests at once, `tokens` each."""
    import httpx

    async def run() -> float:
        body = {"model": model, "messages": PROMPT, "max_tokens": tokens, "ignore_eos": True, "temperature": 0.7}
        async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=requests + 4)) as client:
            t0 = time.perf_counter()
            replies = await asyncio.gather(*(client.post(f"{base_url}/v1/chat/completions", json=body)
                                             for _ in range(requests)))  # fmt: skip
            wall = time.perf_counter() - t0
        for r in replies:
            r.raise_for_status()
        return sum(r.json()["usage"]["completion_tokens"] for r in replies) / wall

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vllm_threads", nargs="*", default=["all", "auto"], choices=["all", "auto"])
    ap.add_argument("--llamacpp_threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--neighbours", type=int, default=1, help="busy loops beside the engine (1 = one core's worth)")
    ap.add_argument("--neighbour_s", type=float, default=600.0, help="each loop ends by itself after this")
    ap.add_argument("--record", action="store_true", help="append the results to docs/performance.md")
    args = ap.parse_args()
    os.chdir(ROOT)
    from load_test import free_port

    from tutorkit.backends import vllm_server
    from tutorkit.model_files import embedded_gguf_path

    rows = []  # (engine, setting, quiet, busy)
    for threads in args.vllm_threads:
        cfg = vllm_server.VllmServerConfig(port=free_port(), cpu_threads=threads,
                                           run_dir=tempfile.mkdtemp(prefix="tim-bench-neighbour-"))  # fmt: skip
        print(f"bench_neighbour: vLLM cpu_threads={threads} ...", file=sys.stderr, flush=True)
        url = vllm_server.start(cfg, owned=True)
        try:
            vllm_burst(url, cfg.served_model_name, 4, 16)  # warm-up
            quiet = vllm_burst(url, cfg.served_model_name, args.requests, args.tokens)
            busy_procs = neighbours(args.neighbours, args.neighbour_s)
            try:
                time.sleep(1.0)
                busy = vllm_burst(url, cfg.served_model_name, args.requests, args.tokens)
            finally:
                stop(busy_procs)
        finally:
            vllm_server.stop(cfg)
        rows.append(("vLLM, generated tokens/s at " + str(args.requests), f"cpu_threads={threads}", quiet, busy))
    if args.llamacpp_threads:
        from llama_cpp import Llama

        prompt = None
        for n in args.llamacpp_threads:
            print(f"bench_neighbour: llama.cpp n_threads={n} ...", file=sys.stderr, flush=True)
            llm = Llama(model_path=str(embedded_gguf_path()), n_ctx=1024, n_threads=n, verbose=False)
            prompt = prompt or llm.tokenize(PROMPT[0]["content"].encode())

            def decode() -> float:
                llm.reset()
                t0, count = None, 0
                for _ in llm.generate(prompt, temp=0.0):
                    t0 = t0 or time.perf_counter()  # from the first token: decode only
                    count += 1
                    if count > args.tokens:
                        break
                return args.tokens / (time.perf_counter() - t0)

            decode()  # warm-up
            quiet = max(decode(), decode())
            busy_procs = neighbours(args.neighbours, args.neighbour_s)
            try:
                time.sleep(1.0)
                busy = max(decode(), decode())
            finally:
                stop(busy_procs)
            rows.append(("llama.cpp batch-1 decode tokens/s", f"n_threads={n}", quiet, busy))
            del llm

    flags = shown_cpu_flags()
    lines = [
        f"\n### bench_neighbour.py, {datetime.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores",
        "",
        f"Command: `.venv/bin/python scripts/bench_neighbour.py --requests {args.requests} --tokens {args.tokens} "
        f"--neighbours {args.neighbours}` (CPU flags: {flags}; neighbour = {args.neighbours} `python -c` busy "
        "loop(s); goal: busy >= 0.5x quiet)",
        "",
        "| engine | setting | quiet | beside the neighbour | busy / quiet |",
        "|---|---|---|---|---|",
    ]
    for engine, setting, quiet, busy in rows:
        lines.append(f"| {engine} | {setting} | {quiet:.1f} | {busy:.1f} | {busy / quiet:.2f}x |")
    report(lines, args.record)


if __name__ == "__main__":
    main()
