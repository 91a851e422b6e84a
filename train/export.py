"""Export a trained adapter for serving without PEFT.

    tim export --adapter runs/sft --merge true --output_dir runs/sft-merged       HF model (vLLM)
    tim export --adapter runs/sft --gguf true --output_dir runs/sft-gguf          llama.cpp / Ollama
        [--gguf_type q8_0|q4_0|q4_1|q5_0|q5_1|f16|f32] [--gguf_merged false] [--base_gguf FILE]

Merged HF weights are what vLLM serves fastest on CPUs (a LoRA adapter in vLLM's CPU build
decodes 3-6x slower). GGUF (train/gguf_export.py) writes the adapter as a GGUF LoRA for the base
model's GGUF, base + adapter merged at the chosen type, and an Ollama Modelfile. The tokenizer
and the chat template saved at training time go along either way.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tutorkit import TimError, run_main
from tutorkit.config import ConfigParser
from tutorkit.model_files import embedded_gguf_path, resolve_model


@dataclass
class ExportConfig:
    adapter: str = field(default="runs/sft", metadata={"help": "Directory written by `tim train`."})
    output_dir: str = field(default="runs/sft-merged")
    merge: bool = field(default=False, metadata={"help": "Write base + adapter as one full HF model."})
    model: str = field(default="", metadata={"help": "Base model; default: the one recorded in the adapter."})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16 for the merged weights."})
    gguf: bool = field(default=False, metadata={"help": "Write GGUF files for llama.cpp and Ollama."})
    gguf_type: str = field(default="q8_0", metadata={"help": "Merged GGUF type: q8_0 q4_0 q4_1 q5_0 q5_1 f16 f32."})
    gguf_merged: bool = field(default=True, metadata={"help": "gguf: also write base + adapter merged."})
    base_gguf: str = field(default="", metadata={"help": "The base model as GGUF; default: the embedded one."})
    persona_config: str = field(default="configs/persona.yaml", metadata={"help": "SYSTEM of the Modelfile."})


def _base_name(adapter_dir: Path, model: str) -> str:
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise TimError(f"no trained adapter in {adapter_dir} (adapter_config.json missing)")
    return model or json.loads(config_file.read_text())["base_model_name_or_path"]


def merge(adapter_dir: Path, output_dir: Path, dtype: str = "float32", model: str = "") -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = resolve_model(_base_name(adapter_dir, model))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=getattr(torch, dtype))
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    output_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(output_dir)
    return output_dir


def export_gguf(adapter_dir: Path, output_dir: Path, gguf_type: str = "q8_0", merged: bool = True,
                base_gguf: str = "", model: str = "", system_prompt: str = "") -> dict[str, Path]:  # fmt: skip
    """Writes tim-lora.gguf, tim-<type>.gguf (if merged) and Modelfile; returns their paths."""
    from tutorkit.chat_template import load_template
    from train import gguf_export

    base_name = _base_name(adapter_dir, model)
    if base_gguf:
        base_path = Path(base_gguf)
    elif base_name == "embedded" or Path(base_name).resolve() == resolve_model("embedded").resolve():
        base_path = embedded_gguf_path()
    else:
        raise TimError(f"the base model {base_name!r} has no GGUF here: convert it with llama.cpp's "
                       "convert_hf_to_gguf.py and pass --base_gguf FILE")  # fmt: skip
    base = gguf_export.BaseGGUF(base_path)
    template = load_template(adapter_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = {"base": base_path, "lora": gguf_export.write_lora(base, adapter_dir, output_dir / "tim-lora.gguf")}
    if merged:
        files["merged"] = gguf_export.write_merged(base, adapter_dir, output_dir / f"tim-{gguf_type}.gguf", gguf_type,
                                                   template)  # fmt: skip
    files["modelfile"] = output_dir / "Modelfile"
    files["modelfile"].write_text(
        gguf_export.ollama_modelfile(base_path, files.get("merged"), files["lora"], template, system_prompt)
    )
    return files


def make_parser() -> ConfigParser:
    return ConfigParser(ExportConfig, prog="tim export", doc=__doc__)


def main(args=None) -> Path:
    cfg, _ = make_parser().parse(args)
    if not cfg.merge and not cfg.gguf:
        raise TimError("nothing to export: pass --merge true (HF model) and/or --gguf true (llama.cpp, Ollama)")
    out = Path(cfg.output_dir)
    if cfg.merge:
        merge(Path(cfg.adapter), out, cfg.dtype, cfg.model)
        print(f"tim export: merged model in {out}", file=sys.stderr)
    if cfg.gguf:
        from tutorkit.persona import load_persona

        system = load_persona(cfg.persona_config).render_system_prompt()
        files = export_gguf(Path(cfg.adapter), out, cfg.gguf_type, cfg.gguf_merged, cfg.base_gguf, cfg.model, system)
        for kind, path in files.items():
            print(f"tim export: {kind}: {path}", file=sys.stderr)
    return out


if __name__ == "__main__":
    run_main(main)
