"""Serving Tim to a school: `tim serve --config configs/serve.yaml`, the browser app and an
OpenAI-compatible API on one offline server, with accounts, transcripts and safeguarding.

Holds: the serve config (config.py), which backend serves and its files (engine.py, and
artifacts.py for the merged model and the GGUF export), the HTTP server's lifecycle (app.py),
one student turn (tutor.py), the two doors (web_ui.py, openai_api.py), accounts and
transcripts in SQLite (accounts.py, transcripts.py).

May import: `tutorkit` (the ground), and `train.export` only through artifacts.py (plain
arguments: an adapter directory in, model files out). Never another stage, never the CLI.
"""
