"""Does the fine-tune behave like Tim? `tim eval --config configs/eval.yaml --adapter runs/sft`.

Holds: the probe suite (probes.py, data/probes.yaml), the rubric judge (judge.py), served mode
(served.py: the probes through a running tim serve's API), the run with its report, held-out
loss and the safeguarding check (evaluate.py). The rule checks live in the
ground (tutorkit/checks.py), because synthesis selects its data by the same rules.

May import: `tutorkit` (the ground) only: the same backends, safeguarding rules and turn
events serving uses, never `serve` itself; never another stage, never the CLI.
"""
