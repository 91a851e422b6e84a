"""Every shipped YAML loads through its real loader, with every value it sets arriving in the
dataclass; bad configs fail with the file, line and key."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tutorkit import TimError
from tutorkit.config import ConfigParser, load_dataclass

ROOT = Path(__file__).resolve().parent.parent


def _stage_parsers():
    from evaluation.evaluate import make_parser as eval_parser
    from evaluation.safeguarding_eval import make_parser as safeguarding_eval_parser
    from serve.app import make_parser as serve_parser
    from synth.legacy_import import make_parser as import_parser
    from synth.synthesize import make_parser as synth_parser
    from tim.demo import make_parser as demo_parser
    from train.guard import make_parser as guard_parser
    from train.judge import make_parser as judge_parser
    from tutorkit.backends.vllm_server import make_parser as generator_parser

    return {
        "synth.yaml": (synth_parser, []),
        "import.yaml": (import_parser, []),
        "serve.yaml": (serve_parser, []),
        "eval.yaml": (eval_parser, []),
        "demo.yaml": (demo_parser, []),
        "generator.yaml": (generator_parser, ["status"]),
        "safeguarding_eval.yaml": (safeguarding_eval_parser, ["eval"]),
        "guard.yaml": (guard_parser, ["train"]),
        "judge.yaml": (judge_parser, ["train"]),
    }


def _same(parsed, raw) -> bool:
    """The value TRL or our parser made of a YAML value is that value (enums, one-item lists)."""
    if isinstance(parsed, enum.Enum):
        parsed = parsed.value
    if isinstance(parsed, list) and not isinstance(raw, list):
        raw = [raw]
    if isinstance(parsed, float) or isinstance(raw, float):
        return float(parsed) == float(raw)
    return parsed == raw


def test_every_stage_config_parses_with_every_value_from_the_file():
    data_files = {"persona.yaml", "safeguarding.yaml", "rubric.yaml"}
    stages = {**_stage_parsers(), "demo_full.yaml": _stage_parsers()["demo.yaml"]}
    shipped = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert shipped == set(stages) | {"sft.yaml", "dpo.yaml"} | data_files, "a new config needs an entry here"
    # configs/gpu/: the GPU recipe (not run here), one file per stage, named like the CPU ones.
    gpu = {f"gpu/{p.name}" for p in (ROOT / "configs/gpu").glob("*.yaml")}
    assert gpu == {f"gpu/{n}" for n in ("generator.yaml", "synth.yaml", "sft.yaml", "dpo.yaml", "eval.yaml", "demo.yaml")}
    stages.update({name: stages[name.removeprefix("gpu/")] for name in gpu if name.removeprefix("gpu/") in stages})
    for name, (make_parser, extra) in stages.items():
        raw = yaml.safe_load((ROOT / "configs" / name).read_text())
        cfg, _ = make_parser().parse(["--config", str(ROOT / "configs" / name), *extra])
        for key, value in raw.items():
            assert _same(getattr(cfg, key), value), (name, key)
        for key in ("synth_config", "sft_config", "dpo_config", "eval_config", "serve_config", "generator_config"):
            assert not getattr(cfg, key, "") or (ROOT / getattr(cfg, key)).is_file(), (name, key)  # names a real file

    from train import dpo, sft
    from tutorkit.config import parse_trl_config

    defaults = sft.device_defaults([])  # on this machine: train on the CPU, bf16 only where it has bf16
    for name, module in (("sft.yaml", sft), ("dpo.yaml", dpo), ("gpu/sft.yaml", sft), ("gpu/dpo.yaml", dpo)):
        raw = yaml.safe_load((ROOT / "configs" / name).read_text())
        outputs = parse_trl_config(module.make_parser(), [*defaults, "--config", str(ROOT / "configs" / name)])
        for key, value in raw.items():
            if f"--{key}" not in defaults:
                (owner,) = [o for o in outputs if hasattr(o, key)][:1]
                assert _same(getattr(owner, key), value), (name, key)
    # Without CUDA the device defaults put training on the CPU; flags typed by the user still win.
    assert sft.device_defaults(["--bf16", "false"])[-2:] == ["--bf16", "false"]


def test_data_files_load_into_their_dataclasses():
    from evaluation.judge import Rubric
    from tutorkit.persona import load_persona
    from tutorkit.safeguarding import load_safeguard

    persona = load_persona(ROOT / "configs/persona.yaml")
    prompt = persona.render_system_prompt()
    assert persona.name == "Tim" and "Tim" in prompt and "trusted adult" in prompt and "{" not in prompt
    assert persona.other_assistants().search("I am SmolLM2") and not persona.other_assistants().search("I am Tim")
    safeguard = load_safeguard(ROOT / "configs/safeguarding.yaml")
    assert {"self_harm", "abuse", "hunger", "danger", "trouble_at_home"} <= set(safeguard.config.disclosures)
    assert safeguard.config.abuse.silence_after == 3
    rubric = load_dataclass(Rubric, ROOT / "configs/rubric.yaml")
    assert "{name}" in rubric.prompt and rubric.max_tokens == 64
    assert "Ada's reply" in rubric.prompt.format(name="Ada", behaviour="b", chat="c", reply="r")


def test_every_config_opens_with_a_comment_naming_its_command():
    for path in [*(ROOT / "configs").glob("*.yaml"), *(ROOT / "configs/gpu").glob("*.yaml")]:
        first = path.read_text().splitlines()[0]
        if path.parent.name == "gpu":
            assert "NOT RUN HERE" in path.read_text(), path
        assert first.startswith("# "), path
        head = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
        assert "tim " in head or "make " in head or "train/sft.py" in head, path


def test_command_line_overrides_config_and_config_overrides_defaults(tmp_path):
    from synth.synthesize import make_parser

    cfg, _ = make_parser().parse(["--config", "configs/synth.yaml", "--turns", "7", "--base_url", "http://a", "http://b",
                                  "--request_seeds", "--temperature", "0.5"])  # fmt: skip
    assert cfg.turns == 7 and cfg.base_url == ["http://a", "http://b"] and cfg.request_seeds is True
    assert cfg.temperature == 0.5 and cfg.max_conversations == 32  # the file's value, not the default 0
    mine = tmp_path / "synth.yaml"
    mine.write_text("base_url: http://one\ntopics_file: 5\n")  # a list of one; a number as text
    cfg, _ = make_parser().parse(["--config", str(mine)])
    assert cfg.base_url == ["http://one"] and cfg.topics_file == "5" and cfg.turns == 3  # default
    with pytest.raises(TimError, match=r"^--turns: invalid value 'x' \(expected a whole number\)$"):
        make_parser().parse(["--turns", "x"])


def test_unknown_key_names_file_line_and_key(tmp_path):
    from train.sft import make_parser
    from tutorkit.config import parse_trl_config

    bad = tmp_path / "sft.yaml"
    bad.write_text("# comment\nlearning_rate: 1.0e-4\nlerning_rate: 2.0e-4\n")
    with pytest.raises(TimError) as e:
        parse_trl_config(make_parser(), ["--config", str(bad)])
    assert str(e.value) == f"{bad}:3: unknown key 'lerning_rate'"
    bad.write_text("learning_rate: fast\n")
    with pytest.raises(TimError, match=rf"^{bad}:1: 'learning_rate' has an invalid value 'fast'"):
        parse_trl_config(make_parser(), ["--config", str(bad)])


def test_wrong_type_and_bad_values_are_refused(tmp_path):
    from synth.synthesize import make_parser

    bad = tmp_path / "synth.yaml"
    bad.write_text("mode: roleplay\nturns: many\n")
    with pytest.raises(TimError, match=rf"^{bad}:2: 'turns' has an invalid value 'many' \(expected a whole number\)$"):
        make_parser().parse(["--config", str(bad)])
    bad.write_text("request_seeds: sometimes\n")
    with pytest.raises(TimError, match=r"synth.yaml:1: 'request_seeds' has an invalid value 'sometimes'"):
        make_parser().parse(["--config", str(bad)])
    bad.write_text("backend: cloud\n")
    with pytest.raises(TimError, match=rf"^{bad}: backend must be auto, openai, llamacpp or transformers, got 'cloud'$"):
        make_parser().parse(["--config", str(bad)])
    bad.write_text("- a\n- b\n")
    with pytest.raises(TimError, match="must be a YAML mapping"):
        make_parser().parse(["--config", str(bad)])
    bad.write_text("turns: [1\n")
    with pytest.raises(TimError, match="not valid YAML"):
        make_parser().parse(["--config", str(bad)])
    with pytest.raises(TimError, match="config file not found"):
        make_parser().parse(["--config", str(tmp_path / "missing.yaml")])


@dataclass
class Item:
    name: str
    size: int = 1

    def __post_init__(self):
        if self.size > 10:
            raise ValueError("size must be at most 10")


@dataclass
class Catalog:
    items: list[Item] = field(default_factory=list)
    tags: dict[str, list[str]] = field(default_factory=dict)


def test_data_file_errors_name_the_line_of_the_entry(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("items:\n  - name: a\n  - name: b\n    size: 2\ntags: {x: [y]}\n")
    catalog = load_dataclass(Catalog, path)
    assert catalog.items == [Item("a"), Item("b", 2)] and catalog.tags == {"x": ["y"]}
    for text, error in [
        ("items:\n  - name: a\n  - name: b\n    colour: red\n", ":4: unknown key 'items[1].colour'"),
        ("items:\n  - name: a\n  - size: 2\n", ":3: items[1]: missing key 'name'"),
        ("items:\n  - name: a\n    size: big\n", ":3: items[0].size must be a whole number, got 'big'"),
        ("items:\n  - name: a\n  - name: b\n    size: 11\n", ":3: items[1]: size must be at most 10"),
        ("tags: [x, y]\n", ":1: tags must be a mapping, got"),
        ("items: 3\n", ":1: items must be a list"),
    ]:  # fmt: skip
        path.write_text(text)
        with pytest.raises(TimError) as e:
            load_dataclass(Catalog, path)
        assert str(e.value).startswith(f"{path}{error}"), (str(e.value), error)


@dataclass
class Options:
    db: str = "x.sqlite"
    role: str = "student"


def test_config_parser_keeps_extra_arguments():
    parser = ConfigParser(Options, prog="tim users", doc="users")
    parser.add_argument("action", choices=["add", "list"])
    parser.add_argument("name", nargs="?", default=None)
    options, extra = parser.parse(["add", "amy", "--role", "staff"])
    assert (options.role, options.db, extra.action, extra.name) == ("staff", "x.sqlite", "add", "amy")
    with pytest.raises(SystemExit):  # argparse's own error: no prefix matching of --rol
        parser.parse(["list", "--rol", "staff"])
