"""YAML read into dataclasses, with errors that name the file, the line and the key.

Two kinds of YAML file, one loader each:

- **Data files** with no command line (the persona, the topic and scenario catalog, the
  safeguarding rules, the probe suite, the rubric): `load_dataclass(cls, path)` builds `cls` from
  the file, nested dataclasses, lists and mappings included. A dataclass's `__post_init__` may
  refuse a value by raising ValueError; the error then names the file and the line of that entry.
- **Stage configs** (`configs/<stage>.yaml`): `ConfigParser(Cls, prog=..., doc=...)` reads
  `--config FILE`, and `--key value` on the command line overrides any key of the file.
  `train/sft.py`, whose keys are TRL's own dataclasses, uses TRL's `TrlParser` instead, through
  `parse_trl_config`, which checks the file the same way first.

Types come from the dataclass annotations: str, int, float, bool, list[...], dict[str, ...],
Literal, Enum, X | None, and nested dataclasses (data files only).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tutorkit import TimError

T = TypeVar("T")


class _Invalid(Exception):
    """A value that does not fit its type (turned into a TimError with file:line by the caller)."""


# ---------------------------------------------------------------------------------------------
# Values against annotations


def _type_hints(cls) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved here: accept any value for it
        return {f.name: Any for f in dataclasses.fields(cls)}


def _is_list(hint) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) in (list, tuple) or hint in (list, tuple)


def _is_bool(hint) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return all(a is bool for a in typing.get_args(hint) if a is not type(None))
    return hint is bool


def coerce(hint, value):
    """`value` (from YAML, or a command-line string) as the annotated type; _Invalid if it is not."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(option, value)
            except _Invalid:
                continue
        raise _Invalid
    if value is None:
        raise _Invalid
    if origin is typing.Literal:
        for choice in args:
            if value == choice or str(value) == str(choice):
                return choice
        raise _Invalid
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, list):  # `base_url: http://...` is a list of one
            value = [value]
        return [coerce(args[0], v) for v in value] if args else value
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _Invalid
        return {k: coerce(args[1], v) for k, v in value.items()} if args else value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise _Invalid
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise _Invalid from None
        raise _Invalid
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise _Invalid from None
        raise _Invalid
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Invalid
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if value in {e.value for e in hint} or value in hint.__members__:
            return value
        raise _Invalid
    return value  # a type this loader does not know: left to the dataclass


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (list, tuple) or hint in (list, tuple):
        return "a list" + (f" of {_describe(args[0])}" if args else "")
    if origin is dict or hint is dict:
        return "a mapping"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(str(e.value) for e in hint)
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(hint, str(hint))


# ---------------------------------------------------------------------------------------------
# YAML files


def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """(data, node tree) of a YAML file; missing file or bad YAML as one TimError line."""
    if not path.is_file():
        raise TimError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as e:
        raise TimError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _scalar(node: yaml.Node):
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _build(hint, node: yaml.Node, path: Path, key: str):
    """The value of `node` as `hint`, recursing into dataclasses, lists and mappings."""
    where = f"{path}:{_line(node)}"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if isinstance(node, yaml.ScalarNode) and _scalar(node) is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _build(options[0], node, path, key)
    elif dataclasses.is_dataclass(hint):
        if not isinstance(node, yaml.MappingNode):
            raise TimError(f"{where}: {key or 'the file'} must be a mapping of key: value")
        return _build_dataclass(hint, node, path, key)
    elif origin in (list, tuple) and args and _structured(args[0]):
        if not isinstance(node, yaml.SequenceNode):
            raise TimError(f"{where}: {key} must be a list")
        return [_build(args[0], item, path, f"{key}[{i}]") for i, item in enumerate(node.value)]
    elif origin is dict and args and _structured(args[1]):
        if not isinstance(node, yaml.MappingNode):
            raise TimError(f"{where}: {key} must be a mapping")
        return {k.value: _build(args[1], v, path, f"{key}.{k.value}") for k, v in node.value}
    value = _scalar(node)
    try:
        return coerce(hint, value)
    except _Invalid:
        raise TimError(f"{where}: {key} must be {_describe(hint)}, got {value!r}") from None


