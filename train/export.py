"""Export a trained adapter: merge it into the base model for serving without PEFT.

    tim export --adapter runs/sft --merge --output_dir runs/sft-merged

Merged weights are what vLLM serves fastest on CPUs (a LoRA adapter in vLLM's CPU build decodes
3-6x slower). The tokenizer, with the chat template saved at training time, is copied along.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tim import TimError
from tim.config import make_config_parser, parse_config
from tim.model_files import resolve_model


@dataclass
class ExportConfig:
    adapter: str = field(default="runs/sft", metadata={"help": "Directory written by `tim train`."})
    output_dir: str = field(default="runs/sft-merged")
    merge: bool = field(default=False, metadata={"help": "Write base + adapter as one full model."})
    model: str = field(default="", metadata={"help": "Base model; default: the one recorded in the adapter."})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16 for the merged weights."})


def merge(adapter_dir: Path, output_dir: Path, dtype: str = "float32", model: str = "") -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise TimError(f"no trained adapter in {adapter_dir} (adapter_config.json missing)")
    base = resolve_model(model or json.loads(config_file.read_text())["base_model_name_or_path"])
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=getattr(torch, dtype))
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    output_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(output_dir)
    return output_dir


def make_parser():
    return make_config_parser((ExportConfig,), prog="tim export", doc=__doc__)


def main(args=None) -> Path:
    (cfg,) = parse_config(make_parser(), args)
    if not cfg.merge:
        raise TimError("nothing to export: pass --merge (GGUF export comes with the llama.cpp backend)")
    out = merge(Path(cfg.adapter), Path(cfg.output_dir), cfg.dtype, cfg.model)
    print(f"tim export: merged model in {out}", file=sys.stderr)
    return out


if __name__ == "__main__":
    from tim.cli import run_reporting_errors

    run_reporting_errors(main)
