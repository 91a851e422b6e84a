"""A real LoRA run on the embedded model: adapter weights change, base weights do not; outputs
are what serving needs; bad data fails before the model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tutorkit import TimError
from train import sft

ROOT = Path(__file__).resolve().parent.parent


def _args(dataset_dir, output_dir, *extra):
    return ["--config", str(ROOT / "configs/sft.yaml"), "--dataset_dir", str(dataset_dir), "--output_dir",
            str(output_dir), "--report_to", "none", "--disable_tqdm", "true", *extra]  # fmt: skip


def test_lora_changes_adapter_and_not_base(tiny_dataset, tmp_path, embedded_model_dir):
    data_args, training_args, model_args = sft.parse_args(
        _args(tiny_dataset, tmp_path, "--max_steps", "3", "--learning_rate", "1e-3",
                                 "--eval_strategy", "no", "--save_strategy", "no")  # fmt: skip
    )
    trainer, _ = sft.build_trainer(data_args, training_args, model_args)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert any("lora_" in n for n in before)
    trainer.train()
    changed_lora = [n for n, p in trainer.model.named_parameters() if "lora_B" in n and not torch.equal(p, before[n])]
    changed_base = [n for n, p in trainer.model.named_parameters() if "lora_" not in n and not torch.equal(p, before[n])]
    assert changed_lora, "no LoRA weight changed"
    assert not changed_base, f"base weights changed: {changed_base[:3]}"


def test_outputs_serving_needs(trained_adapter):
    config = json.loads((trained_adapter / "adapter_config.json").read_text())
    assert config["r"] == 16 and not config.get("modules_to_save")
    assert (trained_adapter / "adapter_model.safetensors").is_file()
    # The exact training template travels with the adapter's tokenizer.
    saved = (trained_adapter / "chat_template.jinja").read_text()
    assert saved == (ROOT / "configs/chat_templates/chatml.jinja").read_text()
    metrics = json.loads((trained_adapter / "metrics.json").read_text())
    assert metrics["train"]["train_loss"] > 0 and metrics["lora_r"] == 16


@pytest.mark.parametrize(
    "row, error",
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
        ({"messages": [{"role": "bot", "content": "hi"}]}, "role 'bot'"),
        ({"messages": [{"role": "user", "content": ["hi"]}]}, "content must be a string"),
    ],
)
def test_bad_rows_fail_before_the_model_loads(tmp_path, row, error):
    (tmp_path / "train.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(TimError, match=rf"train.jsonl:1: .*{error}"):
        sft.main(_args(tmp_path, tmp_path / "out", "--model_name_or_path", "/nonexistent"))


def test_qlora_without_cuda_is_refused(tiny_dataset, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TimError, match="QLoRA .* needs a CUDA GPU"):
        sft.main(_args(tiny_dataset, tmp_path, "--load_in_4bit", "true"))