def _structured(hint) -> bool:
    """A type whose entries need their own line numbers (dataclasses inside lists and dicts)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return True
    if origin in (typing.Union, types.UnionType, list, tuple, dict):
        return any(_structured(a) for a in args)
    return False


def _build_dataclass(cls, node: yaml.MappingNode, path: Path, key: str):
    hints = _type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix = f"{key}." if key else ""
    kwargs = {}
    for k, v in node.value:
        name = k.value
        if name not in known:
            raise TimError(f"{path}:{_line(k)}: unknown key '{prefix}{name}' (known: {', '.join(known)})")
        kwargs[name] = _build(hints[name], v, path, f"{prefix}{name}")
    for name, f in known.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TimError(f"{path}:{_line(node)}: {key or 'the file'}: missing key '{name}'")
    try:
        return cls(**kwargs)
    except (ValueError, TimError) as e:
        raise TimError(f"{path}:{_line(node)}: {key + ': ' if key else ''}{e}") from None


def load_dataclass(cls: type[T], path: str | Path) -> T:
    """A data file (persona, catalog, safeguarding, probes, rubric) as an instance of `cls`."""
    path = Path(path)
    data, node = _read_yaml(path)
    if node is None:
        node = yaml.compose("{}")
    if not isinstance(node, yaml.MappingNode):
        raise TimError(f"{path}: must be a YAML mapping of key: value")
    return _build_dataclass(cls, node, path, "")


def _config_values(path: Path, dataclass_types: Sequence[type], allowed_extra: tuple[str, ...] = ()) -> dict:
    """The top-level keys of a stage config, each checked against its dataclass field."""
    data, node = _read_yaml(path)
    if data is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise TimError(f"{path}: must be a YAML mapping of key: value")
    hints = {}
    for cls in dataclass_types:
        cls_hints = _type_hints(cls)
        hints.update({f.name: cls_hints[f.name] for f in dataclasses.fields(cls) if f.init})
    values = {}
    for k, _ in node.value:
        name, where = k.value, f"{path}:{_line(k)}"
        if name in allowed_extra:
            continue
        if name not in hints:
            raise TimError(f"{where}: unknown key '{name}'")
        value = data[name]
        try:
            values[name] = coerce(hints[name], value)
        except _Invalid:
            raise TimError(f"{where}: '{name}' has an invalid value {value!r} (expected {_describe(hints[name])})") from None
    return values


# ---------------------------------------------------------------------------------------------
# Stage configs: --config FILE plus --key value


class ConfigParser(argparse.ArgumentParser):
    """A stage's command line: `--config FILE` and one `--key value` per dataclass field.

    `parse(args)` returns one instance per dataclass (command line over file over defaults),
    then an argparse namespace with any other arguments the stage added (a positional action)."""

    def __init__(self, *dataclass_types: type, prog: str, doc: str | None):
        super().__init__(prog=prog, description=(doc or "").strip(), allow_abbrev=False,
                         formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)  # fmt: skip
        self.dataclass_types = dataclass_types
        self.add_argument("--config", metavar="FILE", help="YAML config; --key value on the command line overrides it")
        for cls in dataclass_types:
            hints = _type_hints(cls)
            for f in dataclasses.fields(cls):
                hint = hints[f.name]
                default = f.default if f.default is not dataclasses.MISSING else (
                    f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # fmt: skip
                help_text = f"{f.metadata.get('help', '')} (default: {default!r})".strip()
                if _is_list(hint):  # --key a b, or --key=a --key=b (for values that start with "--")
                    self.add_argument(f"--{f.name}", nargs="*", action="extend", metavar="VALUE", help=help_text)
                elif _is_bool(hint):  # `--merge` alone means true, as in TRL's parser
                    self.add_argument(f"--{f.name}", nargs="?", const="true", metavar="true|false", help=help_text)
                else:
                    self.add_argument(f"--{f.name}", metavar=f.name.upper(), help=help_text)

    def parse(self, args: Sequence[str] | None = None) -> tuple:
        given = vars(self.parse_args(list(sys.argv[1:] if args is None else args)))
        path = given.pop("config", None)
        from_file = _config_values(Path(path), self.dataclass_types) if path else {}
        instances, used = [], set()
        for cls in self.dataclass_types:
            hints = _type_hints(cls)
            kwargs = {}
            for f in dataclasses.fields(cls):
                used.add(f.name)
                if f.name in given:
                    try:
                        kwargs[f.name] = coerce(hints[f.name], given[f.name])
                    except _Invalid:
                        raise TimError(f"--{f.name}: invalid value {given[f.name]!r} "
                                       f"(expected {_describe(hints[f.name])})") from None  # fmt: skip
                elif f.name in from_file:
                    kwargs[f.name] = from_file[f.name]
            try:
                instances.append(cls(**kwargs))
            except ValueError as e:  # __post_init__ refused a combination of values
                raise TimError(f"{path or self.prog}: {' '.join(str(e).split())}") from None
        extra = argparse.Namespace(**{k: v for k, v in given.items() if k not in used})
        return (*instances, extra)


# ---------------------------------------------------------------------------------------------
# train/sft.py: TRL's own parser, with the same file check first


def parse_trl_config(parser, args: Sequence[str] | None = None) -> tuple:
    """`parser` is a `trl.TrlParser` (with a --config argument); returns its dataclasses.

    The file is checked here first, against the parser's dataclasses, so that a typo or a bad
    value fails with file, line and key instead of being ignored or failing deep inside TRL."""
    args = list(sys.argv[1:] if args is None else args)
    args = [part for a in args for part in (a.split("=", 1) if a.startswith("--config=") else [a])]
    path = None
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise TimError("--config needs a YAML file path")
        path = args[i + 1]
        _config_values(Path(path), parser.dataclass_types, allowed_extra=("env",))  # env: TrlParser's env vars
    try:
        outputs = parser.parse_args_and_config(args)
    except ValueError as e:  # a dataclass's __post_init__ refused a combination of values
        raise TimError(f"{path or parser.prog}: {' '.join(str(e).split())}") from None
    return tuple(outputs[: len(parser.dataclass_types)])
