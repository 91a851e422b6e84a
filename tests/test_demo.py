"""`tim demo` end to end at tiny size: synth via the local vLLM server -> LoRA -> DPO -> eval -> artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _derive(src: str, dst: Path, **changes) -> Path:
    data = yaml.safe_load((ROOT / src).read_text())
    data.update(changes)
    dst.write_text(yaml.safe_dump(data))
    return dst


def test_demo_runs_every_stage(vllm_server, tmp_path):
    gen_cfg, _ = vllm_server
    # The generator config names the already running test server: `tim synth` (empty base_url)
    # finds it healthy through its pid file and reuses it instead of starting another.
    generator = _derive("configs/generator.yaml", tmp_path / "generator.yaml", port=gen_cfg.port, run_dir=gen_cfg.run_dir)
    synth = _derive("configs/synth.yaml", tmp_path / "synth.yaml", generator_config=str(generator), backend="openai",
                    max_conversations=4, turns=2, tim_max_tokens=40, student_max_tokens=24, validation_fraction=0.25)  # fmt: skip
    sft = _derive("configs/sft.yaml", tmp_path / "sft.yaml", max_steps=2, report_to="none", disable_tqdm=True)
    dpo = _derive("configs/dpo.yaml", tmp_path / "dpo.yaml", max_steps=1, report_to="none", disable_tqdm=True,
                  eval_strategy="no", save_strategy="no")  # fmt: skip
    suite = yaml.safe_load((ROOT / "data/probes.yaml").read_text())
    suite["probes"] = [p for p in suite["probes"] if p["id"] in ("disengaged-1", "disclosure-1", "identity-1")]
    (tmp_path / "probes.yaml").write_text(yaml.safe_dump(suite))
    evaluation = _derive("configs/eval.yaml", tmp_path / "eval.yaml", probes=str(tmp_path / "probes.yaml"), max_new_tokens=16)
    demo = _derive("configs/demo.yaml", tmp_path / "demo.yaml", run_dir=str(tmp_path / "run"),
                   synth_config=str(synth), sft_config=str(sft), dpo_config=str(dpo), eval_config=str(evaluation),
                   synth_args=["--tim_candidates", "4"], serve=False)  # fmt: skip
    r = subprocess.run([str(Path(sys.executable).parent / "tim"), "demo", "--config", str(demo)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    assert json.loads((run / "data/report.json").read_text())["written"] >= 1
    assert (run / "adapter/adapter_model.safetensors").is_file()
    assert (run / "adapter/metrics.json").is_file()
    assert "artifacts:" in r.stderr and str(run / "dpo") in r.stderr
    assert "test probes passed: tuned" in r.stderr and "best canned reply" in r.stderr
    assert (run / "eval/report.md").is_file()
    # DPO ran from the SFT adapter on synthesis's pairs, and its adapter is the one evaluated.
    assert json.loads((run / "dpo/metrics.json").read_text())["sft_adapter"] == str(run / "adapter")
    assert json.loads((run / "eval/report.json").read_text())["adapter"] == str(run / "dpo")
    # The test server is still ours and still up: the demo reused it and left it running.
    from tutorkit.backends.vllm_server import status

    assert status(gen_cfg).startswith("running")
