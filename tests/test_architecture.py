"""The module graph runs one way (STYLE.md §1): tasks → observer → model → train → analysis → report → jobs → cli.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``); ``lint-imports`` checks them,
counting imports inside functions and under ``TYPE_CHECKING`` too. Here they run in CI and are shown
to fail on a backward import; and, checked here a second time on grimp's graph, no two modules of
the package and no two of its subpackages import each other, directly or around a loop.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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
        ("analysis/probes.py", "def later():\n    import matplotlib.pyplot"),  # computing never draws
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


def import_graph(src: Path = ROOT / "src") -> dict[str, set[str]]:
    """Module → the modules of ``nrecur`` it imports, by grimp: imports inside functions and under
    ``TYPE_CHECKING`` count (a type a module names is a module it depends on). The package root is left
    out: it re-exports the public API, so it imports everything."""
    code = (
        "import grimp, json\n"
        "graph = grimp.build_graph('nrecur', exclude_type_checking_imports=False, cache_dir=None)\n"
        "print(json.dumps({m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}))\n"
    )
    # In a fresh interpreter, so that a copy of the tree is read from its own path, not this one's nrecur.
    env = {**os.environ, "PYTHONPATH": str(src)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    imports = json.loads(result.stdout)
    return {m: {o for o in imported if o.startswith("nrecur.")} for m, imported in imports.items() if m != "nrecur"}


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between the children of ``nrecur`` (``nrecur.train``, ``nrecur.model``, …)."""
    top = lambda module: ".".join(module.split(".")[:2])  # noqa: E731
    packages: dict[str, set[str]] = {}
    for module, imported in graph.items():
        packages.setdefault(top(module), set()).update(top(o) for o in imported if top(o) != top(module))
    return packages


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (each module imports the next, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for other in sorted(graph.get(module, ())):
            if state.get(other) == 1:
                return path[path.index(other) :] + [other]
            if other not in state:
                found = visit(other)
                if found:
                    return found
        state[module] = 2
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_import_graph_holds_the_package(graph):
    # A graph that lost its modules (grimp's remove_module("nrecur") removes every submodule too) has no cycle.
    assert len(graph) > 50 and "nrecur.train.loop" in graph and "nrecur.tasks.nrecurrence" in graph["nrecur.tasks"]
    assert "nrecur.train.loop" in graph["nrecur.train.session"]


def test_no_import_cycles_between_modules(graph):
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_no_import_cycles_between_packages(graph):
    cycle = find_cycle(package_graph(graph))
    assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    graph = {"nrecur.a": {"nrecur.b"}, "nrecur.b": {"nrecur.c"}, "nrecur.c": set()}
    assert find_cycle(graph) is None
    graph["nrecur.c"].add("nrecur.a")
    assert find_cycle(graph) == ["nrecur.a", "nrecur.b", "nrecur.c", "nrecur.a"]
    assert find_cycle(package_graph({"nrecur.x.a": {"nrecur.y.b"}, "nrecur.y.b": {"nrecur.x.c"}})) == ["nrecur.x", "nrecur.y", "nrecur.x"]


@pytest.mark.parametrize(
    "module, back",
    [
        ("tasks/sampler.py", "def later():\n    from nrecur.tasks import nrecurrence"),  # inside a function
        ("train/callbacks.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nrecur.train.session import train"),
    ],
)
def test_the_cycle_checks_fail_on_a_cycle(tmp_path, module, back):
    copy = tmp_path / "src" / "nrecur"
    shutil.copytree(ROOT / "src" / "nrecur", copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(copy / module, "a") as handle:
        handle.write(f"\n\n{back}\n")
    assert find_cycle(import_graph(tmp_path / "src")) is not None
    result = lint_imports(tmp_path, tmp_path / "src")
    assert result.returncode != 0 and "No cycles are allowed in nrecur." in result.stdout, result.stdout
