"""The steps of scripts/gpu_check.sh (run that): the CUDA path end to end, each step under its own
time limit, results appended to docs/performance.md.

  env        CUDA torch, and which of trl / peft / liger_kernel / bitsandbytes / vllm / gradio import
  build      a random-init model of the embedded model's shape (data/model_shapes/smollm2-135m: its
             config and real tokenizer, no weights) and a dataset of the gold exemplars with the
             persona's prompt (the rows every demo trains on)
  sft        train/sft.py with configs/gpu/sft.yaml (bf16, packing, flex_attention, Liger) for a fixed number of
             steps; tokens/s and an approximate MFU (6 x parameters x tokens/s over the GPU's peak)
  qlora      one QLoRA step (load_in_4bit), where bitsandbytes imports
  shapes     scripts/bench_train_shapes.py, TRL defaults vs the project's variant, 135M shape (the 1B
             and 8B shapes: run it by hand when the loan is longer)
  serve      the trained adapter answering one chat on CUDA through the transformers backend
  vllm       CUDA vLLM with --enable-lora and bench_serve at 1/32/128 chats, only where vllm imports

    python scripts/gpu_check.py [--dry-run] [--steps 20] [--only sft ...]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPE = ROOT / "data/model_shapes/smollm2-135m"
RUN = Path(os.environ.get("TIM_GPU_CHECK_DIR", ROOT / "runs/gpu_check"))  # where models, data and adapters go
PERFORMANCE_MD = ROOT / "docs/performance.md"
PY = sys.executable
# Seconds per step; together under the 9 minutes a short GPU loan leaves after start-up.
# The SFT step includes flex_attention's first compilation (~200 s on the H200).
LIMITS = {"env": 30, "build": 45, "sft": 270, "qlora": 60, "shapes": 120, "serve": 45, "vllm": 150}
NEEDED_FILES = ["configs/gpu/sft.yaml", "configs/chat_templates/chatml.jinja", "data/exemplars.yaml",
                "configs/persona.yaml", "train/sft.py", "scripts/bench_train_shapes.py", "scripts/bench_serve.py",
                *(f"data/model_shapes/smollm2-135m/{f}" for f in ("config.json", "tokenizer.json", "tokenizer_config.json"))]  # fmt: skip

ENV = """
import importlib.util, json, torch
mods = {m: importlib.util.find_spec(m) is not None for m in ("trl", "peft", "datasets", "liger_kernel", "bitsandbytes", "vllm", "gradio")}
info = {"cuda": torch.cuda.is_available(), "torch": torch.__version__, "modules": mods}
if info["cuda"]:
    info["gpu"] = torch.cuda.get_device_name(0)
print(json.dumps(info))
assert info["cuda"], "no CUDA device"
"""

BUILD = """
import json, sys, torch
from pathlib import Path
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from tutorkit.conversation import write_jsonl
from tutorkit.exemplars import load_exemplars
from tutorkit.persona import load_persona
shape, run = Path(sys.argv[1]), Path(sys.argv[2])
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shape), dtype=torch.bfloat16)
model.save_pretrained(run / "model")
AutoTokenizer.from_pretrained(shape).save_pretrained(run / "model")
prompt = load_persona("configs/persona.yaml").render_system_prompt()
rows = [{"messages": e.messages(prompt), "meta": {"source": f"exemplar:{e.id}", "mode": "exemplar"}}
        for e in load_exemplars("data/exemplars.yaml")]
write_jsonl(run / "data/train.jsonl", rows * 4)
write_jsonl(run / "data/validation.jsonl", rows[:4])
print(json.dumps({"parameters": sum(p.numel() for p in model.parameters()), "rows": len(rows) * 4}))
"""

SERVE = """
import asyncio, json, sys, time
from tutorkit.backends import BackendSpec, Sampling, open_backend
model, adapter = sys.argv[1], sys.argv[2]
messages = [{"role": "user", "content": "can you help me with fractions"}]
with open_backend(BackendSpec("transformers", model=model, adapter=adapter)) as backend:
    started = time.perf_counter()
    reply = asyncio.run(backend.complete(messages, Sampling(temperature=0.0, max_tokens=32)))
    print(json.dumps({"device": str(getattr(backend, "device", "?")), "seconds": round(time.perf_counter() - started, 2), "tokens": backend.completion_tokens,
                      "reply_chars": len(reply)}))
