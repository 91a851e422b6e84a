"""What this machine's CPU can do, read once from /proc/cpuinfo, and the choices that follow
from it: bf16 autocast for CPU training, and which engine generates on a machine without a GPU.

Machines of the same 2-core kind differ: some have AVX-512 with bf16, some AVX2 only (as many
school servers and laptops). Measured (docs/performance.md): vLLM's CPU build generated 284
tokens/s with about 30 requests in flight on the AVX-512 machine, 12-35 on an AVX2-only one,
where llama.cpp decoded the same model at 79 tokens/s for one request alone.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The flags of the first CPU in /proc/cpuinfo (empty where there is none: not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return parse_flags(text)


def parse_flags(cpuinfo: str) -> frozenset[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_bf16(flags: frozenset[str] | None = None) -> bool:
    """bf16 instructions (AVX512-BF16 or AMX): bf16 autocast is then ~2.5x fp32 for training."""
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def has_avx512(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return "avx512f" in flags


def local_engine(cuda: bool, flags: frozenset[str] | None = None) -> tuple[str, str]:
    """(engine, why) for a model run on this machine (synthesis's generator, `tim serve`): vLLM
    with a GPU or AVX-512, llama.cpp otherwise. `backend: auto` in the configs asks for this."""
    if cuda:
        return "vllm", "a CUDA GPU is present"
    if has_avx512(flags):
        return "vllm", "the CPU has AVX-512 (vLLM's CPU build batches many requests fast here)"
    return "llamacpp", ("the CPU has no AVX-512: vLLM's CPU build made 12-35 tokens/s on such a machine, "
                        "llama.cpp 79 for one request (name a backend in the config to override)")  # fmt: skip


def busy_cores(seconds: float = 1.0, stat: Path = Path("/proc/stat")) -> float:
    """Cores' worth of CPU time spent by anything (not idle, not waiting on I/O) over the next
    `seconds`, from /proc/stat; 0.0 where there is none (not Linux)."""

    def ticks() -> tuple[int, int]:
        fields = [int(x) for x in stat.read_text().splitlines()[0].split()[1:]]
        return sum(fields[:8]), fields[3] + fields[4]  # user..steal; idle + iowait

    try:
        total0, idle0 = ticks()
        time.sleep(seconds)
        total1, idle1 = ticks()
    except (OSError, ValueError, IndexError):
        return 0.0
    elapsed = total1 - total0
    return (elapsed - (idle1 - idle0)) / elapsed * (os.cpu_count() or 1) if elapsed > 0 else 0.0


# Measured (docs/performance.md, bench_neighbour.py): vLLM-CPU computing on both cores of this
# 2-core machine made 442 generated tokens/s quiet and 148 beside one busy process (0.33x);
# with one core left free (vLLM's default) 318 quiet and 308 beside it (0.97x).
NEIGHBOUR_CORES = 0.5  # another process using this much CPU at start counts as a neighbour


def vllm_cpu_threads(setting: str, busy: float | None = None) -> tuple[str, str]:
    """("all" or "auto", why) for vLLM's CPU build. "adaptive": every core when the CPU is idle
    at start (`busy`: cores busy then, measured if None), else vLLM's default, one core left."""
    if setting != "adaptive":
        return setting, "as configured (cpu_threads)"
    busy = busy_cores() if busy is None else busy
    if busy < NEIGHBOUR_CORES:
        return "all", f"the CPU was idle at start ({busy:.1f} cores busy): computing on every core"
    return "auto", (f"{busy:.1f} cores were busy at start: one core left to that work (beside a busy "
                    "neighbour, computing on every core ran at a third of its speed here); cpu_threads: all overrides")  # fmt: skip


def llamacpp_threads(setting: int, busy: float | None = None) -> tuple[int, int, str]:
    """(threads decoding, threads reading a prompt, why) for llama.cpp. `setting` > 0: both that.
    0 (default): decoding on every core but one (the last runs Python: the event loop handing out
    tokens; on 2 cores 2 decoding threads fell from 151 to 71-79 tokens/s through the backend);
    prompts on every core when the CPU is idle at start, as vLLM's `adaptive` (a prompt is one long
    C call with Python waiting: 1200 tokens took 8.2 s on one thread, 4.2 on two here; beside a busy
    neighbour two threads ran at a third of their speed), else every core but one."""
    cores = os.cpu_count() or 2
    if setting > 0:
        return setting, setting, "as configured"
    decode = max(1, cores - 1)
    busy = busy_cores() if busy is None else busy
    if busy < NEIGHBOUR_CORES:
        return decode, cores, f"the CPU was idle at start ({busy:.1f} cores busy): prompts on every core"
    return decode, decode, f"{busy:.1f} cores were busy at start: prompts on every core but one too"


def vllm_cpu_dtype(extra_args: list[str], flags: frozenset[str] | None = None) -> tuple[str | None, str]:
    """(dtype to add to vLLM's CPU command or None, why). Without bf16 instructions vLLM-CPU still
    runs a bf16 model in bf16, emulated. With its AVX2 kernels (an AVX2-only CPU, emulated on the
    AVX-512 machine: docs/performance.md, bench_cpu_kinds.py) that made 89.8 generated tokens/s at
    32 requests against 273.0 in float32; float32 reads twice the bytes per token, so one request
    alone decodes slower (36.8 -> 25.2 tokens/s there). With the AVX-512 kernels vLLM 0.32
    crashed in float32 while warming up, so machines with AVX-512 keep the model's dtype."""
    if any(a == "--dtype" or a.startswith("--dtype=") for a in extra_args):
        return None, "as configured (--dtype in extra_args)"
    if has_bf16(flags) or has_avx512(flags):
        return None, "the model's own dtype"
    return "float32", ("the CPU has neither AVX-512 nor bf16 instructions: bf16 is emulated there, 3x slower "
                       "at 32 requests (--dtype in extra_args overrides)")  # fmt: skip
