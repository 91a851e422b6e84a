"""Training beyond one clean run: packing equivalence, the shared persona prompt computed once,
resume after kill -9, DDP over gloo with accelerate, merged export, and the exact labels the
trainer sees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY_CONVERSATIONS, free_port, write_dataset
from train import sft
from train.shared_prefix import SharedPrefixSFTTrainer, shared_prefix_length
from tutorkit.conversation import read_conversations, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _args(dataset_dir, output_dir, *extra):
    return ["--config", str(ROOT / "configs/sft.yaml"), "--dataset_dir", str(dataset_dir), "--output_dir",
            str(output_dir), "--report_to", "none", "--disable_tqdm", "true", *extra]  # fmt: skip


def _trainer(dataset_dir, output_dir, *extra):
    return sft.build_trainer(*sft.parse_args(_args(dataset_dir, output_dir, *extra)))[0]


def _one_batch_loss(trainer, batch=None):
    batch = batch or next(iter(trainer.get_eval_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        return trainer.model(**batch).loss.item(), batch


def test_labels_are_tims_words_and_end_tokens(tiny_dataset, tmp_path, embedded_model_dir):
    trainer = _trainer(tiny_dataset, tmp_path, "--packing", "false", "--eval_strategy", "no")
    tok = trainer.processing_class
    example = trainer.train_dataset[3]  # ends in a silent turn
    labels = [label for label in example["labels"] if label != -100]
    assert all(label == token for label, token in zip(example["labels"], example["input_ids"]) if label != -100)
    # Tim's words and his end-of-turn token; the silent turn is context, not trained (silence is the
    # serving layer's decision: trained, its end token taught the model to answer with nothing).
    assert tok.decode(labels) == "I won't do that. Is something going on with that classmate?<|im_end|>"
    batch = trainer.data_collator([example, trainer.train_dataset[1]])  # padded to the longer one
    trained = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert trained == labels  # padding with pad == eos does not hide or add an end token


def test_weight_0_turns_are_context_not_labels(tiny_dataset, tmp_path, embedded_model_dir):
    """A turn with weight 0 (a kept candidate that failed its checks) is in the input and out of the
    labels; every other token is labelled exactly as TRL's own tokenization labels it unweighted."""
    from transformers import AutoTokenizer

    rows = read_conversations(tiny_dataset / "train.jsonl")
    rows[0]["messages"][2]["weight"] = 0  # "Let's count it together ..." before "Yes, 7."
    write_jsonl(tmp_path / "weighted" / "train.jsonl", rows)
    plain = _trainer(tiny_dataset, tmp_path / "a", "--packing", "false", "--eval_strategy", "no").train_dataset
    masked = _trainer(tmp_path / "weighted", tmp_path / "b", "--packing", "false", "--eval_strategy", "no").train_dataset
    assert masked["input_ids"] == plain["input_ids"]
    assert masked["labels"][1:] == plain["labels"][1:]
    tok = AutoTokenizer.from_pretrained(str(embedded_model_dir))
    learned = [[label for label in labels if label != -100] for labels in (plain[0]["labels"], masked[0]["labels"])]
    assert tok.decode(learned[0]) == ("Let's count it together: start at 3 and count up four. What do you get?<|im_end|>"
                                      "Yes, 7. Nice counting! Want to try 5 + 6?<|im_end|>")
    assert tok.decode(learned[1]) == "Yes, 7. Nice counting! Want to try 5 + 6?<|im_end|>"  # the weighted turn alone


def test_packed_and_unpacked_loss_agree(tiny_dataset, tmp_path, embedded_model_dir):
    common = ("--eval_strategy", "steps", "--per_device_eval_batch_size", "8", "--max_length", "4096")
    padded = _trainer(tiny_dataset, tmp_path / "a", "--packing", "false", "--eval_packing", "false", *common)
    packed = _trainer(tiny_dataset, tmp_path / "b", "--packing", "true", "--eval_packing", "true", *common)
    padded.eval_dataset = padded.eval_dataset.select(range(1))
    # Evaluate both on all four conversations: the training set, as one batch each.
    padded_loss, _ = _one_batch_loss(padded, next(iter(padded.get_eval_dataloader(padded.train_dataset))))
    packed_batch = next(iter(packed.get_eval_dataloader(packed.train_dataset)))
    assert packed_batch["input_ids"].shape[0] == 1, "the four conversations should share one pack"
    assert "attention_mask" not in packed_batch or packed_batch["attention_mask"] is None
    packed_loss, _ = _one_batch_loss(packed, packed_batch)
    assert packed_loss == pytest.approx(padded_loss, rel=2e-4)
    # Control: the same pack with positions that run on across conversations lets attention leak
    # between them, and the loss moves. This is what the document masking prevents.
    leaky = {**packed_batch, "position_ids": torch.arange(packed_batch["input_ids"].shape[1]).unsqueeze(0)}
    leaky_loss, _ = _one_batch_loss(packed, leaky)
    assert abs(leaky_loss - padded_loss) > 1e-3


