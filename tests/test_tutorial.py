"""The tutorial notebook (docs/tutorial.ipynb) runs top to bottom in a real kernel, and what it stores is what
the documentation shows.

Every cell is executed by nbclient in a fresh ipykernel, in a temporary working directory, as
``scripts/run_tutorial.py`` does to refresh the stored outputs; a cell that raises fails the test with the
cell's traceback.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import struct
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"
BUDGET = 120.0
"""CPU seconds the whole notebook may take (issue 26: two minutes on two cores). CPU time, not wall time: on a
shared machine the wall time says as much about the other work as about the notebook."""

nbformat = pytest.importorskip("nbformat", reason="the dev extra is not installed (pip install -e '.[dev]')")
pytest.importorskip("nbclient", reason="the dev extra is not installed (pip install -e '.[dev]')")
pytest.importorskip("ipykernel", reason="the dev extra is not installed (pip install -e '.[dev]')")


def load_runner():
    spec = importlib.util.spec_from_file_location("run_tutorial", ROOT / "scripts" / "run_tutorial.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def png_size(data: str) -> tuple[int, int]:
    """Width and height in pixels of a base64 PNG (from its IHDR chunk)."""
    return struct.unpack(">II", base64.b64decode(data)[16:24])


@pytest.mark.slow
def test_every_cell_of_the_tutorial_runs_without_error(tmp_path):
    runner = load_runner()
    start, cpu = time.perf_counter(), runner.children_cpu_seconds()
    notebook = runner.execute(NOTEBOOK, tmp_path)  # raises CellExecutionError on the first failing cell
    wall, cpu = time.perf_counter() - start, runner.children_cpu_seconds() - cpu  # the kernel has exited
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code)
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert 0 < cpu < BUDGET, f"the tutorial took {cpu:.0f} s of CPU time ({wall:.0f} s wall), more than {BUDGET:.0f} s"


def test_the_stored_notebook_holds_a_real_execution_of_every_cell():
    """The site shows the stored outputs as they are: each code cell ran, in order, in one kernel, and none
    of them failed; its figures are modest PNGs."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), "re-run scripts/run_tutorial.py"
    assert all(cell.outputs for cell in code[1:]), "a code cell shows nothing"
    outputs = [o for cell in code for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"], "a cell wrote to stderr"
    images = [o.data["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4
    for data in images:
        width, height = png_size(data)
        assert width <= 1000 and height <= 600, (width, height)  # ~90 dpi, figures a few inches wide
    assert len(json.dumps(notebook)) < 400_000


def test_the_tutorial_walks_through_every_step():
    text = "\n".join(cell.source for cell in nbformat.read(NOTEBOOK, as_version=4).cells if cell.cell_type == "code")
    for step in ("task.posterior(", "nrecur.train(", 'compute(run, "probes"', 'compute(mess3, "geometry"', "model.hooks(", "run_with_cache(", 'compute(run, "patching"'):
        assert step in text, step
