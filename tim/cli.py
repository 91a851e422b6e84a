"""`tim`: one command for every stage.

    tim synth     --config configs/synth.yaml       synthesize conversations (synth/)
    tim import    --config configs/import.yaml --inputs FILE ...   convert legacy transcripts
    tim train     --config configs/sft.yaml         LoRA fine-tune (train/sft.py, one process)
    tim export    --adapter runs/sft --merge true --output_dir runs/sft-merged   merged model
    tim eval      --config configs/eval.yaml --adapter runs/sft   behaviours, base vs tuned
    tim serve     --config configs/serve.yaml       Tim in the browser and over the API (serve/)
    tim users     add|remove|list|key [NAME] [--role staff]   accounts and API keys for tim serve
    tim transcripts purge|export|delete [NAME]      the chats tim serve stored
    tim demo      --config configs/demo.yaml        synth, train, eval at demo size, then serve
    tim generator start|stop|status --config configs/generator.yaml   the local vLLM server
    tim --version

Each command's options: `tim COMMAND --help`. Any config key can be overridden: `--key value`.
"""

from __future__ import annotations

import sys

from tutorkit import run_main


# One function per command, each importing its stage only when that command runs, so that
# `tim users list` does not load torch.
def _synth(args):
    from synth.synthesize import main

    return main(args)


def _import(args):
    from synth.legacy_import import main

    return main(args)


def _train(args):
    from train.sft import main

    return main(args)


def _export(args):
    from train.export import main

    return main(args)


def _eval(args):
    from evaluation.evaluate import main

    return main(args)


def _serve(args):
    from serve.app import main

    return main(args)


def _users(args):
    from serve.accounts import main

    return main(args)


def _transcripts(args):
    from serve.transcripts import main

    return main(args)


def _demo(args):
    from tim.demo import main

    return main(args)


def _generator(args):
    from tutorkit.backends.vllm_server import main

    return main(args)


COMMANDS = {
    "synth": _synth, "import": _import, "train": _train, "export": _export, "eval": _eval, "serve": _serve,
    "users": _users, "transcripts": _transcripts, "demo": _demo, "generator": _generator,
}  # fmt: skip


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if argv else 2)
    if argv[0] in ("-V", "--version"):
        from tim import __version__

        print(f"tim {__version__}")
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"tim: error: unknown command {command!r}; one of: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    run_main(COMMANDS[command], rest)


if __name__ == "__main__":
    main()
