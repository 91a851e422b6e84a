"""tutorkit: the ground floor every stage of Tim stands on.

Holds: config loading (`config`), the conversation schema and dataset files (`conversation`),
speaker labels and self-introductions (`speakers`), the persona (`persona`), model files
(`model_files`), the chat template (`chat_template`), the safeguarding rules (`safeguarding`),
the rule checks on a tutor's reply (`checks`), scripted chats: the gold exemplars, the probes'
format and the leak finder (`exemplars`), the typed events of one tutor turn (`turns`), and
the chat backends with their factory (`backends`).

May import: the standard library and third-party packages only. It never imports a stage
(`synth`, `train`, `serve`, `evaluation`) or the command line (`tim`); tests/test_layers.py
checks that.
"""

import os
import signal
import sys
import threading

# Nothing Tim runs may reach the network: no hub downloads, no telemetry, no Gradio analytics.
# Set here, at the first import of the project, because huggingface_hub and gradio read these
# when they are imported.
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
}.items():
    os.environ.setdefault(_key, _value)


def exit_on_sigterm(signum, frame) -> None:
    """SIGTERM as SystemExit(143): `finally` blocks and `with` exits run (run_main installs it)."""
    print("tim: stopping (SIGTERM)", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


class TimError(Exception):
    """A problem the user can fix (bad config, missing model, bad data row): shown as one line."""


def run_main(main, args=None) -> None:
    """Run a command's main(); a TimError becomes one line on stderr and exit status 2.

    Every entry point (the `tim` command, `python -m synth.synthesize`, `train/sft.py`) ends
    through here, so a user mistake never shows a traceback. SIGTERM (systemd, `kill`, a CI
    timeout) becomes SystemExit(143) in the main thread, so `finally` blocks run as they do for
    Ctrl-C: a vLLM server the command started is stopped with it, not left running."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        main(args)
    except TimError as e:
        print(f"tim: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
