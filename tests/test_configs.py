"""Every shipped YAML loads through the real parser; bad configs fail with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tim import TimError
from tim.config import parse_config

ROOT = Path(__file__).resolve().parent.parent


def _parsers():
    from evaluation.evaluate import make_parser as eval_parser
    from serve.app import make_parser as serve_parser
    from synth.legacy_import import make_parser as import_parser
    from synth.synthesize import make_parser as synth_parser
    from tim.demo import make_parser as demo_parser
    from tim.generator_server import make_parser as generator_parser
    from train.sft import device_defaults
    from train.sft import make_parser as sft_parser

    return {
        "synth.yaml": (synth_parser, []),
        "import.yaml": (import_parser, []),
        "sft.yaml": (sft_parser, device_defaults([])),
        "serve.yaml": (serve_parser, []),
        "eval.yaml": (eval_parser, []),
        "demo.yaml": (demo_parser, []),
        "generator.yaml": (generator_parser, ["status"]),
    }


def test_every_config_is_known_and_parses():
    from tim.persona import load_persona

    parsers = _parsers()
    shipped = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert shipped == set(parsers) | {"persona.yaml", "safeguarding.yaml", "rubric.yaml"}, "a new config needs a parser entry here"
    for name, (make_parser, extra) in parsers.items():
        outputs = parse_config(make_parser(), ["--config", str(ROOT / "configs" / name), *extra])
        assert outputs, name
    from serve.safeguarding import load_safeguard

    assert load_safeguard(ROOT / "configs/safeguarding.yaml").disclosures
    import yaml

    rubric = yaml.safe_load((ROOT / "configs/rubric.yaml").read_text())
    assert set(rubric) == {"system", "prompt", "max_tokens"}
    assert rubric["prompt"].format(behaviour="b", chat="c", reply="r")
    persona = load_persona(ROOT / "configs/persona.yaml")
    prompt = persona.render_system_prompt()
    assert persona.name == "Tim" and "Tim" in prompt and "trusted adult" in prompt


def test_every_config_opens_with_a_comment_naming_its_command():
    for path in (ROOT / "configs").glob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# "), path
        head = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
        assert "tim " in head or "make " in head or "train/sft.py" in head, path


def test_command_line_overrides_config():
    from synth.synthesize import make_parser

    (cfg,) = parse_config(make_parser(), ["--config", "configs/synth.yaml", "--turns", "7"])
    assert cfg.turns == 7 and cfg.topics_file == "data/topics.yaml"


def test_unknown_key_names_file_line_and_key(tmp_path):
    from train.sft import make_parser

    bad = tmp_path / "sft.yaml"
    bad.write_text("# comment\nlearning_rate: 1.0e-4\nlerning_rate: 2.0e-4\n")
    with pytest.raises(TimError) as e:
        parse_config(make_parser(), ["--config", str(bad)])
    assert str(e.value) == f"{bad}:3: unknown key 'lerning_rate'"


def test_wrong_type_and_bad_values_are_refused(tmp_path):
    from synth.synthesize import make_parser

    bad = tmp_path / "synth.yaml"
    bad.write_text("turns: many\n")
    with pytest.raises(TimError, match=r"synth.yaml:1: 'turns' has an invalid value 'many'"):
        parse_config(make_parser(), ["--config", str(bad)])
    bad.write_text("backend: cloud\n")
    with pytest.raises(TimError, match="backend must be 'openai' or 'transformers'"):
        parse_config(make_parser(), ["--config", str(bad)])
    bad.write_text("- a\n- b\n")
    with pytest.raises(TimError, match="must be a YAML mapping"):
        parse_config(make_parser(), ["--config", str(bad)])
    with pytest.raises(TimError, match="config file not found"):
        parse_config(make_parser(), ["--config", str(tmp_path / "missing.yaml")])
