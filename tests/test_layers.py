"""The floors of the code, read from every module's imports with `ast` (function-level imports
included):

    tim        the command line and the demo: may import anything; nothing imports it
    synth, train, serve, evaluation   the stages: import the ground and themselves only
               (one crossing: serve/artifacts.py may import train.export)
    tutorkit   the ground: imports no stage and not the command line
    scripts    benchmarks and tools: stages and the ground, not the command line
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GROUND = "tutorkit"
STAGES = {"synth", "train", "serve", "evaluation"}
TOP = "tim"
FIRST_PARTY = {GROUND, TOP, *STAGES}
# (importing module, imported module prefix): the crossings the design allows.
ALLOWED = {("serve.artifacts", "train.export")}


def imported_modules(module: str, source: str) -> list[tuple[int, str]]:
    """(line, dotted name) of everything a module imports; `from a import b` counts as `a.b`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def violations(module: str, source: str) -> list[str]:
    """Each import of `module` that goes the wrong way, as 'module:line imports target: why'."""
    layer = module.split(".")[0]
    bad = []
    for line, target in imported_modules(module, source):
        top = target.split(".")[0]
        if top not in FIRST_PARTY or top in (layer, GROUND) or layer == TOP:
            continue  # third-party, its own package, the ground (for anyone), or from the top floor
        if top == TOP:
            why = "nothing may import the command line or the demo"
        elif layer == GROUND:
            why = "the ground imports no stage"
        elif layer in STAGES and any(module == m and target.startswith(t) for m, t in ALLOWED):
            continue
        elif layer in STAGES:
            why = "a stage imports only the ground (serve reaches train.export through serve/artifacts.py)"
        else:
            continue  # scripts/ may use the stages
        bad.append(f"{module}:{line} imports {target}: {why}")
    return bad


def project_modules() -> dict[str, Path]:
    modules = {}
    for folder in (*FIRST_PARTY, "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def test_no_module_imports_across_a_forbidden_direction():
    modules = project_modules()
    assert {"tutorkit.config", "tutorkit.backends", "serve.app", "tim.cli", "train.sft"} <= set(modules)
    found = [v for name, path in modules.items() for v in violations(name, path.read_text(encoding="utf-8"))]
    assert found == []


@pytest.mark.parametrize(
    "module, source, allowed",
    [
        ("tutorkit.backends.x", "from serve.tutor import Tutor", False),
        ("tutorkit.x", "def f():\n    import synth.gates\n", False),  # hidden in a function
        ("tutorkit.x", "from tim import cli", False),
        ("synth.x", "from tim.cli import main", False),
        ("train.sft", "if __name__ == '__main__':\n    from tim.cli import main\n", False),
        ("evaluation.evaluate", "from serve.tutor import Tutor", False),
        ("evaluation.x", "from serve import transcripts", False),
        ("serve.web_ui", "from train.export import merge", False),  # only artifacts.py may
        ("serve.artifacts", "from train.sft import main", False),  # and only train.export
        ("serve.artifacts", "from train import sft", False),
        ("scripts.bench", "from tim.demo import main", False),
        ("serve.artifacts", "from train.export import merge", True),
        ("serve.artifacts", "from train import export", True),
        ("serve.app", "from serve.tutor import Tutor\nfrom tutorkit.backends import open_backend", True),
        ("serve.app", "from .tutor import Tutor", True),
        ("tutorkit.persona", "from .config import load_dataclass\nimport yaml", True),
        ("tim.demo", "from synth import synthesize\nfrom serve import app", True),
        ("scripts.bench_serve", "from serve.engine import backend_spec", True),
    ],
)  # fmt: skip
def test_the_check_catches_a_planted_import(module, source, allowed):
    """A synthetic module per rule: the check must fail on each forbidden import."""
    assert (violations(module, source) == []) is allowed, violations(module, source)


def test_every_package_says_what_it_holds_and_may_import():
    for package in FIRST_PARTY:
        doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text(encoding="utf-8"))) or ""
        assert "May import" in doc and len(doc.split()) > 25, package
