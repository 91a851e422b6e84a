"""The whole loop at demo size on the embedded model, then a chat with Tim in the browser.

    make demo        # = scripts/setup_env.sh --vllm && tim demo --config configs/demo.yaml
    tim demo --config configs/demo.yaml [--serve false]

1. synth: conversations from the local vLLM server   -> run_dir/data/{train,validation}.jsonl
2. train: LoRA on those conversations                 -> run_dir/adapter/
   (dpo_config set: then DPO on synthesis's preference pairs -> run_dir/dpo/, which the next
   steps take instead)
3. eval:  the probe suite, base vs tuned              -> run_dir/eval/report.md
4. serve: Gradio chat with base model + adapter       -> http://127.0.0.1:7860

The longer recipe (more conversations, DPO): tim demo --config configs/demo_full.yaml.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from evaluation import evaluate
from serve import app as serve_app
from synth import synthesize
from train import dpo, sft
from tutorkit import run_main
from tutorkit.config import ConfigParser


@dataclass
class DemoConfig:
    run_dir: str = field(default="runs/demo", metadata={"help": "Where every artifact of the demo goes."})
    synth_config: str = field(default="configs/synth.yaml")
    synth_args: list[str] = field(default_factory=list, metadata={"help": "More --key value for tim synth."})
    sft_config: str = field(default="configs/sft.yaml")
    sft_args: list[str] = field(default_factory=list, metadata={"help": "More --key value for tim train."})
    dpo_config: str = field(default="", metadata={"help": "DPO after SFT with this config ('' = no DPO)."})
    eval_config: str = field(default="configs/eval.yaml")
    serve_config: str = field(default="configs/serve.yaml")
    serve: bool = field(default=True, metadata={"help": "End by serving the chat (false: stop after training)."})


def make_parser() -> ConfigParser:
    return ConfigParser(DemoConfig, prog="tim demo", doc=__doc__)


def _say(msg: str) -> None:
    print(f"\n==> {msg}", file=sys.stderr, flush=True)


def main(args=None):
    cfg, _ = make_parser().parse(args)
    run_dir = Path(cfg.run_dir)
    data_dir, adapter_dir, eval_dir = run_dir / "data", run_dir / "adapter", run_dir / "eval"
    t0 = time.monotonic()

    _say(f"1/4 synthesizing conversations -> {data_dir}")
    synthesize.main(["--config", cfg.synth_config, "--output_dir", str(data_dir), *cfg.synth_args])
    t1 = time.monotonic()

    _say(f"2/4 LoRA fine-tuning -> {adapter_dir}")
    sft.main(["--config", cfg.sft_config, "--dataset_dir", str(data_dir), "--output_dir", str(adapter_dir),
              *cfg.sft_args])  # fmt: skip
    if cfg.dpo_config:
        sft_dir, adapter_dir = adapter_dir, run_dir / "dpo"
        _say(f"2/4 preference tuning (DPO) from {sft_dir} -> {adapter_dir}")
        dpo.main(["--config", cfg.dpo_config, "--preference_dir", str(data_dir), "--sft_adapter", str(sft_dir),
                  "--output_dir", str(adapter_dir)])  # fmt: skip
    t2 = time.monotonic()

    _say(f"3/4 evaluating base vs tuned -> {eval_dir}")
    report = evaluate.main(["--config", cfg.eval_config, "--adapter", str(adapter_dir), "--dataset_dir", str(data_dir),
                            "--output_dir", str(eval_dir)])  # fmt: skip
    t3 = time.monotonic()
    rates, loss = report["pass_rates"], report["held_out_loss"]
    _say(
        f"artifacts: dataset {data_dir}/train.jsonl (report.json beside it); adapter {adapter_dir}; "
        f"metrics {adapter_dir}/metrics.json; evaluation {eval_dir}/report.md. "
        f"synth {t1 - t0:.0f} s, train {t2 - t1:.0f} s, eval {t3 - t2:.0f} s\n"
        f"    test probes passed: tuned {rates['tuned']['overall']:.0%}, base {rates['base']['overall']:.0%}, "
        f"best canned reply {rates['canned']['overall']:.0%} (empty {rates['empty']['overall']:.0%}, "
        f"echo {rates['echo']['overall']:.0%})"
        + (f"; held-out loss on Tim's tokens: base {loss['base']:.3f}, tuned {loss['tuned']:.3f}" if loss else "")
    )
    if cfg.serve:
        _say("4/4 serving Tim (Ctrl-C to stop)")
        # The demo is one developer on localhost: no accounts (a school sets them up: docs/deploy.md).
        serve_app.main(["--config", cfg.serve_config, "--adapter", str(adapter_dir), "--require_login", "false"])


if __name__ == "__main__":
    run_main(main)
