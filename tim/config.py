"""Stage configs: one YAML per stage in configs/, parsed into dataclasses with TRL's `TrlParser`.

`--config configs/x.yaml` sets the defaults; `--key value` on the command line overrides them.
Before TRL sees the file, every key is checked so that a typo fails with the file, line and key
instead of being ignored.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from tim import TimError


def _config_path(args: Sequence[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--config":
            if i + 1 >= len(args):
                raise TimError("--config needs a YAML file path")
            return args[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def _key_lines(path: Path, text: str) -> dict[str, int]:
    """Line number (1-based) of each top-level key, for error messages."""
    node = yaml.compose(text)
    if node is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise TimError(f"{path}: must be a YAML mapping of key: value")
    return {key.value: key.start_mark.line + 1 for key, _ in node.value}


def check_config_file(parser: argparse.ArgumentParser, path: str | Path) -> dict:
    """Load a stage YAML and refuse unknown keys or values of the wrong type, naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise TimError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        lines = _key_lines(path, text)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise TimError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    actions = {a.dest: a for a in parser._actions}
    for key, value in data.items():
        where = f"{path}:{lines.get(key, '?')}"
        if key == "env":  # TrlParser: environment variables to set
            continue
        if key not in actions or key in ("help", "config"):
            raise TimError(f"{where}: unknown key '{key}'")
        action = actions[key]
        if value is None or action.type is None:
            continue
        if isinstance(value, (dict, list)) and action.nargs not in ("+", "*"):
            if getattr(action.type, "__name__", "") in ("str", "loads"):
                continue  # dict-valued fields (e.g. model_init_kwargs) accept a mapping
            raise TimError(f"{where}: '{key}' expects a single value, got {type(value).__name__}")
        if isinstance(value, (dict, list)):
            continue
        try:
            action.type(str(value) if not isinstance(value, bool) else str(value).lower())
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            raise TimError(f"{where}: '{key}' has an invalid value {value!r}") from None
        if action.choices is not None and value not in action.choices and str(value) not in map(str, action.choices):
            raise TimError(f"{where}: '{key}' must be one of {list(action.choices)}, got {value!r}")
    return data


def parse_config(parser, args: Sequence[str] | None = None, return_extra: bool = False) -> tuple:
    """Parse `--config FILE` plus command-line overrides into the parser's dataclasses.

    With `return_extra`, the argparse namespace of arguments outside the dataclasses (such as a
    positional action) comes last."""
    args = list(sys.argv[1:] if args is None else args)
    # TrlParser only understands the two-word form.
    args = [part for a in args for part in (a.split("=", 1) if a.startswith("--config=") else [a])]
    path = _config_path(args)
    if path is not None:
        check_config_file(parser, path)
    try:
        outputs = parser.parse_args_and_config(args)
    except ValueError as e:  # a dataclass's __post_init__ refused a combination of values
        raise TimError(f"{path or parser.prog}: {' '.join(str(e).split())}") from None
    n = len(parser.dataclass_types)
    extra = outputs[n] if len(outputs) > n else argparse.Namespace()
    return (*outputs[:n], extra) if return_extra else tuple(outputs[:n])


def make_config_parser(dataclass_types, prog: str, doc: str | None):
    """A `TrlParser` whose --help shows the module docstring (the command to run) first."""
    from trl import TrlParser

    parser = TrlParser(
        dataclass_types,
        prog=prog,
        description=(doc or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config; command-line --key value overrides it")
    return parser
