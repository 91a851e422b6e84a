"""Render the chat template saved at training time without transformers (for the llama.cpp
backend, which should not pull torch into a small server), exactly as transformers does:
the same Jinja settings, `{% generation %}` as a no-op block, `raise_exception`.
tests/test_llamacpp.py checks the output is identical to `tokenizer.apply_chat_template`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

GENERATION_TAGS = re.compile(r"\{%-?\s*(generation|endgeneration)\s*-?%\}")
# Text shaped like a chat template's control token: <|im_start|> <|eot_id|> (ChatML, Llama 3,
# Phi), </s> <s>, [INST] <<SYS>> (Llama 2, Mistral), <start_of_turn> (Gemma), <repo_name>-style
# specials. Every engine here tokenizes the rendered prompt with special tokens parsed, so such
# text from a student would become real control tokens and could re-prompt Tim.
CONTROL_LIKE = re.compile(r"<\|[^<>|\s]{1,40}\|>|</?s>|\[/?INST\]|<</?SYS>>|</?[A-Za-z_][A-Za-z0-9_]{2,30}>")


def defuse_control_text(text: str) -> str:
    """`text` with every control-token look-alike made plain text (its angle brackets and square
    brackets swapped for look-alike quotes: "<|im_start|>" -> "\u2039|im_start|\u203a"), so no tokenizer
    can read it as a control token. For what clients send, never for the persona prompt."""
    return CONTROL_LIKE.sub(lambda m: m.group().translate(_DEFUSE), text)


_DEFUSE = str.maketrans({"<": "\u2039", ">": "\u203a", "[": "\u2045", "]": "\u2046"})


def without_generation_tags(template: str) -> str:
    """The template for consumers that do not know transformers' `{% generation %}` extension
    (llama.cpp, vLLM's own parsers): the markers only label tokens for the loss, so dropping
    them leaves the rendered text unchanged."""
    return GENERATION_TAGS.sub("", template)


@lru_cache(maxsize=8)
def _compiled(template: str):
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    # transformers' settings (utils/chat_template_utils.py): trim_blocks and lstrip_blocks.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(without_generation_tags(template))


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
    return _compiled(template).render(messages=messages, add_generation_prompt=add_generation_prompt, **extra)


def load_template(directory: str | Path) -> str:
    """The chat template of a trained adapter (chat_template.jinja) or of a model directory
    (chat_template.jinja, else tokenizer_config.json's chat_template)."""
    import json

    from tutorkit import TimError

    directory = Path(directory)
    if (directory / "chat_template.jinja").is_file():
        return (directory / "chat_template.jinja").read_text(encoding="utf-8")
    config = directory / "tokenizer_config.json"
    template = json.loads(config.read_text(encoding="utf-8")).get("chat_template") if config.is_file() else None
    if not isinstance(template, str):
        raise TimError(f"no chat template in {directory}")
    return template


class TokenCounter:
    """Tokens as the served model counts them, from the chat template and tokenizer.json saved in
    a directory (the adapter's, or the model's): the prompt a chat renders to, and a reply's text.
    `tokenizers` only (no torch), ~1 ms a chat; the server budgets its context and reports `usage`
    with it whatever the backend."""

    def __init__(self, directory: str | Path):
        from tokenizers import Tokenizer

        from tutorkit import TimError

        path = Path(directory) / "tokenizer.json"
        if not path.is_file():
            raise TimError(f"no tokenizer.json in {directory}")
        self._tokenizer = Tokenizer.from_file(str(path))
        self._template = load_template(directory)

    def prompt(self, messages: list[dict]) -> int:
        text = render_chat(self._template, messages, add_generation_prompt=True)
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def text(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)
