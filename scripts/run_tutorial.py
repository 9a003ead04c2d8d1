"""Re-execute the tutorial notebook (docs/tutorial.ipynb) in place, so its stored outputs are a real run's.

    .venv/bin/python scripts/run_tutorial.py [NOTEBOOK]

Every cell runs in a fresh kernel (the ``python3`` kernel of this interpreter, from ipykernel), in a temporary
working directory; a cell that raises stops it and leaves the file as it was. The documentation site shows the
stored outputs as they are (mkdocs-jupyter with ``execute: false``). Prints the wall and CPU time of the run.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "tutorial.ipynb"
TIMEOUT = 600
"""Seconds one cell may take before the run fails."""


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def execute(path: Path, cwd: str | os.PathLike) -> nbformat.NotebookNode:
    """``path``'s notebook with every cell executed in a fresh kernel started in ``cwd``; raises on a cell error."""
    notebook = nbformat.read(path, as_version=4)
    # record_timing off: no timestamps in the cells' metadata, so re-running changes only what the outputs say.
    NotebookClient(notebook, timeout=TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}, record_timing=False).execute()
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", nargs="?", type=Path, default=NOTEBOOK, help="the notebook to re-execute (default: %(default)s)")
    args = parser.parse_args(argv)
    start, cpu = time.perf_counter(), children_cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="nrecur-tutorial-") as cwd:
        notebook = execute(args.notebook, cwd)
    wall = time.perf_counter() - start
    nbformat.write(notebook, args.notebook)
    # The kernel is a child process: its CPU time is the children's, counted once it has exited.
    print(f"{args.notebook}: {len(notebook.cells)} cells executed in {wall:.1f} s wall, "
          f"{children_cpu_seconds() - cpu:.1f} s CPU (load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
