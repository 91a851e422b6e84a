"""The files serving builds from a trained adapter once and reuses while the adapter is the same:
the merged model (vLLM on CPUs) and the GGUF export (llama.cpp). Each cache is stamped with the
sha256 of the adapter's weights and the settings it was made with.

The only module of serve/ that imports training code, and only train.export's two functions,
which take plain arguments (an adapter directory in, files out).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from train.export import export_gguf, merge


def adapter_digest(adapter: Path) -> str:
    """What the caches are keyed on: the adapter's weights."""
    return hashlib.sha256((adapter / "adapter_model.safetensors").read_bytes()).hexdigest()


def merged_model(adapter: Path, run_dir: Path, model: str) -> Path:
    """Base `model` + adapter merged once into run_dir/merged; reused while the adapter file and
    the base are the same. The base is the serve config's, never the path the adapter recorded
    on the machine it was trained on."""
    digest = adapter_digest(adapter)
    out = run_dir / "merged"
    stamp = out / "tim-merged-from.json"
    if stamp.is_file():
        recorded = json.loads(stamp.read_text())
        if (recorded.get("adapter_sha256"), recorded.get("base")) == (digest, model):
            return out
    print(f"tim serve: merging {adapter} into the base model for vLLM -> {out}", file=sys.stderr, flush=True)
    merge(adapter, out, model=model)
    stamp.write_text(json.dumps({"adapter": str(adapter.resolve()), "adapter_sha256": digest, "base": model}) + "\n")
    return out


def gguf_files(adapter: Path, out: Path, gguf_type: str, merged: bool, base_gguf: str, model: str) -> dict[str, Path]:
    """The adapter exported to GGUF once into `out` ({"base", "lora", "merged"?, "modelfile"});
    reused while the adapter and these settings match."""
    wanted = {"adapter_sha256": adapter_digest(adapter), "merged": merged, "type": gguf_type, "base": base_gguf}
    stamp = out / "tim-gguf-from.json"
    if stamp.is_file():
        recorded = json.loads(stamp.read_text())
        if recorded.get("wanted") == wanted:
            return {k: Path(v) for k, v in recorded["files"].items()}
    print(f"tim serve: exporting {adapter} to GGUF for llama.cpp -> {out}", file=sys.stderr, flush=True)
    files = export_gguf(adapter, out, gguf_type, merged=merged, base_gguf=base_gguf, model=model)
    stamp.write_text(json.dumps({"wanted": wanted, "files": {k: str(v) for k, v in files.items()}}) + "\n")
    return files
