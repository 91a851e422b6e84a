"""scripts/load_test.py end to end at a tiny size: it starts `tim serve` as its own process,
simulated students chat through the API, and every turn is found in the transcripts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_load_test_script(trained_adapter):
    r = subprocess.run(
        [sys.executable, "scripts/load_test.py", "--students", "3", "--turns", "2", "--max_tokens", "8",
         "--", "--adapter", str(trained_adapter), "--backend", "transformers"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "| 3 | 2 | 6 | 0 | 12/12 (100%) |" in r.stdout
