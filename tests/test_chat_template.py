"""The training chat template: loss on exactly Tim's words plus his end-of-turn token."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = (ROOT / "configs/chat_templates/chatml.jinja").read_text()


def test_assistant_mask_is_exactly_tims_turns_and_end_tokens(embedded_model_dir):
    tok = AutoTokenizer.from_pretrained(str(embedded_model_dir))
    assert tok.pad_token_id == tok.eos_token_id  # the embedded tokenizer's pad == eos
    messages = [
        {"role": "system", "content": "You are Tim."},
        {"role": "user", "content": "what is 2+2"},
        {"role": "assistant", "content": "What do you think it is?"},
        {"role": "user", "content": "4"},
        {"role": "assistant", "content": "Yes!"},
        {"role": "user", "content": "you are dumb"},
        {"role": "assistant", "content": ""},  # silent turn
    ]
    out = tok.apply_chat_template(
        messages, chat_template=TEMPLATE, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    # Group the trained tokens into runs: one run per assistant turn.
    runs, current = [], []
    for token, m in zip(ids, mask):
        if m:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    assert [tok.decode(r) for r in runs] == ["What do you think it is?<|im_end|>", "Yes!<|im_end|>", "<|im_end|>"]
    # Every end-of-turn token of an assistant turn is trained; those of system and user turns are not.
    trained_ends = sum(1 for t, m in zip(ids, mask) if t == end and m)
    assert trained_ends == 3 and ids.count(end) == 7
    # Serving renders the same prefix, then the generation prompt.
    prompt = tok.apply_chat_template(messages[:2], chat_template=TEMPLATE, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages[:3], chat_template=TEMPLATE, tokenize=False)
    assert full.startswith(prompt) and prompt.endswith("<|im_start|>assistant\n")