"""


def steps(args) -> list[tuple[str, list[str]]]:
    model, data, adapter = RUN / "model", RUN / "data", RUN / "sft"
    train = [PY, "train/sft.py", "--config", "configs/gpu/sft.yaml", "--model_name_or_path", str(model),
             "--dataset_dir", str(data), "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none"]  # fmt: skip
    return [
        ("env", [PY, "-c", ENV]),
        ("build", [PY, "-c", BUILD, str(SHAPE), str(RUN)]),
        ("sft", [*train, "--output_dir", str(adapter), "--max_steps", str(args.steps), "--logging_steps", "5",
                 "--include_num_input_tokens_seen", "non_padding"]),
        ("qlora", [*train, "--output_dir", str(RUN / "qlora"), "--max_steps", "1", "--load_in_4bit", "true"]),
        ("shapes", [PY, "scripts/bench_train_shapes.py", "--shape", "smollm2-135m", "--steps", "12", "--warmup", "4"]),
        ("serve", [PY, "-c", SERVE, str(model), str(adapter)]),
        ("vllm", [PY, "scripts/bench_serve.py", "--backends", "vllm", "--model", str(model), "--adapter", str(adapter),
                  "--concurrency", "1", "32", "128"]),
    ]  # fmt: skip


def sft_figures(parameters: int, peak_tflops: float) -> dict:
    """tokens/s and approximate MFU from the SFT step's metrics.json."""
    metrics = json.loads((RUN / "sft" / "metrics.json").read_text())
    tokens = max((h.get("num_input_tokens_seen", 0) for h in metrics["log_history"]), default=0)
    seconds = metrics["train"]["train_runtime"]
    tokens_per_s = tokens / seconds if seconds else 0.0
    return {"tokens": tokens, "seconds": round(seconds, 1), "tokens_per_s": round(tokens_per_s),
            "mfu_approx": round(6 * parameters * tokens_per_s / (peak_tflops * 1e12), 4)}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="print each step's command; check files and configs")
    ap.add_argument("--steps", type=int, default=20, help="SFT steps")
    ap.add_argument("--only", nargs="*", default=[], help="run only these steps")
    ap.add_argument("--peak_tflops", type=float, default=790.0, help="the GPU's dense bf16 peak (H200: 790)")
    ap.add_argument("--results", default=str(PERFORMANCE_MD), help="the file the results section is appended to")
    args = ap.parse_args()
    missing = [f for f in NEEDED_FILES if not (ROOT / f).is_file()]
    if missing:
        print(f"gpu_check: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    results, env, parameters = [], {}, 0
    for name, cmd in steps(args):
        if args.only and name not in args.only:
            continue
        print(f"== {name} (limit {LIMITS[name]} s): {' '.join(c if len(c) < 80 else c[:60] + '...' for c in cmd)}", flush=True)
        if args.dry_run:
            results.append((name, "dry run", ""))
            continue
        if name == "qlora" and not env.get("modules", {}).get("bitsandbytes"):
            results.append((name, "skipped", "bitsandbytes not installed (fetch_wheels.sh bitsandbytes==0.50.2)"))
            continue
        if name == "vllm" and not env.get("modules", {}).get("vllm"):
            results.append((name, "skipped", "vllm does not import on this machine"))
            continue
        started = time.monotonic()
        try:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=LIMITS[name],
                                  env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})  # fmt: skip
            ok, out, stdout = done.returncode == 0, done.stdout + done.stderr, done.stdout
        except subprocess.TimeoutExpired as e:
            ok, out, stdout = False, f"timed out after {LIMITS[name]} s\n{(e.stdout or b'')[-2000:]!r}", ""
        seconds = round(time.monotonic() - started, 1)
        # The steps print their figures as the last line of stdout; a failure's reason ends stderr.
        tail = (stdout if ok else out).strip().splitlines()[-1] if (stdout if ok else out).strip() else ""
        print(out[-3000:], flush=True)
        detail = tail[:300]
        if ok and name == "env":
            env = json.loads(tail)
        if ok and name == "build":
            parameters = json.loads(tail)["parameters"]
        if ok and name == "sft":
            detail = json.dumps(sft_figures(parameters, args.peak_tflops))
        results.append((name, f"{'ok' if ok else 'FAILED'} in {seconds} s", detail))
        if not ok and name in ("env", "build"):
            break  # nothing after these can run
    write_results(results, env, args)
    return 0 if all(not r[1].startswith("FAILED") for r in results) else 1


def write_results(results: list[tuple[str, str, str]], env: dict, args) -> None:
    lines = ["", f"### GPU check {datetime.date.today()} ({env.get('gpu', 'no GPU')}, torch {env.get('torch', '?')})", "",
             "Command: `scripts/gpu_check.sh` (random-init 135M-shape model with the real tokenizer; gold-exemplar rows).",
             "", "| step | result | figures |", "|---|---|---|",
             *(f"| {name} | {status} | {detail.replace('|', '/')} |" for name, status, detail in results), ""]  # fmt: skip
    print("\n".join(lines))
    if not args.dry_run:
        with open(args.results, "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
