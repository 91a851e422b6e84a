"""`tim`: one command for every stage.

    tim synth     --config configs/synth.yaml       synthesize conversations (synth/)
    tim import    --config configs/import.yaml --inputs FILE ...   convert legacy transcripts
    tim train     --config configs/sft.yaml         LoRA fine-tune (train/sft.py, one process)
    tim export    --adapter runs/sft --merge --output_dir runs/sft-merged   merged model
    tim eval      --config configs/eval.yaml --adapter runs/sft   behaviours, base vs tuned
    tim serve     --config configs/serve.yaml       chat with Tim in the browser (serve/)
    tim users     add|remove|list|key [NAME] [--role staff]   accounts and API keys for tim serve
    tim transcripts purge|export|delete [NAME]      the chats tim serve stored
    tim demo      --config configs/demo.yaml        all three at demo size, then serve
    tim generator start|stop|status --config configs/generator.yaml   the local vLLM server

Each stage's options: `tim STAGE --help`. Any config key can be overridden: `--key value`.
"""

from __future__ import annotations

import importlib
import sys

from tim import TimError

STAGES = {
    "synth": "synth.synthesize",
    "import": "synth.legacy_import",
    "train": "train.sft",
    "export": "train.export",
    "eval": "evaluation.evaluate",
    "serve": "serve.app",
    "users": "serve.accounts",
    "transcripts": "serve.transcripts",
    "demo": "tim.demo",
    "generator": "tim.generator_server",
}


def run_reporting_errors(fn, args=None) -> None:
    """Run a stage's main(); a TimError becomes one line on stderr and exit status 2."""
    try:
        fn(args)
    except TimError as e:
        print(f"tim: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if argv else 2)
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"tim: error: unknown command {stage!r}; one of: {', '.join(STAGES)}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(STAGES[stage])
    run_reporting_errors(module.main, rest)


if __name__ == "__main__":
    main()
