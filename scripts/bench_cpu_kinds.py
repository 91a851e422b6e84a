"""Each local engine on this CPU and on an AVX2-only CPU emulated on it (issue 15).

    .venv/bin/python scripts/bench_cpu_kinds.py --llamacpp_avx2_python /tmp/llavx2/bin/python [--record]

Machines of the same kind differ: some have AVX-512 with bf16, some AVX2 only. Where no AVX2-only
machine is at hand, this one plays one:
- torch (inside vLLM): ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2,
  the libraries' own switches;
- vLLM: scripts/emulate_avx2/sitecustomize.py on PYTHONPATH, so it loads its AVX2 kernels;
- llama.cpp: a build without AVX-512, in its own venv (`--llamacpp_avx2_python`), made with
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
  pip install llama-cpp-python==0.3.36.
The cores, clock and memory stay this machine's: an emulated row shows what the instruction set
costs, not what an older machine adds (the one AVX2-only machine seen made 12-35 vLLM tokens/s in
bf16 at ~30 requests and 79 llama.cpp tokens/s batch-1: compare with the emulated rows).

Rows: vLLM (the generator, embedded model; cpu_threads adaptive) per dtype, generated tokens/s for
`--requests` requests x `--tokens` tokens at once and for one alone; llama.cpp (embedded Q4_1 GGUF)
batch-1 greedy decode with 1 thread (tim's setting on 2 cores: every core but one) and 2. Each also
beside one busy `python -c` loop (started before the engine, as bench_neighbour.py's "there at
start" case) where `--neighbour` is given.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_neighbour import PROMPT, neighbours, stop, vllm_burst  # noqa: E402
from perf_record import report, shown_cpu_flags  # noqa: E402

AVX2_ENV = {"TIM_EMULATE_AVX2": "1", "PYTHONPATH": str(ROOT / "scripts" / "emulate_avx2"),
            "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}  # fmt: skip

# Runs in the venv of the llama.cpp build under test; prints tokens/s of a batch-1 greedy decode.
LLAMA_DECODE = """
import sys, time
from llama_cpp import Llama
path, threads, tokens, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
llm = Llama(model_path=path, n_ctx=1024, n_threads=threads, verbose=False)
ids = llm.tokenize(prompt.encode())
def decode():
    llm.reset(); t0, n = None, 0
    for _ in llm.generate(ids, temp=0.0):
        t0 = t0 or time.perf_counter(); n += 1
        if n > tokens: break
    return tokens / (time.perf_counter() - t0)
decode()
print(max(decode(), decode()))
"""


def vllm_rows(kind: str, dtype: str, args, env: dict[str, str]) -> list[tuple]:
    from load_test import free_port

    from tutorkit.backends import vllm_server

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the vLLM it starts inherits them; nothing in this process uses torch
    busy_procs = neighbours(1, 900) if args.neighbour else []
    try:
        cfg = vllm_server.VllmServerConfig(port=free_port(), extra_args=["--dtype", dtype],
                                           run_dir=tempfile.mkdtemp(prefix="tim-bench-kinds-"))  # fmt: skip
        print(f"bench_cpu_kinds: vLLM {kind} {dtype} ...", file=sys.stderr, flush=True)
        try:
            url = vllm_server.start(cfg, owned=True)
        except Exception as e:  # noqa: BLE001 - a crash is a result here
            return [(f"vLLM, {kind}", dtype, f"did not start: {str(e).splitlines()[0]}", "")]
        try:
            kernels = _kernels(cfg)
            vllm_burst(url, cfg.served_model_name, 4, 16)  # warm-up
            many = statistics.mean(vllm_burst(url, cfg.served_model_name, args.requests, args.tokens) for _ in range(2))
            one = vllm_burst(url, cfg.served_model_name, 1, args.tokens)
        finally:
            vllm_server.stop(cfg)
    finally:
        stop(busy_procs)
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    where = f"vLLM, {kind} ({' '.join(kernels) or 'kernels not seen'})"
    return [(where, dtype, f"{many:.1f}", f"{one:.1f}")]


def _kernels(cfg) -> list[str]:
    """Which vLLM kernel libraries its processes mapped (vllm/_C = AVX-512 + bf16, _C_AVX512, _C_AVX2)."""
    leader = Path(cfg.run_dir, "server.pid").read_text().split()[0]  # started in its own session: pgid = pid
    found = set()
    for pid in subprocess.run(["pgrep", "-g", leader], capture_output=True, text=True).stdout.split():
        try:
            found |= {line.split("/vllm/")[-1].split(".")[0] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
                      if "/vllm/_C" in line}  # fmt: skip
        except OSError:
            continue
    return sorted(found)


def llama_rows(kind: str, python: str, args) -> list[tuple]:
    from tutorkit.model_files import embedded_gguf_path

    out = []
    for threads in (1, 2):
        busy_procs = neighbours(1, 900) if args.neighbour else []
        try:
            time.sleep(1.0 if busy_procs else 0)
            r = subprocess.run([python, "-c", LLAMA_DECODE, str(embedded_gguf_path()), str(threads), str(args.tokens),
                                PROMPT[0]["content"]], capture_output=True, text=True, timeout=900)  # fmt: skip
        finally:
            stop(busy_procs)
        rate = f"{float(r.stdout.split()[-1]):.1f}" if r.returncode == 0 else f"failed: {r.stderr.strip()[-120:]}"
        out.append((f"llama.cpp batch-1, {kind}", f"n_threads={threads}", "", rate))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llamacpp_avx2_python", default="", help="python of a venv with an AVX2-only llama.cpp build")
    ap.add_argument("--vllm_dtypes", nargs="*", default=["bfloat16", "float32"])
    ap.add_argument("--native_vllm_dtypes", nargs="*", default=["bfloat16"],
                    help="this CPU's own kernels (float32 crashed while warming up with the AVX-512 ones)")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--neighbour", action="store_true", help="run everything beside one busy loop")
    ap.add_argument("--record", action="store_true", help="append the results to docs/performance.md")
    args = ap.parse_args()
    os.chdir(ROOT)
    rows = []
    for dtype in args.native_vllm_dtypes:
        rows += vllm_rows("this CPU", dtype, args, {})
    for dtype in args.vllm_dtypes:
        rows += vllm_rows("AVX2 emulated", dtype, args, AVX2_ENV)
    rows += llama_rows("this CPU's build", sys.executable, args)
    if args.llamacpp_avx2_python:
        rows += llama_rows("AVX2-only build", args.llamacpp_avx2_python, args)

    flags = shown_cpu_flags()
    lines = [
        f"\n### bench_cpu_kinds.py, {datetime.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores",
        "",
        f"Command: `.venv/bin/python scripts/bench_cpu_kinds.py --requests {args.requests} --tokens {args.tokens}"
        f"{' --neighbour' if args.neighbour else ''}{' --llamacpp_avx2_python PY' if args.llamacpp_avx2_python else ''}`"
        f" (CPU flags: {flags}{'; beside one busy loop' if args.neighbour else '; quiet'})",
        "",
        f"| engine | setting | generated tokens/s, {args.requests} at once | tokens/s, one alone |",
        "|---|---|---|---|",
    ]
    lines += [f"| {engine} | {setting} | {many} | {one} |" for engine, setting, many, one in rows]
    report(lines, args.record)


if __name__ == "__main__":
    main()
