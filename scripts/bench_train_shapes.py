"""Training throughput for random-init models of real shapes (no weights needed): TRL's defaults
vs this project's GPU training configuration, on the same synthetic token data.

    python scripts/bench_train_shapes.py --shape smollm2-135m [--shape llama-1b --shape llama-8b] [--record]
    python scripts/bench_train_shapes.py --shape tiny --steps 4 --warmup 1     # CPU smoke run

For the H200 test machine (no network, no hub): carry trl, datasets and liger-kernel wheels as
../shared/gpu/README.md says. Variants:
  trl_defaults  SFTConfig defaults: padded batches, SDPA, no packing, gradient checkpointing on
  tim           best-fit-decreasing packing (padding-free, per-conversation attention through
                flex_attention), Liger kernels, bf16; gradient checkpointing only on the 8B shape
On a machine without CUDA the `tim` variant keeps packing but uses SDPA and no Liger (the smoke
run checks the wiring, not the speed). Steps after --warmup are timed, so flex_attention's
compilation (about 200 s on first use) is not counted. MFU = 6 x parameters x tokens/s over the
GPU's peak bf16 FLOP/s (--peak_tflops, 790 for the H200's dense bf16 as the issue states).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

from perf_record import report


SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1024),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256),
}  # fmt: skip


def tiny_tokenizer():
    """A three-token tokenizer: the data is already token ids, TRL only needs pad and eos."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
        pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
    )  # fmt: skip


def synthetic_data(vocab_size: int, n: int, seed: int = 0) -> list[dict]:
    """Conversation-like lengths (100-2000 tokens, most short), random ids above the specials."""
    import random

    rng = random.Random(seed)
    lengths = [min(2000, max(100, int(rng.lognormvariate(6.0, 0.6)))) for _ in range(n)]
    return [{"input_ids": [rng.randrange(3, vocab_size) for _ in range(length)]} for length in lengths]


class StepTimer:
    """Times the steps after `warmup`, and counts the real (non-padding) tokens they trained."""

    def __init__(self, warmup: int):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                if state.global_step == warmup:
                    timer.start, timer.tokens_at_start = time.perf_counter(), state.num_input_tokens_seen

            def on_train_end(self, args, state, control, **kw):
                timer.seconds = time.perf_counter() - timer.start
                timer.tokens = state.num_input_tokens_seen - timer.tokens_at_start

        self.callback = Callback()
        self.start = self.seconds = None
        self.tokens_at_start = self.tokens = 0


def run(shape: str, variant: str, steps: int, warmup: int, batch: int, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, LlamaConfig
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    dims = SHAPES[shape]
    big = shape == "llama-8b"
    attn = "flex_attention" if (variant == "tim" and cuda) else "sdpa"
    config = LlamaConfig(**dims, max_position_embeddings=4096, attn_implementation=attn)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if cuda else torch.float32)
    params = sum(p.numel() for p in model.parameters())
    common = dict(
        output_dir=str(out / f"{shape}-{variant}"), max_steps=steps, report_to="none", save_strategy="no",
        logging_steps=max(1, steps // 4), per_device_train_batch_size=batch, max_length=2048,
        include_num_input_tokens_seen="non_padding", bf16=cuda, use_cpu=not cuda, dataloader_num_workers=0,
    )  # fmt: skip
    if variant == "trl_defaults":
        args = SFTConfig(**common)  # TRL's own defaults otherwise: padding, no packing, checkpointing on
    else:
        args = SFTConfig(
            **common, packing=True, packing_strategy="bfd", use_liger_kernel=cuda, activation_checkpointing=big
        )
    trainer = SFTTrainer(
        model=model, args=args, processing_class=tiny_tokenizer(),
        train_dataset=Dataset.from_list(synthetic_data(dims["vocab_size"], n=batch * steps * 4)),
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )  # fmt: skip
    timer = StepTimer(warmup)
    trainer.add_callback(timer.callback)
    trainer.train()
    tokens_per_s = timer.tokens / timer.seconds
    return {"params": params, "timed_steps": steps - warmup, "tokens": int(timer.tokens),
            "seconds": round(timer.seconds, 2), "tokens_per_s": round(tokens_per_s, 1), "attn": attn,
            "mfu": None}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", action="append", choices=list(SHAPES), help="repeatable")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8, help="per-device batch (conversations) for both variants")
    ap.add_argument("--peak_tflops", type=float, default=790.0)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    shapes = args.shape or ["smollm2-135m"]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_shapes_") as tmp:
        for shape in shapes:
            for variant in ("trl_defaults", "tim"):
                r = run(shape, variant, args.steps, args.warmup, args.batch, Path(tmp))
                r["mfu"] = round(6 * r["params"] * r["tokens_per_s"] / (args.peak_tflops * 1e12), 4)
                results[f"{shape}/{variant}"] = r
                print(json.dumps({f"{shape}/{variant}": r}), flush=True)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    lines = [
        f"### bench_train_shapes.py, {datetime.date.today()}, {device}",
        "",
        f"Command: `python scripts/bench_train_shapes.py {' '.join('--shape ' + s for s in shapes)} "
        f"--steps {args.steps} --warmup {args.warmup} --batch {args.batch}` (random-init, LoRA r=16 all-linear)",
        "",
        "| shape / variant | parameters | attention | tokens/s | MFU |",
        "|---|---|---|---|---|",
        *(f"| {k} | {r['params'] / 1e6:.0f}M | {r['attn']} | {r['tokens_per_s']} | {r['mfu']:.1%} |" for k, r in results.items()),
        "",
        *(
            f"{s}: tim / trl_defaults = {results[f'{s}/tim']['tokens_per_s'] / results[f'{s}/trl_defaults']['tokens_per_s']:.2f}x"
            for s in shapes
        ),
        "",
    ]
    report(lines, args.record)


if __name__ == "__main__":
    main()