@pytest.fixture(scope="module")
def persona_dataset(tmp_path_factory) -> Path:
    """The tiny conversations with the real persona prompt (242 tokens), as `tim synth` writes them."""
    from tutorkit.persona import load_persona

    system = {"role": "system", "content": load_persona(ROOT / "configs/persona.yaml").render_system_prompt()}
    return write_dataset(tmp_path_factory.mktemp("persona_data"), [[system, *c[1:]] for c in TINY_CONVERSATIONS])


def test_shared_prompt_once_gives_the_same_loss_and_gradients(persona_dataset, tmp_path, embedded_model_dir):
    from trl import SFTTrainer

    # fp32 and no dropout: the two paths are then the same sums in another order.
    trainer = _trainer(persona_dataset, tmp_path, "--bf16", "false", "--lora_dropout", "0", "--eval_strategy", "no")
    assert isinstance(trainer, SharedPrefixSFTTrainer)
    batch = next(iter(trainer.get_train_dataloader()))
    shared = shared_prefix_length(batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert shared > 240 and batch["input_ids"].shape[0] == 4  # the persona prompt, in every row
    split = trainer._split_shared_prefix(trainer.model, batch)
    assert split["input_ids"].shape[1] == batch["input_ids"].shape[1] - shared

    def loss_and_grads(compute_loss) -> tuple[float, dict]:
        trainer.model.train()
        trainer.model.zero_grad()
        loss = compute_loss(trainer, trainer.model, {k: v.clone() for k, v in batch.items()})
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}

    per_row, per_row_grads = loss_and_grads(SFTTrainer.compute_loss)
    once, once_grads = loss_and_grads(SharedPrefixSFTTrainer.compute_loss)
    assert once == pytest.approx(per_row, rel=1e-5)
    assert per_row_grads.keys() == once_grads.keys() and len(once_grads) > 100
    for name, grad in per_row_grads.items():  # measured: within 2e-5 of each tensor's largest value
        assert (grad - once_grads[name]).abs().max() <= 1e-3 * grad.abs().max(), name


def test_resume_after_kill_9_reaches_the_same_final_step(tiny_dataset, tmp_path, embedded_model_dir):
    out = tmp_path / "run"
    cmd = [sys.executable, "train/sft.py", *_args(tiny_dataset, out, "--max_steps", "6", "--save_strategy", "steps",
           "--save_steps", "2", "--eval_strategy", "no", "--per_device_train_batch_size", "1")]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "checkpoint-2" / "trainer_state.json").is_file():
            break
        time.sleep(0.1)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 6
    assert metrics["resumed_from"] and Path(metrics["resumed_from"]).name.startswith("checkpoint-")
    assert int(Path(metrics["resumed_from"]).name.split("-")[1]) >= 2


def test_ddp_two_cpu_processes_with_accelerate(persona_dataset, tmp_path, embedded_model_dir):
    # Rows with the persona prompt: each process computes its batch's shared prompt once.
    out = tmp_path / "ddp"
    cmd = [str(BIN / "accelerate"), "launch", "--config_file", "configs/accelerate/cpu_ddp.yaml",
           "--main_process_port", str(free_port()), "train/sft.py",
           *_args(persona_dataset, out, "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no",
                  "--per_device_train_batch_size", "2", "--use_cpu", "true")]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == 2
    from safetensors.torch import load_file

    weights = load_file(out / "adapter_model.safetensors")
    assert weights and any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())


def test_merged_export_matches_the_adapter(trained_adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train import export

    out = export.main(["--adapter", str(trained_adapter), "--merge", "true", "--output_dir", str(tmp_path / "m")])
    assert (out / "model.safetensors").is_file() and (out / "chat_template.jinja").is_file()
    tok = AutoTokenizer.from_pretrained(str(out))
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    base_dir = json.loads((trained_adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(trained_adapter)).eval()
    with torch.no_grad():
        a, b = merged(**ids).logits, peft_model(**ids).logits
    assert torch.allclose(a, b, atol=1e-3)


def test_empty_dataset_file_is_refused_before_the_model_loads(tmp_path):
    from tutorkit import TimError

    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(TimError, match=r"train.jsonl: no conversations \(empty file\)"):
        sft.main(_args(tmp_path, tmp_path / "out", "--model_name_or_path", "/nonexistent"))


def test_accelerate_configs_load(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    paths = sorted((ROOT / "configs/accelerate").glob("*.yaml"))
    assert {p.stem for p in paths} >= {"cpu", "cpu_ddp", "single_gpu", "multi_gpu", "fsdp", "deepspeed_zero3"}
    for path in paths:
        assert path.read_text().startswith("# When:"), path
        config = load_config_from_file(str(path))
        assert config.num_processes >= 1, path


def test_shape_benchmark_runs_both_variants_on_a_tiny_shape():
    # The GPU benchmark's wiring (random-init model, synthetic data, packing, step timer), at a
    # size that runs on this CPU in seconds; the H200 runs the real shapes.
    r = subprocess.run([sys.executable, "scripts/bench_train_shapes.py", "--shape", "tiny", "--steps", "4",
                        "--warmup", "1", "--batch", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith('{"tiny/')]
    results = {k: v for row in rows for k, v in row.items()}
    assert set(results) == {"tiny/trl_defaults", "tiny/tim"}
    assert all(v["tokens"] > 0 and v["tokens_per_s"] > 0 and v["timed_steps"] == 3 for v in results.values())
