"""Preference tuning of Tim (DPO, TRL's DPOTrainer) on the pairs synthesis wrote, after SFT.

    accelerate launch train/dpo.py --config configs/dpo.yaml [--key value ...]
    tim dpo --config configs/dpo.yaml [--key value ...]           # same, one process

Reads preference_dir/preferences.jsonl (and preferences_validation.jsonl when it has rows):
TRL's conversational preference rows {"prompt": [...], "chosen": [...], "rejected": [...]}, as
`tim synth` writes them when it keeps the best of several Tim turns (schema:
tutorkit/conversation.py, read_preferences). Starts from `sft_adapter` (a `tim train` output):
that adapter trains further, and TRL keeps a frozen copy of it as the reference, so the policy
moves away from the SFT model only as far as `beta` lets it. The prompt is rendered with the
chat template saved with the SFT adapter. Writes to output_dir, like train/sft.py:
  adapter_model.safetensors, adapter_config.json   the LoRA adapter, over the same base model
  tokenizer files + chat_template.jinja            the template used in training
  metrics.json, loss.png                           loss, reward margin and accuracy, log history
A rerun continues from the last checkpoint in output_dir. The adapter goes to `tim eval`,
`tim serve` and `tim export` as an SFT one does.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from train.sft import device_defaults, last_checkpoint, write_metrics
from tutorkit import TimError, run_main
from tutorkit.config import parse_trl_config
from tutorkit.conversation import read_preferences, read_splits


@dataclass
class PreferenceArguments:
    preference_dir: str = field(default="runs/synth", metadata={"help": "Holds preferences.jsonl (tim synth)."})
    sft_adapter: str = field(default="runs/sft", metadata={"help": "The SFT adapter to start from (tim train)."})
    max_train_pairs: int = field(default=0, metadata={"help": "Use only the first N pairs (0 = all)."})


def make_parser():
    """TRL's own parser over its DPOConfig, as TRL's scripts build it, plus --config."""
    import argparse

    from trl import DPOConfig, TrlParser

    parser = TrlParser((PreferenceArguments, DPOConfig), prog="train/dpo.py", description=__doc__.strip(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--config", metavar="FILE", help="YAML config; command-line --key value overrides it")
    return parser


def parse_args(args=None):
    """(PreferenceArguments, DPOConfig) from --config and flags, with train/sft.py's device defaults."""
    return parse_trl_config(make_parser(), device_defaults(list(sys.argv[1:] if args is None else args)))


def load_pairs(data_args: PreferenceArguments) -> tuple[list[dict], list[dict]]:
    """Both splits, validated before any model loads; `meta` stays in the files."""
    folder = Path(data_args.preference_dir)
    return read_splits(folder / "preferences.jsonl", folder / "preferences_validation.jsonl", read_preferences,
                       ("prompt", "chosen", "rejected"), data_args.max_train_pairs)  # fmt: skip


def build_trainer(data_args: PreferenceArguments, training_args):
    """(DPOTrainer, base model directory, pairs left out as longer than max_length): validated
    pairs, and the SFT adapter on its base model, trainable."""
    # 1. Data and the SFT adapter, before the model loads.
    train_rows, validation_rows = load_pairs(data_args)
    adapter = Path(data_args.sft_adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise TimError(f"no SFT adapter in {adapter} (run `tim train` first; sft_adapter names its output_dir)")
    if not validation_rows and training_args.eval_strategy != "no":
        print(f"tim dpo: no {data_args.preference_dir}/preferences_validation.jsonl rows; validation is off", file=sys.stderr)
        training_args.eval_strategy = "no"

    # 2. Base model + the SFT adapter, trainable; the tokenizer (and template) saved with it.
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    from tutorkit.model_files import resolve_model

    base_name = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    model_dir = resolve_model(base_name)
    tokenizer = AutoTokenizer.from_pretrained(str(adapter))
    # A pair longer than max_length would be cut at its end, the reply first: leave it out.
    limit = training_args.max_length or float("inf")
    fits = lambda row: all(len(tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=True, return_dict=True)
                                ["input_ids"]) <= limit for side in ("chosen", "rejected"))
    kept = [row for row in train_rows if fits(row)]
    too_long = len(train_rows) - len(kept)
    if not kept:
        raise TimError(f"every pair is longer than max_length ({training_args.max_length} tokens)")
    train_rows, validation_rows = kept, [row for row in validation_rows if fits(row)]
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)

    # 3. Trainer: with a PEFT model and no ref_model, TRL copies the adapter as a frozen "ref"
    # adapter, so the reference is the SFT policy, not the base model.
    trainer = DPOTrainer(
        model=model,
        args=training_args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(validation_rows) if validation_rows else None,
        processing_class=tokenizer,
    )
    return trainer, model_dir, too_long


def main(args=None) -> dict:
    data_args, training_args = parse_args(args)
    trainer, model_dir, too_long = build_trainer(data_args, training_args)

    # 4. Train, resuming from the last checkpoint in output_dir when there is one.
    resume = training_args.resume_from_checkpoint or last_checkpoint(training_args.output_dir)
    result = trainer.train(resume_from_checkpoint=resume)

    # 5. Save the trained adapter only (not TRL's frozen reference copy), the tokenizer, metrics.
    out = Path(training_args.output_dir)
    if "ref" in trainer.model.peft_config:
        trainer.model.delete_adapter("ref")
    trainer.save_model(training_args.output_dir)
    shutil.rmtree(out / "ref", ignore_errors=True)
    metrics = {
        "train": result.metrics,
        "base_model": str(model_dir),
        "sft_adapter": data_args.sft_adapter,
        "pairs": len(trainer.train_dataset),
        "pairs_longer_than_max_length": too_long,
        "world_size": training_args.world_size,
        "resumed_from": resume,
        "global_step": trainer.state.global_step,
    }
    return write_metrics(trainer, metrics, out, "tim dpo", title="DPO after SFT",
                         extra=("rewards/margins", "reward margin (chosen - rejected)"))  # fmt: skip


if __name__ == "__main__":
    run_main(main)
