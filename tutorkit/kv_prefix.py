"""A batch's shared beginning read once: every Tim prompt opens with the same persona system
prompt (~250 tokens of the embedded model), and a padded batch would run it once per row.
Training (train/shared_prefix.py) and in-process generation (backends/transformers_local.py)
both run those tokens once and repeat their keys and values for every row; these are the pieces
they share.

May import: the standard library (torch and transformers are only handed in).
"""

from __future__ import annotations

import inspect

# Shorter shared prefixes go the usual way: they save little beside the extra forward call's fixed
# cost (a guess; only the ~250-token persona prompt was measured: docs/performance.md).
MIN_SHARED_TOKENS = 16


def common_prefix_length(rows: list[list[int]]) -> int:
    """How many leading tokens every row has in common, leaving each row at least one token of
    its own (generation continues from a row's last token). 0 for fewer than two rows."""
    if len(rows) < 2:
        return 0
    limit = min(len(row) for row in rows) - 1
    n = 0
    while n < limit and all(row[n] == rows[0][n] for row in rows):
        n += 1
    return n


def backbone_of(model):
    """The transformer without its LM head (e.g. LlamaModel; LoRA layers stay inside) of a
    transformers model or a PEFT model: a prefix needs keys and values, not 49k-wide logits."""
    return (model.get_base_model() if hasattr(model, "get_base_model") else model).base_model


def cache_keyword(model) -> str:
    """The model's name for its KV cache argument (transformers 5.x renamed past_key_values to
    cache; generate() follows its forward)."""
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
