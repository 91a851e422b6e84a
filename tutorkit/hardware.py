"""What this machine's CPU can do, read once from /proc/cpuinfo, and the choices that follow
from it: bf16 autocast for CPU training, and which engine generates on a machine without a GPU.

Machines of the same 2-core kind differ: some have AVX-512 with bf16, some AVX2 only (as many
school servers and laptops). Measured (docs/performance.md): vLLM's CPU build generated 284
tokens/s with about 30 requests in flight on the AVX-512 machine, 12-35 on an AVX2-only one,
where llama.cpp decoded the same model at 79 tokens/s for one request alone.
"""

from __future__ import annotations

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
