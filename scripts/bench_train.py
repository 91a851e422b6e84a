"""Training throughput on the CPU: TRL's defaults vs this project's training configuration, in one
run, on the same conversations, model (the embedded SmolLM2-135M) and LoRA settings.

    .venv/bin/python scripts/bench_train.py [--dataset_dir runs/demo/data] [--conversations 16] [--repeats 3]
        [--variants trl_defaults_bf16 tim ...] [--record]

Each variant trains one epoch over the same conversations; tokens/s counts the non-padding tokens
of that epoch. Variants:
  trl_defaults_fp32  TRL's defaults for speed (gradient checkpointing on, padded batches in random
                     order, no packing) in fp32, as CPU users run TRL (its bf16=True needs use_cpu)
  trl_defaults_bf16  the same with bf16 autocast on the CPU
  tim_prompt_per_row configs/sft.yaml with shared_prompt_once off (TRL's SFTTrainer runs the
                     persona prompt once per row)
  tim                configs/sft.yaml as shipped (train/sft.py picks bf16 autocast on bf16 CPUs)
--record appends the table to docs/performance.md. Goals on a 2-core CPU: tim >= 2x trl_defaults_fp32
(issue 4), >= 1.3x trl_defaults_bf16 (issue 15).
GPU figures for random-init models of real shapes come from scripts/bench_train_shapes.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from perf_record import report, shown_cpu_flags

ROOT = Path(__file__).resolve().parent.parent

TRL_DEFAULTS = ["--activation_checkpointing", "true", "--packing", "false", "--train_sampling_strategy", "random",
                "--shared_prompt_once", "false"]  # fmt: skip
VARIANTS = {
    # TRL's default bf16=True refuses to start on a CPU without use_cpu; most CPU users set it off.
    "trl_defaults_fp32": [*TRL_DEFAULTS, "--bf16", "false"],
    "trl_defaults_bf16": [*TRL_DEFAULTS, "--bf16", "true"],
    "tim_prompt_per_row": ["--shared_prompt_once", "false"],
    "tim": [],
}


def run(name: str, extra: list[str], dataset_dir: str, conversations: int, out: Path) -> dict:
    from train import sft

    args = ["--config", str(ROOT / "configs/sft.yaml"), "--dataset_dir", dataset_dir, "--output_dir", str(out / name),
            "--max_train_conversations", str(conversations), "--num_train_epochs", "1", "--eval_strategy", "no",
            "--save_strategy", "no", "--report_to", "none", "--logging_steps", "1", *extra]  # fmt: skip
    trainer, _ = sft.build_trainer(*sft.parse_args(args))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    # One epoch sees every (truncated) conversation once: its tokens, without padding.
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    return {"steps": trainer.state.global_step, "tokens": tokens, "seconds": round(seconds, 1),
            "tokens_per_s": round(tokens / seconds, 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset_dir", default="runs/demo/data", help="train.jsonl from `tim synth` (make demo)")
    ap.add_argument("--conversations", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds of all variants, the order rotated each round (one run of 4 steps varies by 20 %% here)")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    if "tim" not in args.variants:
        ap.error("--variants must include tim (the ratios are tim's)")
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    names = args.variants
    runs: dict[str, list[dict]] = {name: [] for name in names}
    try:
        for repeat in range(args.repeats):
            for name in names[repeat % len(names):] + names[: repeat % len(names)]:
                runs[name].append(run(name, VARIANTS[name], args.dataset_dir, args.conversations, tmp / f"{name}-{repeat}"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rate = {name: statistics.median(r["tokens_per_s"] for r in rs) for name, rs in runs.items()}
    ratios = {base: rate["tim"] / rate[base] for base in names if base != "tim"}
    print(json.dumps({**runs, "tim_over": {k: round(v, 2) for k, v in ratios.items()}}, indent=2))
    lines = [
        f"### bench_train.py, {datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores, CPU",
        "",
        f"Command: `.venv/bin/python scripts/bench_train.py --dataset_dir {args.dataset_dir} "
        f"--conversations {args.conversations} --repeats {args.repeats} --variants {' '.join(names)}` (embedded "
        f"model, LoRA r=16 all-linear, CPU flags: {shown_cpu_flags()}; "
        "one epoch per run; the variants' order rotated each round; median of the rounds)",
        "",
        "| variant | steps | non-padding tokens | seconds (each round) | tokens/s (median) |",
        "|---|---|---|---|---|",
        *(f"| {n} | {rs[0]['steps']} | {rs[0]['tokens']} | {', '.join(str(r['seconds']) for r in rs)} | {rate[n]:.1f} |"
          for n, rs in runs.items()),  # fmt: skip
        "",
        *(f"tim / {base}: {ratio:.2f}x" for base, ratio in ratios.items()),
        "",
    ]
    report(lines, args.record)


if __name__ == "__main__":
    main()
