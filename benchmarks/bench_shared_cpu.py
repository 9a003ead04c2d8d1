"""A training alone and beside one busy process (another training), side by side in one script.

Each run is the command a user types, in a fresh process (``python -m nrecur train --preset P --out DIR
--no-progress``). For each threading mode the script times one run alone, then one run started while
another ``nrecur train`` of the same preset (another seed, started ``--head-start`` seconds before, in the
same mode, training until stopped) keeps the CPU busy; the busy one is stopped when the timed one ends. Modes:

* ``auto``: nrecur's choice (``OMP_NUM_THREADS`` and ``OMP_WAIT_POLICY`` unset; ``nrecur._threads``);
* ``fixed``: every core and OpenMP's default wait policy for both processes, whatever the load
  (``OMP_NUM_THREADS`` = the cores, ``GOMP_SPINCOUNT`` = GNU OpenMP's default spin count, which nrecur
  takes as a given policy): what a process gets that does not look at the load.

The table reports each run's wall time (start-up included), its time to the KL threshold
(``summary.json``'s ``threshold_seconds``), the load average beside it, and the ratio of the time beside a
busy process to the time alone. The modes alternate, so drifts in machine load hit them alike.

    python benchmarks/bench_shared_cpu.py                       # quick preset, modes auto and fixed
    python benchmarks/bench_shared_cpu.py --modes auto --json docs/results/benchmarks/shared_cpu.json
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from _common import add_json_option, machine, write_json

from nrecur._threads import usable_cores
from nrecur.train.session import read_summary


class Timed(NamedTuple):
    """One timed run."""

    wall: float
    """Seconds from start to exit of the process."""
    threshold_seconds: float | None
    """Training seconds to the KL threshold (None: not reached)."""
    steps: int
    load: float
    """1-minute load average when the run ended."""
    threads_line: str
    """The run's log line on its threads."""


def mode_env(mode: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")}
    if mode == "fixed":
        env["OMP_NUM_THREADS"] = str(usable_cores())
        env["GOMP_SPINCOUNT"] = "300000"  # GNU OpenMP's default when no policy is set
    return env


def command(preset: str, out: Path, seed: int, steps: int | None = None) -> list[str]:
    """``nrecur train`` of ``preset``; ``steps``: that many steps (a timing, not a run to the threshold); 0: until
    stopped (the busy training)."""
    extra = []
    if steps == 0:
        extra = ["--steps", "1000000", "--time-budget", "0", "--kl-threshold", "0"]
    elif steps is not None:
        extra = ["--steps", str(steps), "--time-budget", "0"]
    return [sys.executable, "-m", "nrecur", "train", "--preset", preset, "--out", str(out), "--no-progress",
            "--init-seed", str(seed), "--data-seed", str(seed + 1), *extra]  # fmt: skip


def timed_run(preset: str, mode: str, out: Path, seed: int, steps: int | None) -> Timed:
    start = time.perf_counter()
    run = subprocess.run(command(preset, out, seed, steps), env=mode_env(mode), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(command(preset, out, seed, steps))} failed:\n{run.stderr[-2000:]}")
    summary = read_summary(out)
    threads = next((line for line in run.stderr.splitlines() if line.startswith("threads: ")), "")
    return Timed(wall, summary["threshold_seconds"], summary["steps"], os.getloadavg()[0], threads)


def beside_busy(preset: str, mode: str, folder: Path, seed: int, head_start: float, steps: int | None) -> Timed:
    """A timed run started ``head_start`` seconds after another training (seed + 100, until stopped) of the same preset."""
    busy = subprocess.Popen(
        command(preset, folder / f"busy-{mode}", seed + 100, steps=0), env=mode_env(mode), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(head_start)
        if busy.poll() is not None:
            raise RuntimeError("the busy training ended before the timed one started; give a shorter --head-start")
        return timed_run(preset, mode, folder / f"beside-{mode}", seed, steps)
    finally:
        busy.send_signal(signal.SIGTERM)
        busy.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--modes", nargs="+", default=["auto", "fixed"], choices=["auto", "fixed"])
    parser.add_argument("--seed", type=int, default=0, help="init seed of the timed runs; data seed: seed + 1 (default 0)")
    parser.add_argument("--head-start", type=float, default=5.0, help="seconds the busy training runs before the timed one starts")
    parser.add_argument("--steps", type=int, help="time this many steps instead of the run to the KL threshold (a shorter, noisier check)")
    add_json_option(parser)
    args = parser.parse_args()
    machine_text = machine()
    print(machine_text, flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results: dict[tuple[str, str], Timed] = {}
        for mode in args.modes:
            results[(mode, "alone")] = timed_run(args.preset, mode, folder / f"alone-{mode}", args.seed, args.steps)
            print(f"  {mode} alone: {results[(mode, 'alone')]}", flush=True)
        for mode in args.modes:
            results[(mode, "beside")] = beside_busy(args.preset, mode, folder, args.seed, args.head_start, args.steps)
            print(f"  {mode} beside a busy training: {results[(mode, 'beside')]}", flush=True)
    print()
    print(f"{'mode':<8}{'where':<20}{'wall s':>8}{'to KL s':>9}{'steps':>7}{'load':>7}{'ratio':>7}  threads")
    for mode in args.modes:
        alone = results[(mode, "alone")]
        for where in ("alone", "beside"):
            timed = results[(mode, where)]
            ratio = timed.wall / alone.wall
            to_kl = f"{timed.threshold_seconds:.1f}" if timed.threshold_seconds is not None else "-"
            label = "alone" if where == "alone" else "beside a training"
            print(f"{mode:<8}{label:<20}{timed.wall:>8.1f}{to_kl:>9}{timed.steps:>7}{timed.load:>7.2f}{ratio:>6.2f}x  {timed.threads_line}")
            rows.append({"mode": mode, "where": where, **timed._asdict(), "ratio_to_alone": round(ratio, 3)})
    settings = {"preset": args.preset, "seed": args.seed, "head_start": args.head_start, "steps": args.steps, "load_at_end": os.getloadavg()[0]}
    write_json(args.json, machine_text, settings, runs=rows)


if __name__ == "__main__":
    main()
