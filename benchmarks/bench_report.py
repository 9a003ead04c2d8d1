"""How long ``nrecur report`` takes on the main job's runs, and what inlining the smaller figure file saves.

For each run of the main job that is there with its analyses (``nrecur run`` writes them under ``runs/``):
the wall-clock time of ``nrecur report RUN`` as a user types it (a fresh process; target ≤ 10 s on 2 cores),
the page's size (target < 5 MB), and, side by side in this process, the same page with every analysis figure
inlined as SVG against the smaller of PNG and SVG (what reports do): time and size of each, and their ratio.
Then ``nrecur report RUNS`` (every run's page and the index).

    python benchmarks/bench_report.py [--runs runs] [--preset quick]

Pages are written into the run folders, as ``nrecur report`` does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import machine

import nrecur.report.sections as sections
from nrecur.report import write_report
from nrecur.report.embed import file_image as original

RUNS = ("det", "stoch-scratch", "stoch-finetune", "mess3")
TARGET_SECONDS = 10.0
TARGET_BYTES = 5_000_000


def svg_only(stem: Path, budget, page_dir, title=None):
    """The reference: always the SVG, as a report would without choosing."""
    path = stem.with_suffix(".svg")
    if not path.is_file():
        return original(stem, budget, page_dir, title)
    return budget.take(title or stem.name, path.read_bytes(), "image/svg+xml", os.path.relpath(path, page_dir))


def timed_page(folder: Path, limit: int) -> tuple[float, int, int]:
    start = time.perf_counter()
    result = write_report(folder, limit=limit)
    return time.perf_counter() - start, result.size, result.left_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", help="folder of the main job's runs (default: runs)")
    parser.add_argument("--preset", default="quick")
    args = parser.parse_args()
    print(machine())
    nrecur = Path(sys.executable).with_name("nrecur")
    folders = [Path(args.runs) / f"{args.preset}-{name}" for name in RUNS]
    folders = [f for f in folders if (f / "analysis").is_dir()]
    if not folders:
        sys.exit(f"no analyzed runs of the main job under {args.runs}; run `nrecur run --out {args.runs}` first")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}

    print(f"\n{'run':<22} {'nrecur report (s)':>18} {'page (MB)':>10}   targets: ≤ {TARGET_SECONDS:g} s, < {TARGET_BYTES / 1e6:g} MB")
    for folder in folders:
        start = time.perf_counter()
        done = subprocess.run([str(nrecur), "report", str(folder)], capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(done.stderr)
        size = (folder / "report.html").stat().st_size
        print(f"{folder.name:<22} {seconds:>18.1f} {size / 1e6:>10.2f}")

    print("\nin this process, the page with every analysis figure as SVG against the smaller of PNG and SVG (no size limit)")
    print(f"{'run':<22} {'SVG only: s':>12} {'MB':>7} {'smaller: s':>11} {'MB':>7} {'size ratio':>11} {'time ratio':>11}")
    write_report(folders[0])  # warm-up: imports, matplotlib's font cache
    for folder in folders:
        sections.file_image = svg_only
        svg_seconds, svg_size, _ = timed_page(folder, limit=10**10)
        sections.file_image = original
        smaller_seconds, smaller_size, _ = timed_page(folder, limit=10**10)
        print(
            f"{folder.name:<22} {svg_seconds:>12.2f} {svg_size / 1e6:>7.2f} {smaller_seconds:>11.2f} {smaller_size / 1e6:>7.2f} "
            f"{svg_size / smaller_size:>10.1f}× {svg_seconds / smaller_seconds:>10.1f}×"
        )
        write_report(folder)  # leave the page as nrecur report writes it

    start = time.perf_counter()
    done = subprocess.run([str(nrecur), "report", args.runs], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(done.stderr)
    print(f"\nnrecur report {args.runs} (every page and the index): {time.perf_counter() - start:.1f} s; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
