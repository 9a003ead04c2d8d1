"""Shared bits of the benchmark scripts: machine description and best-of-N timing."""

from __future__ import annotations

import os
import platform
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
