"""LoRA fine-tune a chat model on Tim's conversations with TRL's SFTTrainer and PEFT.

    accelerate launch train/sft.py --config configs/sft.yaml [--key value ...]
    tim train --config configs/sft.yaml [--key value ...]          # same, one process

Reads dataset_dir/train.jsonl (and validation.jsonl when present): `messages` rows as written by
`tim synth` (schema: tutorkit/conversation.py). Loss is on Tim's turns only, each including its
end-of-turn token, through the chat template in `chat_template_path` (it has `{% generation %}`
markers; the model's own template may not). Writes to output_dir:
  adapter_model.safetensors, adapter_config.json   the PEFT LoRA adapter
  tokenizer files + chat_template.jinja            the exact template used in training
  metrics.json, loss.png                           train/eval loss, speed, log history
  runs/ (TensorBoard event files), checkpoint-*/   with report_to: tensorboard; for resuming
A rerun continues from the last checkpoint in output_dir.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tutorkit import TimError, run_main
from tutorkit.config import parse_trl_config
from tutorkit.conversation import read_conversations, read_splits, trained
from tutorkit.hardware import has_bf16
from train.data import row_sources
from train.plots import plot_loss


@dataclass
class DataArguments:
    dataset_dir: str = field(default="runs/synth", metadata={"help": "Holds train.jsonl and validation.jsonl."})
    max_train_conversations: int = field(default=0, metadata={"help": "Use only the first N (0 = all)."})
    shared_prompt_once: bool = field(default=True, metadata={
        "help": "Run the prompt every row of a padded batch opens with (the persona's) once per batch, not once "
                "per row; same loss and gradients (train/shared_prefix.py)."})  # fmt: skip


def device_defaults(args: list[str]) -> list[str]:
    """Without CUDA, train on the CPU (use_cpu) with bf16 autocast where the CPU has bf16
    instructions, fp32 where it has not (these override the config file). Prepended, so flags
    the user types still win. Measured on this 2-core EPYC: LoRA forward+backward ran 462
    tokens/s with bf16 autocast against 182 in fp32."""
    import torch

    if torch.cuda.is_available():
        return args
    return ["--use_cpu", "true", *([] if has_bf16() else ["--bf16", "false"]), *args]


def make_parser():
    """TRL's own parser over its dataclasses, as TRL's scripts build it, plus --config."""
    import argparse

    from trl import ModelConfig, SFTConfig, TrlParser

    parser = TrlParser((DataArguments, SFTConfig, ModelConfig), prog="train/sft.py", description=__doc__.strip(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--config", metavar="FILE", help="YAML config; command-line --key value overrides it")
    return parser


def load_rows(data_args: DataArguments) -> tuple[list[dict], list[dict]]:
    """Both splits, validated, before any model loads: bad rows fail fast with file:line."""
    dataset_dir = Path(data_args.dataset_dir)
    return read_splits(dataset_dir / "train.jsonl", dataset_dir / "validation.jsonl", read_conversations, ("messages",),
                       data_args.max_train_conversations)  # fmt: skip


def check_hardware(model_args) -> None:
    import torch

    if (model_args.load_in_4bit or model_args.load_in_8bit) and not torch.cuda.is_available():
        raise TimError("QLoRA (load_in_4bit/load_in_8bit) needs a CUDA GPU; this machine has none")


def last_checkpoint(output_dir: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None


def build_trainer(data_args: DataArguments, training_args, model_args):
    """Validated data, the model, and an SFTTrainer with a LoRA adapter, in that order."""
    # 1. Data and hardware checks, before the model loads.
    train_rows, validation_rows = load_rows(data_args)
    check_hardware(model_args)
    if training_args.chat_template_path and not Path(training_args.chat_template_path).is_file():
        raise TimError(f"chat_template_path not found: {training_args.chat_template_path}")
    if not validation_rows and training_args.eval_strategy != "no":
        print(f"tim train: no {data_args.dataset_dir}/validation.jsonl rows; validation loss is off", file=sys.stderr)
        training_args.eval_strategy = "no"
    if not model_args.use_peft:
        raise TimError("use_peft must be true: Tim trains LoRA adapters")

    # 2. Model and tokenizer (offline; 'embedded' is converted once and cached).
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from accelerate import PartialState
    from trl import SFTTrainer, get_peft_config, get_quantization_config

    from train.shared_prefix import SharedPrefixSFTTrainer
    from tutorkit.model_files import resolve_model

    model_dir = resolve_model(model_args.model_name_or_path or "embedded")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    print_token_summary(tokenizer, training_args, train_rows)
    dtype = model_args.dtype if model_args.dtype not in (None, "auto") else "float32"
    quantization = get_quantization_config(model_args)  # QLoRA: 4-bit base weights (CUDA only)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir),
        dtype=getattr(torch, dtype),
        attn_implementation=model_args.attn_implementation,
        quantization_config=quantization,
        # k-bit weights are placed at load time, each process on its own GPU.
        device_map={"": PartialState().local_process_index} if quantization is not None else None,
    )

    # 3. Trainer: LoRA adapter, loss on assistant turns only (TRL applies chat_template_path).
    train_rows, validation_rows = weighted_rows(train_rows, validation_rows, tokenizer, training_args)
    trainer_class = SharedPrefixSFTTrainer if data_args.shared_prompt_once else SFTTrainer
    trainer = trainer_class(
        model=model,
        args=training_args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(validation_rows) if validation_rows else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    return trainer, model_dir


def weighted_rows(train: list[dict], validation: list[dict], tokenizer, training_args) -> tuple[list[dict], list[dict]]:
    """Both splits as they are (TRL tokenizes them) or, when some turn has weight 0 (context the
    model reads but is not trained to say; TRL would train it), both tokenized here through the same
    template with those turns left out of the loss (train/data.TrainingView, as `tim data show`
    marks them; the same tokens as TRL's own for every other turn, tests/test_train_scale.py)."""
    from train.data import TrainingView

    turns = [m for row in train + validation for m in row["messages"] if m["role"] == "assistant"]
    if all(trained(m) for m in turns):
        return train, validation
    if not training_args.assistant_only_loss:
        raise TimError("the dataset has weight-0 turns, which only assistant_only_loss: true leaves out of the loss")
    view = TrainingView(tokenizer, training_args.chat_template_path, True, training_args.max_length)
    print(f"tim train: {sum(not trained(m) for m in turns)} of {len(turns)} Tim turns have weight 0: context, "
          "not trained", file=sys.stderr)  # fmt: skip
    # The assistant_masks below are the assistant-only loss; TRL asks for that flag only with `messages` rows.
    training_args.assistant_only_loss = False
    return view.dataset_rows(train), view.dataset_rows(validation)


def print_token_summary(tokenizer, training_args, rows: list[dict]) -> None:
    """What `tim data show` prints at its end: tokens, trained tokens, rows max_length cuts."""
    from train.data import TrainingView, summarize, summary_lines

    try:
        view = TrainingView(tokenizer, training_args.chat_template_path, training_args.assistant_only_loss,
                            training_args.max_length)  # fmt: skip
    except TimError as e:  # a template TRL clones from another model: TRL reports on it itself
        print(f"tim train: no token summary ({e})", file=sys.stderr)
        return
    for line in summary_lines("train.jsonl", summarize(view, rows)):
        print(f"tim train: {line}", file=sys.stderr)


def parse_args(args=None):
    """(DataArguments, SFTConfig, ModelConfig) from --config and flags, with the device defaults."""
    return parse_trl_config(make_parser(), device_defaults(list(sys.argv[1:] if args is None else args)))


def main(args=None) -> dict:
    data_args, training_args, model_args = parse_args(args)
    trainer, model_dir = build_trainer(data_args, training_args, model_args)

    # 4. Train, resuming from the last checkpoint in output_dir when there is one.
    resume = training_args.resume_from_checkpoint or last_checkpoint(training_args.output_dir)
    result = trainer.train(resume_from_checkpoint=resume)

    # 5. Save the adapter, the tokenizer with the training chat template, and metrics.
    trainer.save_model(training_args.output_dir)
    metrics = {
        "train": result.metrics,
        "base_model": str(model_dir),
        "lora_r": model_args.lora_r,
        "world_size": training_args.world_size,
        "resumed_from": resume,
        "global_step": trainer.state.global_step,
        "train_rows": row_sources(data_args.dataset_dir, data_args.max_train_conversations),
    }
    return write_metrics(trainer, metrics, Path(training_args.output_dir), "tim train")


def write_metrics(trainer, metrics: dict, out: Path, command: str, **plot) -> dict:
    """Complete a run's metrics (evaluation on the validation split, the log history); on the main
    process write metrics.json and loss.png (plot_loss's keywords) to `out`, and say so."""
    if trainer.eval_dataset is not None:
        metrics["eval"] = trainer.evaluate()
    metrics["log_history"] = trainer.state.log_history
    if trainer.is_world_process_zero():
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        plot_loss(trainer.state.log_history, out / "loss.png", **plot)
        print(f"{command}: adapter, tokenizer and metrics.json in {out}", file=sys.stderr)
    return metrics


if __name__ == "__main__":
    run_main(main)
