"""Serving Tim: `tim serve --config configs/serve.yaml` (a Gradio chat on 127.0.0.1)."""
