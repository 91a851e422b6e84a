"""SFT with the batch's shared prompt computed once: every training row opens with the same
persona system prompt (249 tokens of the embedded model's ~725 per demo conversation), which
carries no loss, yet a padded batch runs it through the model once per row.

`SharedPrefixSFTTrainer` is TRL's SFTTrainer with one change in `compute_loss`: when every row
of a padded batch starts with the same tokens (attention on, no loss), it runs those tokens once
(batch 1), repeats their keys and values for every row (`DynamicCache.batch_repeat_interleave`,
whose backward sums the rows' gradients), and hands TRL's own loss the rest of each row with that
cache and the positions after it. The loss and the gradients are the same as without it (up to
float rounding; tests/test_train_scale.py compares them), except that LoRA dropout draws one mask
for the shared tokens instead of one per row. Everything else — batches without a shared prefix,
packed/padding-free batches (no attention_mask), activation checkpointing (which drops caches) —
goes through TRL unchanged.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from trl import SFTTrainer

from tutorkit.kv_prefix import MIN_SHARED_TOKENS, backbone_of, cache_keyword


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> int:
    """How many leading tokens can be computed once: identical in every row, attended, and with
    no loss on them *or on the token after them* (predicting that token needs the last shared
    position's output, which the per-row pass no longer computes). 0 when under two rows."""
    if input_ids.size(0) < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(0) & attention_mask.bool().all(0) & (labels == -100).all(0)
    run = int(same.long().cumprod(0).sum())  # leading positions where all three hold
    return max(0, run - 1)


class SharedPrefixSFTTrainer(SFTTrainer):
    """SFTTrainer computing the batch's shared prompt once (module docstring)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        split = None if return_outputs else self._split_shared_prefix(model, inputs)
        return super().compute_loss(model, split or inputs, return_outputs, num_items_in_batch)

    def _split_shared_prefix(self, model, inputs: dict) -> dict | None:
        ids, mask, labels = inputs.get("input_ids"), inputs.get("attention_mask"), inputs.get("labels")
        if ids is None or mask is None or labels is None or self.args.activation_checkpointing:
            return None
        shared = shared_prefix_length(ids, mask, labels)
        if shared < MIN_SHARED_TOKENS:
            return None
        backbone = backbone_of(self.accelerator.unwrap_model(model))  # e.g. LlamaModel, LoRA inside
        keyword = cache_keyword(backbone)
        cache = DynamicCache(config=backbone.config)
        backbone(input_ids=ids[:1, :shared], attention_mask=mask[:1, :shared], use_cache=True, **{keyword: cache})
        cache.batch_repeat_interleave(ids.size(0))
        positions = torch.arange(shared, ids.size(1), device=ids.device).expand(ids.size(0), -1)
        # attention_mask stays whole (cache + rest); TRL counts the batch's tokens from it.
        return {**inputs, "input_ids": ids[:, shared:], "labels": labels[:, shared:], "position_ids": positions,
                keyword: cache}  # fmt: skip
