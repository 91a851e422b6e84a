"""GGUF for llama.cpp and Ollama from a trained LoRA adapter, built with the `gguf` package.

Both files start from the base model's GGUF (the embedded model ships as one; for another base,
convert it once with llama.cpp's convert_hf_to_gguf.py and pass --base_gguf), so the tokenizer,
its pre-tokenizer and every architecture key come over unchanged:
- `tim-lora.gguf`: the adapter as a GGUF LoRA for that base (llama.cpp `--lora`, Ollama ADAPTER);
- `tim-<type>.gguf`: base + adapter merged (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16 or F32);
- `Modelfile`: Ollama's recipe (FROM, ADAPTER, TEMPLATE, stop token, the persona's SYSTEM).
The chat template saved at training time goes into the GGUF (`tokenizer.chat_template`).

Weights: HF keeps q/k rows in rotary "halves" order, GGUF (llama arch) interleaved; llama.cpp's
converter permutes them, so the adapter's q/k lora_B (their output rows) is permuted the same way.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tutorkit import TimError
from tutorkit.chat_template import without_generation_tags

QUANT_TYPES = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "f16", "f32")


def _qtype(name: str):
    from gguf import GGMLQuantizationType

    if name not in QUANT_TYPES:
        raise TimError(f"gguf_type must be one of {', '.join(QUANT_TYPES)}, got {name!r}")
    return GGMLQuantizationType[name.upper()]


def permute_rotary(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf LlamaModel.permute, on the output rows of a q/k matrix."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class BaseGGUF:
    """The base model's GGUF: its keys, tensors, and how HF module names map onto its tensors."""

    def __init__(self, path: Path):
        import gguf

        if not path.is_file():
            raise TimError(f"base GGUF not found: {path}")
        self.path = path
        self.reader = gguf.GGUFReader(str(path))
        self.arch = self.reader.fields["general.architecture"].contents()
        self.n_blocks = self.value(f"{self.arch}.block_count")
        self.n_head = self.value(f"{self.arch}.attention.head_count")
        self.n_head_kv = self.value(f"{self.arch}.attention.head_count_kv", self.n_head)
        arch_id = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == self.arch), None)
        if arch_id is None:
            raise TimError(f"{path}: architecture {self.arch!r} unknown to the gguf package")
        self.names = gguf.get_tensor_name_map(arch_id, self.n_blocks)
        self.tensors = {t.name: t for t in self.reader.tensors}

    def value(self, key: str, default=None):
        field = self.reader.fields.get(key)
        return field.contents() if field is not None else default

    def tensor_name(self, hf_module: str) -> str:
        """'model.layers.3.self_attn.q_proj' -> 'blk.3.attn_q.weight' (checked to exist)."""
        name = self.names.get_name(hf_module)
        if name is None or f"{name}.weight" not in self.tensors:
            raise TimError(f"adapter module {hf_module!r} has no tensor in {self.path}")
        return f"{name}.weight"

    def permuted(self, hf_module: str, rows: np.ndarray) -> np.ndarray:
        if self.arch != "llama":
            return rows
        if hf_module.endswith("q_proj"):
            return permute_rotary(rows, self.n_head, self.n_head)
        if hf_module.endswith("k_proj"):
            return permute_rotary(rows, self.n_head, self.n_head_kv)
        return rows


def read_adapter(adapter_dir: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float, int]:
    """{hf module: (lora_A [r, in], lora_B [out, r])}, PEFT's scale, rank. float32 numpy."""
    from safetensors.numpy import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("use_dora"):
        raise TimError("DoRA adapters have no GGUF LoRA form; export with --merge true instead")
    if config.get("modules_to_save"):
        raise TimError("adapters with modules_to_save cannot be exported as a GGUF LoRA")
    rank, alpha = config["r"], config["lora_alpha"]
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in weights.items():
        module, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
        pairs.setdefault(module, {})[kind.removesuffix(".weight")] = value.astype(np.float32)
    if any(set(p) != {"A", "B"} for p in pairs.values()):
        raise TimError(f"{adapter_dir}: unexpected tensors in adapter_model.safetensors")
    return {m: (p["A"], p["B"]) for m, p in pairs.items()}, scale, rank


def _copy_keys(base: BaseGGUF, writer, skip: set[str]) -> None:
    import gguf

    for key, field in base.reader.fields.items():
        if key.startswith("GGUF.") or key in skip:
            continue
        value, kind = field.contents(), field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, value)
        else:
            writer.add_key_value(key, value, kind)


def write_lora(base: BaseGGUF, adapter_dir: Path, out: Path) -> Path:
    import gguf

    lora, scale, rank = read_adapter(adapter_dir)
    writer = gguf.GGUFWriter(str(out), base.arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("general.name", f"tim-lora ({adapter_dir.name})")
    writer.add_string("adapter.type", "lora")
    # llama.cpp scales by alpha / rank; PEFT by `scale`, so write the alpha that gives the same.
    writer.add_float32("adapter.lora.alpha", float(scale * rank))
    for module, (a, b) in sorted(lora.items()):
        name = base.tensor_name(module)
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(base.permuted(module, b)))
    _finish(writer)
    return out


def write_merged(base: BaseGGUF, adapter_dir: Path, out: Path, gguf_type: str, chat_template: str) -> Path:
    import gguf
    from gguf.quants import dequantize, quantize

    qtype = _qtype(gguf_type)
    lora, scale, _ = read_adapter(adapter_dir)
    deltas = {base.tensor_name(m): base.permuted(m, (b @ a) * scale) for m, (a, b) in lora.items()}
    writer = gguf.GGUFWriter(str(out), base.arch)
    _copy_keys(base, writer, skip={"general.architecture", "general.file_type", "general.quantization_version",
                                   "tokenizer.chat_template", "general.name"})  # fmt: skip
    writer.add_string("general.name", f"tim ({adapter_dir.name}, {gguf_type})")
    writer.add_chat_template(without_generation_tags(chat_template))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    for name, tensor in base.tensors.items():
        w = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if name in deltas:
            w = w + deltas.pop(name)
        if w.ndim == 1:  # norms stay float32, as llama.cpp's converter keeps them
            writer.add_tensor(name, w)
        elif qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, w)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, w.astype(np.float16))
        elif w.shape[-1] % block:
            raise TimError(f"{name}: rows of {w.shape[-1]} do not split into {gguf_type} blocks of {block}")
        else:
            writer.add_tensor(name, quantize(w, qtype), raw_dtype=qtype)
    _finish(writer)
    return out


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def ollama_modelfile(base_gguf: Path, merged: Path | None, lora: Path | None, chat_template: str, system: str) -> str:
    """Ollama's recipe: the merged file, or the base with the adapter; ChatML as a Go template."""
    lines = [f"FROM {(merged or base_gguf).resolve()}"]
    if merged is None and lora is not None:
        lines.append(f"ADAPTER {lora.resolve()}")
    if "<|im_start|>" in chat_template:  # the shipped ChatML template, written in Ollama's syntax
        # Ollama puts SYSTEM into .Messages as the first message when a chat has none.
        lines += ['TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}', "{{ .Content }}<|im_end|>",
                  '{{ end }}<|im_start|>assistant', '"""', 'PARAMETER stop "<|im_end|>"']  # fmt: skip
    lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"
