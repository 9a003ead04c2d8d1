"""The module graph runs one way (STYLE.md §1): tasks → observer → model → train → analysis → report → jobs → cli.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``); ``lint-imports`` checks them,
counting imports inside functions too. Here they run in CI, are shown to fail on a backward
import, and no two modules of the package import each other, directly or around a loop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_import_contracts_hold():
    result = lint_imports(ROOT, ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, backward",
    [
        ("tasks/base.py", "from nrecur.observer.results import Posterior"),
        ("observer/bayes.py", "def later():\n    from nrecur.train import config"),  # inside a function counts too
        ("train/data.py", "import nrecur.jobs.main"),
    ],
)
def test_contracts_fail_on_a_backward_import(tmp_path, module, backward):
    copy = tmp_path / "src" / "nrecur"
    shutil.copytree(ROOT / "src" / "nrecur", copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(copy / module, "a") as handle:
        handle.write(f"\n\n{backward}\n")
    result = lint_imports(tmp_path, tmp_path / "src")
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout


def find_cycle(graph: grimp.ImportGraph) -> list[str] | None:
    """A cycle of modules of ``nrecur`` (each imports the next), or None."""
    modules = sorted(m for m in graph.modules if m.startswith("nrecur"))
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for other in sorted(graph.find_modules_directly_imported_by(module)):
            if not other.startswith("nrecur"):
                continue
            if state.get(other) == 1:
                return path[path.index(other) :] + [other]
            if other not in state:
                found = visit(other)
                if found:
                    return found
        state[module] = 2
        path.pop()
        return None

    for module in modules:
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_no_import_cycles():
    graph = grimp.build_graph("nrecur", exclude_type_checking_imports=True, cache_dir=None)
    # The package root re-exports the public API, so everything imports it implicitly; leave it out.
    graph.remove_module("nrecur")
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("nrecur.a", "nrecur.b", "nrecur.c"):
        graph.add_module(name)
    graph.add_import(importer="nrecur.a", imported="nrecur.b")
    graph.add_import(importer="nrecur.b", imported="nrecur.c")
    assert find_cycle(graph) is None
    graph.add_import(importer="nrecur.c", imported="nrecur.a")
    assert find_cycle(graph) == ["nrecur.a", "nrecur.b", "nrecur.c", "nrecur.a"]
