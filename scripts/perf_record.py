"""Shared by the benchmark scripts: print a results section, and append it to docs/performance.md."""

from __future__ import annotations

from pathlib import Path

PERFORMANCE_MD = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def report(lines: list[str], record: bool) -> None:
    text = "\n".join(lines)
    print(text)
    if record:
        with open(PERFORMANCE_MD, "a") as f:
            f.write(text + "\n")
