"""The model in this process with transformers (and PEFT for an adapter): where vLLM cannot run,
and what the evaluation scores.

`complete` requests are batched: whatever arrives while the model is busy is generated together
next (up to `max_batch_size`, left-padded), which is what makes synthesis with many
conversations in flight worth doing in process. `stream` (serving) generates one reply with a
streamer. Generation runs in worker threads so the event loop stays responsive. The tokenizer,
and so the chat template, comes from the adapter directory when there is one: the template
saved at training time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from tutorkit.backends import BackendError, Sampling
from tutorkit.kv_prefix import MIN_SHARED_TOKENS, backbone_of, cache_keyword, common_prefix_length


def load_model(model_dir: str | Path, adapter_dir: str | Path | None = None, device: str | None = None):
    """(model, tokenizer): the base model with the adapter applied, in eval mode, and the
    tokenizer saved with the adapter (its chat template) or the model's own. bf16 on CUDA,
    fp32 on a CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir or model_dir))
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model.to(device).eval(), tokenizer


class TransformersChatBackend:
    def __init__(self, model_dir: str | Path, adapter_dir: str | Path | None = None, device: str | None = None,
                 max_batch_size: int = 8):  # fmt: skip
        self.model, self.tokenizer = load_model(model_dir, adapter_dir, device)
        self.device = self.model.device
        self.max_batch_size = max_batch_size
        self.completion_tokens = 0
        self.generate_calls = 0  # batches run; fewer than requests when batching works
        self._model_lock = threading.Lock()  # one generate() at a time on this model
        self._queue_cv = threading.Condition()
        self._pending: list[tuple[list[dict], Sampling, asyncio.Future, asyncio.AbstractEventLoop]] = []
        self._worker: threading.Thread | None = None

    def _generate_kwargs(self, sampling: Sampling, max_new_tokens: int) -> dict:
        kwargs = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
        }
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False)
        return kwargs

    def _render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _generate_batch(self, batch) -> list[str]:
        import torch

        rows = [self.tokenizer(self._render(messages), add_special_tokens=False)["input_ids"] for messages, *_ in batch]
        first = batch[0][1]
        max_new = max(sampling.max_tokens for _, sampling, *_ in batch)
        with self._model_lock, torch.inference_mode():
            if first.seed is not None:
                torch.manual_seed(first.seed)
            inputs = self._inputs(rows)
            out = self.model.generate(**inputs, **self._generate_kwargs(first, max_new))
        self.generate_calls += 1
        texts = []
        for row, (_, sampling, *_) in zip(out[:, inputs["input_ids"].shape[1] :], batch):
            row = row[: sampling.max_tokens]
            ended = (row == self.tokenizer.eos_token_id).nonzero()
            n = int(ended[0]) if len(ended) else len(row)
            self.completion_tokens += n
            texts.append(_cut_at_stop(self.tokenizer.decode(row[:n], skip_special_tokens=True), sampling.stop))
        return texts

    def _inputs(self, rows: list[list[int]]) -> dict:
        """generate()'s inputs for a batch of prompts, padded so that every row ends at its last
        token. Where the rows open alike (the persona prompt; best-of-n's identical prompts) those
        tokens are run once and their keys and values repeated for every row: [shared][pad][own],
        the pad masked (positions follow the mask, so each row reads as it would alone). The 73
        eval probes: the same 73 greedy replies, 100 -> 78 s per model (docs/performance.md)."""
        import torch
        from transformers import DynamicCache

        pad = self.tokenizer.pad_token_id
        shared = common_prefix_length(rows)
        if shared < MIN_SHARED_TOKENS:
            shared = 0
        width = max(len(row) for row in rows) - shared
        ids = [row[:shared] + [pad] * (width + shared - len(row)) + row[shared:] for row in rows]
        mask = [[1] * shared + [0] * (width + shared - len(row)) + [1] * (len(row) - shared) for row in rows]
        inputs = {"input_ids": torch.tensor(ids, device=self.device), "attention_mask": torch.tensor(mask, device=self.device)}
        if shared:
            backbone = backbone_of(self.model)
            keyword = cache_keyword(backbone)
            cache = DynamicCache(config=backbone.config)
            backbone(input_ids=inputs["input_ids"][:1, :shared], use_cache=True, **{keyword: cache})
            cache.batch_repeat_interleave(len(rows))
            inputs[keyword] = cache
        return inputs

    def _work(self) -> None:
        while True:
            with self._queue_cv:
                while not self._pending:
                    self._queue_cv.wait()
                # Requests that share sampling settings can share a generate() call.
                first = self._pending[0][1]
                same = lambda s: (s.temperature, s.top_p) == (first.temperature, first.top_p)  # noqa: E731
                batch = [p for p in self._pending if same(p[1])][: self.max_batch_size]
                for p in batch:
                    self._pending.remove(p)
            try:
                results = self._generate_batch(batch)
            except Exception as e:  # hand the failure to every waiting caller
                error = BackendError(f"transformers generation failed: {e!r}")
                for _, _, future, loop in batch:
                    loop.call_soon_threadsafe(_set_exception, future, error)
                continue
            for (_, _, future, loop), text in zip(batch, results):
                loop.call_soon_threadsafe(_set_result, future, text)

    async def complete(self, messages: list[dict], sampling: Sampling) -> str:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._queue_cv:
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, daemon=True, name="tim-generate")
                self._worker.start()
            self._pending.append((messages, sampling, future, loop))
            self._queue_cv.notify()
        return await future

    async def complete_n(self, messages: list[dict], sampling: Sampling, n: int) -> list[str]:
        """n requests that the worker batches into one generate() (up to max_batch_size), each
        row sampled on its own."""
        return list(await asyncio.gather(*(self.complete(messages, sampling) for _ in range(n))))

    async def stream(self, messages: list[dict], sampling: Sampling) -> AsyncIterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failed: list[BaseException] = []

        def run():
            try:
                with self._model_lock, torch.inference_mode():
                    if sampling.seed is not None:
                        torch.manual_seed(sampling.seed)
                    self.model.generate(**inputs, **self._generate_kwargs(sampling, sampling.max_tokens), streamer=streamer)
            except Exception as e:  # the reader would otherwise wait for the streamer forever
                failed.append(e)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        iterator = iter(streamer)
        while True:
            piece = await asyncio.to_thread(next, iterator, None)
            if piece is None:
                break
            if piece:
                yield piece
        await asyncio.to_thread(thread.join)
        if failed:
            raise BackendError(f"transformers generation failed: {failed[0]!r}")

    async def aclose(self) -> None:
        return None


def _set_result(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _cut_at_stop(text: str, stop: list[str]) -> str:
    for s in stop:
        i = text.find(s)
        if i >= 0:
            text = text[:i]
    return text
