"""DPO after SFT (train/dpo.py) on a handful of real pairs with the embedded model: the DPO loss
falls, the SFT adapter's weights move (the frozen reference copy is not saved), the base model's
do not; pairs too long are left out; bad pair files fail with file and line before any model loads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file

from train import dpo
from tutorkit import TimError

SYSTEM = {"role": "system", "content": "You are Tim, a patient tutor."}
PAIRS = [
    ("i'm so hungry i can't think", "I'm sorry you're hungry. Please tell your teacher; the school can help. Have you eaten today?",
     "Let's do maths! Let's do maths! Let's do maths!"),
    ("i dont care about school", "That sounds frustrating. What do you like doing after school?",
     "You don't care about school. You don't care about school."),
    ("who are you", "I'm Tim, your tutor. What would you like to learn today?", "I am SmolLM, a language model."),
    ("just tell me the answer to 12 x 7", "Let's work it out: what is 10 x 7, and what is 2 x 7?", "It's 84."),
]  # fmt: skip


def _write_pairs(folder: Path, validation: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": [SYSTEM, {"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": good}],
             "rejected": [{"role": "assistant", "content": bad}]} for q, good, bad in PAIRS]  # fmt: skip
    (folder / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "preferences_validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:validation]))
    return folder


def test_dpo_lowers_the_loss_and_moves_only_the_adapter(trained_adapter, tmp_path, embedded_model_dir):
    pairs = _write_pairs(tmp_path / "pairs", validation=len(PAIRS))  # validation = the training pairs
    out = tmp_path / "dpo"
    metrics = dpo.main(["--config", str(ROOT / "configs/dpo.yaml"), "--preference_dir", str(pairs),
                        "--sft_adapter", str(trained_adapter), "--output_dir", str(out), "--max_steps", "6",
                        "--learning_rate", "5e-3", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
                        "--eval_strategy", "steps", "--eval_steps", "6", "--eval_on_start", "true", "--save_strategy", "no",
                        "--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "1"])  # fmt: skip
    evals = [h["eval_loss"] for h in metrics["log_history"] if "eval_loss" in h]
    assert len(evals) >= 2 and evals[-1] < evals[0] - 0.01, evals  # starts near log 2 = 0.693 and falls
    assert metrics["eval"]["eval_rewards/margins"] > 0
    assert metrics["pairs"] == len(PAIRS) and metrics["pairs_longer_than_max_length"] == 0
    # The adapter moved from the SFT one; TRL's frozen reference copy was not saved.
    assert not (out / "ref").exists() and (out / "chat_template.jinja").is_file() and (out / "loss.png").is_file()
    before, after = load_file(trained_adapter / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    base_of = lambda d: json.loads((d / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base_of(out) == base_of(trained_adapter)
    # The base model's weights are untouched: base + DPO adapter holds the same base tensors.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    fresh = AutoModelForCausalLM.from_pretrained(str(embedded_model_dir), dtype=torch.float32).state_dict()
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(embedded_model_dir), dtype=torch.float32), str(out))
    base_weights = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                    for k, v in tuned.state_dict().items() if "lora_" not in k}  # fmt: skip
    compared = [k for k in fresh if k in base_weights]
    assert len(compared) > 100 and all(torch.equal(base_weights[k], fresh[k]) for k in compared)


def test_pairs_longer_than_max_length_are_left_out(trained_adapter, tmp_path):
    pairs = _write_pairs(tmp_path / "pairs", validation=0)
    long = {"prompt": [SYSTEM, {"role": "user", "content": "tell me everything"}],
            "chosen": [{"role": "assistant", "content": "Let's go step by step. " * 60}],
            "rejected": [{"role": "assistant", "content": "No."}]}  # fmt: skip
    with open(pairs / "preferences.jsonl", "a") as f:
        f.write(json.dumps(long) + "\n")
    args = ["--config", str(ROOT / "configs/dpo.yaml"), "--preference_dir", str(pairs), "--sft_adapter",
            str(trained_adapter), "--max_length", "200", "--output_dir", str(tmp_path / "out")]  # fmt: skip
    trainer, _, too_long = dpo.build_trainer(*dpo.parse_args(args))
    assert too_long == 1 and len(trainer.train_dataset) == len(PAIRS)
    with pytest.raises(TimError, match="every pair is longer than max_length"):
        dpo.build_trainer(*dpo.parse_args([*args, "--max_length", "12"]))


@pytest.mark.parametrize(
    "row, error",
    [
        ({"prompt": [SYSTEM, {"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}]},
         "a pair has 'prompt', 'chosen' and 'rejected'"),
        ({"prompt": [SYSTEM], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]},
         "ending with the student's"),
        ({"prompt": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]},
         "'chosen' must be one assistant message"),
        ({"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}],
          "rejected": [{"role": "assistant", "content": "a"}]}, "are the same reply"),
    ],
)  # fmt: skip
def test_bad_pairs_fail_before_the_model_loads(tmp_path, row, error):
    (tmp_path / "preferences.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(TimError, match=rf"preferences.jsonl:1: .*{re.escape(error)}"):
        dpo.main(["--config", str(ROOT / "configs/dpo.yaml"), "--preference_dir", str(tmp_path), "--output_dir",
                  str(tmp_path / "out")])  # fmt: skip
