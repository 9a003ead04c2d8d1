"""Shared bits of the benchmark scripts: machine description and best-of-N timing."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

# The reference implementations live with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}; {os.cpu_count()} logical CPUs; torch {torch.__version__} with {torch.get_num_threads()} threads; "
        f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}; load average {load:.2f} at start"
    )


def best_time(fn, repeats: int = 3) -> float:
    """Fastest of ``repeats`` runs of ``fn()`` in seconds (after one untimed warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def add_json_option(parser) -> None:
    """``--json PATH``: also write the tables as a result file (what the documentation renders its numbers from)."""
    parser.add_argument(
        "--json", metavar="PATH",
        help="also write the results to this JSON file, e.g. docs/results/benchmarks/NAME.json (the docs render it)",
    )  # fmt: skip


def write_json(path: str | None, machine_text: str, settings: dict, **tables: list[dict]) -> None:
    """Write ``{"command", "machine", "settings", TABLE: [row, ...], ...}`` to ``path`` atomically (nothing when
    ``path`` is None). ``command`` is this script's command line; ``machine_text`` is :func:`machine` at the start."""
    if path is None:
        return
    from nrecur._io import atomic_write_text

    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    command = shlex.join(["python", str(script), *sys.argv[1:]])
    data = {"command": command, "machine": machine_text, "settings": settings, **tables}
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    print(f"wrote {path}")
