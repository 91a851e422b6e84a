"""Tim Guard: a learned safeguarding classifier, read by `tim serve`, `tim safeguarding` and its
trainer (train/guard.py).

A sentence encoder (the embedded all-MiniLM-L6-v2 by default; any encoder directory named in the
trainer's config) with a LoRA adapter (PEFT) and a linear head scores one student message with
its recent context: the message and the earlier messages go in as a sentence pair (message
first; the longer of the two is cut first), the tokens are mean-pooled, and the head gives one
independent probability per category (tutorkit/safeguarding_data.CATEGORIES; several may be
high; all low = ordinary). The text is normalised as the phrase patterns see it (look-alike
letters, s p a c e d words) before the encoder's own tokenizer.

A guard directory holds `guard.json` (what it was made from: the encoder and its weights'
SHA-256, categories, input length, LoRA settings, data, and the thresholds chosen on the dev
split), `head.safetensors`, and the PEFT adapter (`adapter_config.json`,
`adapter_model.safetensors`) unless the encoder was frozen.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tutorkit import TimError
from tutorkit.model_files import file_sha256, resolve_model
from tutorkit.safeguarding import normalize

RECORD = "guard.json"
HEAD = "head.safetensors"


@dataclass
class GuardRecord:
    encoder: str  # as configured: "embedded-minilm" or a directory
    encoder_sha256: str  # of the encoder's model.safetensors: the adapter fits these weights only
    categories: list[str]
    max_length: int  # tokens of message + context
    lora: dict | None = None  # PEFT LoraConfig fields; None: the encoder frozen, only the head trained
    data: dict = field(default_factory=dict)  # files, their SHA-256 and counts
    dev_thresholds: dict = field(default_factory=dict)  # tier -> threshold chosen on the dev split

    def write(self, directory: Path) -> None:
        (directory / RECORD).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, directory: Path) -> GuardRecord:
        path = directory / RECORD
        try:
            fields = json.loads(path.read_text(encoding="utf-8"))
            return cls(**fields)
        except OSError as e:
            raise TimError(f"{path}: cannot read the guard's record: {e.strerror} (train one: tim guard train)") from None
        except (ValueError, TypeError) as e:
            raise TimError(f"{path}: not a guard record: {e}") from None


def pair(chat: tuple[str, ...] | list[str]) -> tuple[str, str]:
    """(the message, its context): what the encoder reads for the last message of `chat`."""
    return normalize(chat[-1]), normalize(" ".join(chat[:-1]))


def tokenize(tokenizer, chats: list, max_length: int):
    if tokenizer.pad_token is None:  # a chat model's tokenizer: pad with its end-of-text token
        tokenizer.pad_token = tokenizer.eos_token
    messages, contexts = zip(*(pair(c) for c in chats))
    if tokenizer.sep_token is None:  # no sentence pairs (a chat model): one text, the context after a line
        return tokenizer([f"{m}\n---\n{c}" if c else m for m, c in zip(messages, contexts)], truncation=True,
                         max_length=max_length, padding=True, return_tensors="pt")  # fmt: skip
    # The longer of message and context is cut first: the context when the message is short, and
    # the message too when it alone is longer than max_length (cutting only the context would
    # raise then, and a long message would go unscreened and unstored).
    return tokenizer(list(messages), list(contexts), truncation="longest_first", max_length=max_length,
                     padding=True, return_tensors="pt")  # fmt: skip


def build_net(encoder, n_categories: int):
    """The encoder with mean pooling and a linear head: logits per category."""
    import torch

    class GuardNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.head = torch.nn.Linear(encoder.config.hidden_size, n_categories)

        def forward(self, attention_mask, **inputs):  # input_ids, and token_type_ids for a BERT encoder
            hidden = self.encoder(attention_mask=attention_mask, **inputs).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            return self.head(pooled)

    return GuardNet()


# A long message is also read in pieces of about this many tokens (chosen on made-up long
# homework pastes ending in a disclosure: longer pieces dilute it, shorter ones flag the paste).
PIECE_TOKENS = 24


class Guard:
    """A trained guard, loaded once: `scores(chat)` -> {category: probability}."""

    def __init__(self, directory: str | Path):
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        self.directory = Path(directory)
        self.record = GuardRecord.read(self.directory)
        encoder_dir = resolve_model(self.record.encoder)
        weights = encoder_dir / "model.safetensors"
        if not weights.is_file() or file_sha256(weights) != self.record.encoder_sha256:
            raise TimError(f"{self.directory}: trained on an encoder whose weights differ from {encoder_dir} "
                           f"({self.record.encoder}); retrain it: tim guard train")  # fmt: skip
        self.categories = tuple(self.record.categories)
        self.tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
        encoder = AutoModel.from_pretrained(str(encoder_dir), dtype=torch.float32)
        if self.record.lora:
            from peft import PeftModel

            encoder = PeftModel.from_pretrained(encoder, str(self.directory)).merge_and_unload()
        self.net = build_net(encoder, len(self.categories))
        self.net.head.load_state_dict(load_file(str(self.directory / HEAD)))
        self.net.eval()
        # One scoring at a time: a fast tokenizer called from two threads at once fails
        # ("Already borrowed"), and the CPU's cores already serve one batch.
        self._lock = threading.Lock()

    def scores_many(self, chats: list, batch_size: int = 32) -> list[dict[str, float]]:
        import torch

        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(chats), batch_size):
                batch = tokenize(self.tokenizer, chats[start : start + batch_size], self.record.max_length)
                probs = torch.sigmoid(self.net(**batch)).tolist()
                out += [dict(zip(self.categories, p)) for p in probs]
        return out

    def pieces(self, message: str) -> list[str]:
        """`message` as the guard reads it: whole when it fits in half of max_length tokens (the
        context gets the rest), else also in overlapping runs of about PIECE_TOKENS tokens, so a
        disclosure at the end of a long paste is read, and read without pages of other words
        around it (the encoder averages over what it reads)."""
        words = message.split()
        with self._lock:
            tokens = len(self.tokenizer(normalize(message), add_special_tokens=False)["input_ids"])
        if tokens <= self.record.max_length // 2 or len(words) < 2:
            return [message]
        size = max(1, int(PIECE_TOKENS * len(words) / tokens))
        step = max(1, size // 2)
        return [message] + [" ".join(words[i : i + size]) for i in range(0, max(1, len(words) - step), step)]

    def scores(self, chat) -> dict[str, float]:
        """Probabilities per category for the last message of `chat` (earlier messages first); a
        long message scores the most any of its readings does (pieces())."""
        chat = list(chat)
        pieces = self.pieces(chat[-1])
        if len(pieces) == 1:
            return self.scores_many([chat])[0]
        each = self.scores_many([[*chat[:-1], pieces[0]]] + [[piece] for piece in pieces[1:]])
        return {c: max(s[c] for s in each) for c in self.categories}
