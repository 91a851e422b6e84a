"""Chat with Tim in the browser: a Gradio app with streaming replies, offline.

    tim serve --config configs/serve.yaml [--adapter runs/sft] [--key value ...]

The model answers through the same chat backends synthesis uses (tim/backends.py): in-process
transformers with the trained LoRA adapter (default), or any OpenAI-compatible server such as
the project's vLLM. The prompt is rendered with the chat template saved beside the adapter at
training time, and starts with the persona's system prompt that the training data carries.
Safeguarding (serve/safeguarding.py, configs/safeguarding.yaml) answers disclosures with a
fixed response and silences a chat after repeated abuse, whatever the model would say.
Bound to 127.0.0.1, Gradio analytics off, no share link.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from serve.accounts import Accounts
from serve.safeguarding import Safeguard, load_safeguard
from serve.transcripts import Transcripts
from tim import TimError
from tim.backends import ChatBackend, OpenAIChatBackend, Sampling, TransformersChatBackend
from tim.config import make_config_parser, parse_config
from tim.conversation import clean_reply, starts_other_speaker
from tim.model_files import resolve_model
from tim.persona import load_persona

STAFF_NOTE = "Tim is a tutor. Your teachers and school staff can read these chats."
QUIET = "*(Tim stays quiet.)*"


@dataclass
class ServeConfig:
    model: str = field(default="embedded", metadata={"help": "Base model: 'embedded', a directory, or a hub id."})
    adapter: str = field(default="runs/sft", metadata={"help": "Trained LoRA adapter dir; '' = base model only."})
    backend: str = field(default="transformers", metadata={"help": "transformers | openai"})
    base_url: list[str] = field(default_factory=list, metadata={"help": "openai backend: server URL(s)."})
    served_model_name: str = field(default="tim", metadata={"help": "openai backend: model name to ask for."})
    api_key: str | None = field(default=None)
    persona_config: str = field(default="configs/persona.yaml")
    safeguarding_config: str = field(default="configs/safeguarding.yaml", metadata={"help": "Model-independent flags."})
    transcripts_db: str = field(default="runs/serve/transcripts.sqlite", metadata={"help": "SQLite file of all chats."})
    retention_days: float = field(default=365.0, metadata={"help": "Chats older than this are purged at start."})
    require_login: bool = field(default=True, metadata={"help": "Accounts from `tim users` (false: one local user)."})
    host: str = field(default="127.0.0.1", metadata={"help": "0.0.0.0 only behind the school's firewall."})
    port: int = field(default=7860)
    max_new_tokens: int = field(default=200, metadata={"help": "Reply length cap, in tokens."})
    temperature: float = field(default=0.7)
    top_p: float = field(default=0.9)
    max_history_messages: int = field(default=12, metadata={"help": "Earlier messages sent with each turn."})

    def __post_init__(self):
        if self.backend not in ("transformers", "openai"):
            raise TimError(f"backend must be 'transformers' or 'openai', got {self.backend!r}")
        if self.backend == "openai" and not self.base_url:
            raise TimError("backend 'openai' needs base_url")


def _text(content) -> str:
    """Gradio history content: a string, or a list of parts of which the text ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def build_messages(system_prompt: str, history: list[dict], message: str, max_history: int) -> list[dict]:
    turns = [
        {"role": m["role"], "content": "" if _text(m.get("content")) == QUIET else _text(m.get("content"))}
        for m in history
        if m.get("role") in ("user", "assistant")
    ]
    return [{"role": "system", "content": system_prompt}, *turns[-max_history:], {"role": "user", "content": message}]


def fixed_reply(safeguard: Safeguard, history: list[dict], message: str) -> str | None:
    """The reply safeguarding decides, whatever the model would say: silence once the chat has
    had enough abuse, the configured response to a disclosure; None lets the model answer."""
    earlier = [_text(m.get("content")) for m in history if m.get("role") == "user"]
    if safeguard.silenced([*earlier, message]):
        return QUIET
    return safeguard.assess(message).response


def make_backend(cfg: ServeConfig) -> ChatBackend:
    if cfg.backend == "openai":
        return OpenAIChatBackend(cfg.base_url, cfg.served_model_name, cfg.api_key)
    adapter = Path(cfg.adapter) if cfg.adapter else None
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise TimError(f"no trained adapter in {adapter} (run `tim train` first, or pass --adapter '')")
    return TransformersChatBackend(resolve_model(cfg.model), adapter)


def build_app(cfg: ServeConfig, backend: ChatBackend, transcripts: Transcripts):
    import gradio as gr

    persona = load_persona(cfg.persona_config)
    system_prompt = persona.render_system_prompt()
    safeguard = load_safeguard(cfg.safeguarding_config)
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens)

    chat_ids: dict[str, int] = {}  # browser session -> chat in the transcripts

    async def reply(message: str, history: list[dict], request) -> AsyncIterator[str]:
        session = getattr(request, "session_hash", None) or "local"
        if not history or session not in chat_ids:  # a new or cleared chat
            chat_ids[session] = transcripts.start_chat(getattr(request, "username", None) or "local")
        chat_id = chat_ids[session]
        # Written (committed) before any reply is shown, with its safeguarding flags.
        transcripts.add_message(chat_id, "user", message, safeguard.assess(message).flags)
        fixed = fixed_reply(safeguard, history, message)
        if fixed is not None:
            if fixed == QUIET:
                transcripts.flag_chat(chat_id)
            transcripts.add_message(chat_id, "assistant", "" if fixed == QUIET else fixed)
            yield fixed
            return
        messages = build_messages(system_prompt, history, message, cfg.max_history_messages)
        raw = ""
        async for piece in backend.stream(messages, sampling):
            raw += piece
            if starts_other_speaker(raw):
                break  # the model began writing the student's line: Tim's turn is over
            yield clean_reply(raw)
        final = clean_reply(raw)
        transcripts.add_message(chat_id, "assistant", final)
        yield final if final else QUIET

    # Gradio passes the request (session, logged-in user) to a parameter annotated gr.Request.
    reply.__annotations__["request"] = gr.Request

    return gr.ChatInterface(
        reply,
        title=persona.name,
        description=STAFF_NOTE,
        analytics_enabled=False,
        flagging_mode="never",
        fill_height=True,
        api_name="chat",
    )


def make_parser():
    return make_config_parser((ServeConfig,), prog="tim serve", doc=__doc__)


def launch(cfg: ServeConfig, block: bool = True):
    accounts = Accounts(cfg.transcripts_db)
    if cfg.require_login and not accounts.list():
        raise TimError("no accounts yet: add one with `tim users add NAME --role staff` (or --require_login false)")
    transcripts = Transcripts(cfg.transcripts_db)
    purged = transcripts.purge(cfg.retention_days)
    if purged:
        print(f"tim serve: purged {purged} chats older than {cfg.retention_days} days", file=sys.stderr)
    app = build_app(cfg, make_backend(cfg), transcripts)
    print(f"tim serve: Tim is at http://{cfg.host}:{cfg.port}", file=sys.stderr, flush=True)
    app.queue(default_concurrency_limit=4)
    app.launch(
        server_name=cfg.host,
        server_port=cfg.port,
        share=False,
        run_history=False,
        prevent_thread_lock=not block,
        quiet=True,
        show_error=True,
        auth=(lambda name, password: accounts.verify(name, password) is not None) if cfg.require_login else None,
        auth_message=STAFF_NOTE,
    )
    return app


def main(args=None):
    (cfg,) = parse_config(make_parser(), args)
    return launch(cfg)


if __name__ == "__main__":
    from tim.cli import run_reporting_errors

    run_reporting_errors(main)
