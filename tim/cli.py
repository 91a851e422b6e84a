"""`tim`: one command for every stage.

    tim synth     --config configs/synth.yaml       synthesize conversations (synth/)
    tim import    --config configs/import.yaml --inputs FILE ...   import chat logs and datasets
    tim data      show|merge --dataset_dir DIR      what training sees (trained tokens marked); merge datasets
    tim train     --config configs/sft.yaml         LoRA fine-tune (train/sft.py, one process)
    tim dpo       --config configs/dpo.yaml         preference tuning after SFT (train/dpo.py)
    tim export    --adapter runs/sft --merge true --output_dir runs/sft-merged   merged model
    tim eval      --config configs/eval.yaml --adapter runs/sft   behaviours, base vs tuned
    tim safeguarding eval|classify                  safeguarding measured on labelled sets; a file classified
    tim guard     train --config configs/guard.yaml  train the safeguarding guard (train/guard.py)
    tim judge     train --config configs/judge.yaml  train the reply judge on people's labels (train/judge.py)
    tim serve     --config configs/serve.yaml       Tim in the browser and over the API (serve/)
    tim users     add|import|passwd|role|remove|list|key|keys|revoke [NAME]   accounts, keys (tim serve)
    tim transcripts purge|export|delete|backup [NAME|FILE]   the chats tim serve stored
    tim demo      --config configs/demo.yaml        synth, train, eval at demo size, then serve
    tim generator start|stop|status --config configs/generator.yaml   the local vLLM server
    tim --version

Each command's options: `tim COMMAND --help`. Any config key can be overridden: `--key value`.
"""

from __future__ import annotations

import sys

from evaluation.evaluate import main as eval_main
from evaluation.safeguarding_eval import main as safeguarding_main
from serve.accounts import main as users_main
from serve.app import main as serve_main
from serve.transcripts import main as transcripts_main
from synth.legacy_import import main as import_main
from synth.synthesize import main as synth_main
from tim.demo import main as demo_main
from train.data import main as data_main
from train.dpo import main as dpo_main
from train.export import main as export_main
from train.guard import main as guard_main
from train.judge import main as judge_main
from train.sft import main as train_main
from tutorkit import run_main
from tutorkit.backends.vllm_server import main as generator_main

# Each stage's module imports its heavy libraries (torch, transformers, gradio) inside the
# functions that need them, so `tim users list` stays quick although every stage is imported.
COMMANDS = {
    "synth": synth_main, "import": import_main, "train": train_main, "dpo": dpo_main, "export": export_main,
    "eval": eval_main, "safeguarding": safeguarding_main, "guard": guard_main, "judge": judge_main,
    "serve": serve_main, "users": users_main, "transcripts": transcripts_main, "demo": demo_main,
    "generator": generator_main, "data": data_main,
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
