"""Shared by the benchmark scripts: print a results section, and append it to docs/performance.md."""

from __future__ import annotations

from pathlib import Path

PERFORMANCE_MD = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
FLAGS_SHOWN = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")  # what decides speed here


def shown_cpu_flags() -> str:
    """This CPU's flags among FLAGS_SHOWN, for a figure's heading (every figure names them)."""
    from tutorkit.hardware import cpu_flags

    return " ".join(f for f in FLAGS_SHOWN if f in cpu_flags()) or "none of " + " ".join(FLAGS_SHOWN)


def report(lines: list[str], record: bool) -> None:
    text = "\n".join(lines)
    print(text)
    if record:
        with open(PERFORMANCE_MD, "a") as f:
            f.write(text + "\n")
