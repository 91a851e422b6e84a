"""Does the fine-tune behave like Tim? `tim eval --config configs/eval.yaml --adapter runs/sft`.

Holds: the probe suite (probes.py, data/probes.yaml), rule checks (checks.py), the run with
its report, held-out loss, rubric judge and the safeguarding check (evaluate.py).

May import: `tutorkit` (the ground) only: the same backends, safeguarding rules and turn
events serving uses, never `serve` itself; never another stage, never the CLI.
"""
