"""Fine-tune a sentence encoder with a LoRA adapter (PEFT) and a linear head, multi-label: what
Tim Guard (train/guard.py) and Tim's reply judge (train/judge.py) are. Both read as a `chat`: a
list of texts, the last one classified, the earlier ones its context (tutorkit/guard.py reads the
result back). Labels a row does not have are masked out of the loss.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EncoderTrainConfig:
    """The settings every encoder classifier shares (a stage's config adds its data and output)."""

    encoder: str = field(default="embedded-minilm", metadata={"help": "'embedded-minilm' or an encoder directory."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank; 0 = the encoder frozen, the head alone trained."})
    lora_alpha: int = field(default=32)
    lora_dropout: float = field(default=0.1)
    lora_target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"],
                                           metadata={"help": "Layers given LoRA (BERT's names; a Llama-style "
                                                     "model: q_proj k_proj v_proj o_proj ...)."})  # fmt: skip
    epochs: int = field(default=5)
    batch_size: int = field(default=16)
    learning_rate: float = field(default=5e-4, metadata={"help": "The adapter's."})
    head_learning_rate: float = field(default=3e-3)
    max_length: int = field(default=128, metadata={"help": "Tokens of text + context (the context is cut first)."})
    seed: int = field(default=0)
    threads: int = field(default=0, metadata={"help": "torch threads; 0 = torch's default."})

    def __post_init__(self):
        if self.lora_r < 0 or self.epochs < 1 or self.batch_size < 1 or self.max_length < 8:
            raise ValueError("lora_r must be >= 0, epochs and batch_size >= 1, max_length >= 8")


@dataclass
class Fitted:
    net: object  # tutorkit.guard.build_net's module
    encoder: object  # the (PEFT) encoder inside it
    tokenizer: object
    encoder_dir: Path
    lora: dict | None
    history: list[dict]
    seconds: float
    max_length: int

    def scores(self, chats: list, batch_size: int = 64) -> list[list[float]]:
        """Probabilities per output for each chat."""
        import torch

        from tutorkit.guard import tokenize

        self.net.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(chats), batch_size):
                batch = tokenize(self.tokenizer, chats[start : start + batch_size], self.max_length)
                out += torch.sigmoid(self.net(**batch)).tolist()
        return out

    def save(self, out: Path) -> None:
        """The adapter (if any) and the head; the caller writes the record (tutorkit.guard.GuardRecord)."""
        from safetensors.torch import save_file

        from tutorkit.guard import HEAD

        out.mkdir(parents=True, exist_ok=True)
        if self.lora:
            self.encoder.save_pretrained(str(out))
        save_file({k: v.contiguous() for k, v in self.net.head.state_dict().items()}, str(out / HEAD))


def fit(cfg: EncoderTrainConfig, chats: list, targets: list[list[float]], masks: list[list[float]] | None = None) -> Fitted:
    """Train on (chat, targets) rows; `masks` (same shape, 1 = labelled) leaves unknown labels out
    of the loss. Prints progress every 50 steps."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tutorkit.guard import build_net, tokenize
    from tutorkit.model_files import resolve_model

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    encoder_dir = resolve_model(cfg.encoder)
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    encoder = AutoModel.from_pretrained(str(encoder_dir), dtype=torch.float32)
    lora = None
    if cfg.lora_r:
        from peft import LoraConfig, get_peft_model

        lora = {"r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout,
                "target_modules": cfg.lora_target_modules}  # fmt: skip
        encoder = get_peft_model(encoder, LoraConfig(**lora))
    else:
        encoder.requires_grad_(False)
    net = build_net(encoder, len(targets[0]))
    groups = [{"params": net.head.parameters(), "lr": cfg.head_learning_rate}]
    if lora:
        groups.append({"params": [p for p in encoder.parameters() if p.requires_grad], "lr": cfg.learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    steps = cfg.epochs * -(-len(chats) // cfg.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups], total_steps=steps,
                                                   pct_start=0.1)  # fmt: skip
    labels = torch.tensor(targets)
    weights = torch.tensor(masks) if masks is not None else torch.ones_like(labels)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    started, history, step = time.monotonic(), [], 0
    for epoch in range(cfg.epochs):
        net.train()
        order = list(range(len(chats)))
        random.shuffle(order)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            inputs = tokenize(tokenizer, [chats[i] for i in batch], cfg.max_length)
            per_label = loss_fn(net(**inputs), labels[batch]) * weights[batch]
            loss = per_label.sum() / weights[batch].sum().clamp(min=1)
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            total += loss.item() * len(batch)
            step += 1
            if step % 50 == 0 or step == steps:
                elapsed = time.monotonic() - started
                print(f"  step {step}/{steps}  loss {loss.item():.4f}  {elapsed:.0f} s, about "
                      f"{elapsed / step * (steps - step):.0f} s left", file=sys.stderr, flush=True)  # fmt: skip
        history.append({"epoch": epoch + 1, "loss": total / len(chats)})
    return Fitted(net, encoder, tokenizer, encoder_dir, lora, history, round(time.monotonic() - started, 1),
                  cfg.max_length)  # fmt: skip
