"""Serve Tim to a school: the browser app and an OpenAI-compatible API on one offline server.

    tim serve --config configs/serve.yaml [--adapter runs/sft] [--key value ...]

    http://HOST:PORT/                    Gradio: chat, "My chats", staff page (login required)
    http://HOST:PORT/v1/chat/completions OpenAI-compatible API (bearer key: `tim users key NAME`)
    http://HOST:PORT/login, /logout      the browser session (serve/sessions.py)
    http://HOST:PORT/health              for monitoring: server, database, model server (no login)

This module is the HTTP server and its lifecycle: it opens the accounts and transcripts,
starts the staff alerts (serve/alerts.py) where a channel is configured, opens the chat backend
(serve/engine.py chooses it: vLLM by default), mounts both doors on one
FastAPI app, and on stop (Ctrl-C, SIGTERM) closes the backend, which stops the vLLM server it
started. Every turn goes through serve/tutor.py (limits, transcripts, safeguarding) whichever
door it comes from. Nothing leaves the machine: analytics off, no share link, no run history,
no web fonts, HF_HUB_OFFLINE.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time

from serve.accounts import Accounts
from serve.alerts import Alerter
from serve.config import ServeConfig
from serve.engine import adapter_dir, backend_spec, served_context
from serve.transcripts import Transcripts
from serve.tutor import Tutor
from tutorkit import TimError, exit_on_sigterm, run_main
from tutorkit.backends import ChatBackend, Sampling, open_backend
from tutorkit.chat_template import TokenCounter
from tutorkit.config import ConfigParser
from tutorkit.model_files import resolve_model
from tutorkit.persona import load_persona
from tutorkit.safeguarding import load_safeguard


class RunningServer:
    """A started `tim serve`: its URL, and close() to stop it and release its backend."""

    def __init__(self, server, thread: threading.Thread | None, url: str, resources: contextlib.ExitStack):
        self.server, self.thread, self.url, self._resources = server, thread, url, resources

    def close(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=30)
        self._resources.close()


def build_server_app(cfg: ServeConfig, backend: ChatBackend, transcripts: Transcripts, accounts: Accounts,
                     alerter: Alerter | None = None):  # fmt: skip
    """FastAPI app: the OpenAI-compatible API under /v1, the Gradio app at /."""
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, RedirectResponse
    from starlette.concurrency import run_in_threadpool

    from tutorkit.backends.vllm_server import healthy

    from serve import sessions

    from serve.openai_api import make_router
    from serve.web_ui import build_ui, staff_note

    persona = load_persona(cfg.persona_config)
    tutor = Tutor(
        backend=backend,
        safeguard=load_safeguard(cfg.safeguarding_config),
        transcripts=transcripts,
        persona=persona,
        sampling=Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens),
        limits=cfg.limits,
        max_history_messages=cfg.max_history_messages,
        tokens=token_counter(cfg),
        context_tokens=served_context(cfg),
        alerter=alerter,
    )
    app = FastAPI(title=persona.name, docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(make_router(tutor, accounts, cfg.served_model_name, cfg.max_request_kb * 1024))
    user_of = None
    if cfg.require_login:
        session_routes, user_of = sessions.make_router(accounts, transcripts, persona.name, staff_note(persona.name),
                                                       cfg.session_hours)  # fmt: skip
        app.include_router(session_routes)

        @app.middleware("http")
        async def login_first(request, call_next):
            if request.method == "GET" and request.url.path == "/" and user_of(request) is None:
                return RedirectResponse("/login", status_code=303)
            return await call_next(request)

    @app.get("/health")
    async def health():
        """For monitoring (no login; says only ok or what is down): the server answers, the
        database file it opened is still at its path and may be written, the model server
        answers. Reads only (a flood of checks writes nothing and never waits for the writer)."""
        database = transcripts.writable()
        upstream = {"vllm": [f"http://127.0.0.1:{cfg.vllm_port}"], "openai": cfg.base_url}.get(cfg.engine)
        backend = all([await run_in_threadpool(healthy, url) for url in upstream]) if upstream else True
        body = {"server": "ok", "database": "ok" if database else "down", "backend": "ok" if backend else "down"}
        return JSONResponse(body, status_code=200 if database and backend else 503)

    ui = build_ui(tutor, accounts, login=cfg.require_login)
    ui.queue(default_concurrency_limit=4)
    return gr.mount_gradio_app(
        app, ui, path="/", auth_dependency=user_of, auth_message=staff_note(persona.name), footer_links=[], run_history=False,
        # Our gr.Error messages (refusals, "log in again") are shown; anything else (a bug, an
        # internal error naming hosts or files) shows students only a generic error.
        show_error=False, ssr_mode=False, mcp_server=False, pwa=False, enable_monitoring=False,
        max_file_size=1,  # bytes: the app takes no files, and students must not store any on the server
    )  # fmt: skip


def token_counter(cfg: ServeConfig) -> TokenCounter | None:
    """The served model's tokens (the adapter's template and tokenizer, else the model's), or
    None with a warning where they are not on this machine (an `openai` backend's own model)."""
    try:
        directory = adapter_dir(cfg) or resolve_model(cfg.model)
        return TokenCounter(directory)
    except TimError as e:
        print(f"tim serve: {e}: history is cut by count only, and the API sends no usage", file=sys.stderr)
        return None


def make_parser() -> ConfigParser:
    return ConfigParser(ServeConfig, prog="tim serve", doc=__doc__)


def launch(cfg: ServeConfig, block: bool = True) -> RunningServer:
    """Start serving; with block, until stopped. Without, in a thread: close() stops it."""
    import uvicorn

    accounts = Accounts(cfg.transcripts_db)
    if cfg.require_login and not accounts.list():
        raise TimError("no accounts yet: add one with `tim users add NAME --role staff` (or --require_login false)")
    accounts.purge_sessions(cfg.session_hours * 3600)
    transcripts = Transcripts(cfg.transcripts_db, alert_channels=cfg.alert_channels.names)
    purged = transcripts.purge(cfg.retention_days)
    if purged:
        print(f"tim serve: purged {purged} chats older than {cfg.retention_days} days", file=sys.stderr)
    with contextlib.ExitStack() as resources:
        alerter = None
        if cfg.alert_channels.names:  # alerts owed from before a restart go out now
            alerter = Alerter(cfg.alert_channels, transcripts).start()
            resources.callback(alerter.close)
        backend = resources.enter_context(open_backend(backend_spec(cfg)))
        engine, why = cfg.engine_choice
        if why:
            print(f"tim serve: serving with {engine} (backend: auto): {why}", file=sys.stderr, flush=True)
        app = build_server_app(cfg, backend, transcripts, accounts, alerter)
        # Open streams (a browser's event stream) would otherwise hold a shutdown forever.
        server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning",
                                               access_log=False, timeout_graceful_shutdown=5, proxy_headers=True,
                                               forwarded_allow_ips=cfg.forwarded_allow_ips))  # fmt: skip
        url = f"http://{cfg.host}:{cfg.port}"
        if block:
            print(f"tim serve: Tim is at {url}  (API: {url}/v1)", file=sys.stderr, flush=True)
            # uvicorn shuts down gracefully on SIGTERM and then re-raises it; leaving through
            # Python (not the default handler) lets the `with` block stop our vLLM server.
            signal.signal(signal.SIGTERM, exit_on_sigterm)
            server.run()
            return RunningServer(server, None, url, contextlib.ExitStack())
        thread = threading.Thread(target=server.run, daemon=True, name="tim-serve")
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise TimError(f"tim serve could not start on {cfg.host}:{cfg.port} (port in use?)")
            time.sleep(0.05)
        print(f"tim serve: Tim is at {url}  (API: {url}/v1)", file=sys.stderr, flush=True)
        return RunningServer(server, thread, url, resources.pop_all())


def main(args=None):
    cfg, _ = make_parser().parse(args)
    return launch(cfg)


if __name__ == "__main__":
    run_main(main)
