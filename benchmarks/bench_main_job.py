"""How long the main job (``nrecur run``) takes, and where its time goes.

Runs ``nrecur run --preset PRESET --out TMP --no-progress`` as a user types it, in a fresh folder, and reads
back what the job wrote: its wall-clock time against :data:`TARGET_SECONDS`, and per
run the training time, the step at which it reached its KL threshold, and the worker's time for the run's
analyses and report (from ``RUN/analyzed.json`` and the worker's log line). The CPU time of the whole job
(user + system, its workers included) says more than the wall clock on a busy machine.

    python benchmarks/bench_main_job.py [--preset quick] [--out DIR] [--json PATH]

``--out DIR`` keeps the runs (a folder that does not exist yet: runs already there would be reused, not timed).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import add_json_option, machine, write_json

TARGET_SECONDS = {"quick": 180.0}
"""The main job's target wall-clock time per preset, on 2 cores."""


def _analysis_seconds(run: Path) -> tuple[float, float | None]:
    """The run's analyses' own time (the sum in ``analyzed.json``) and the worker's time for analyses, figures
    and report (its log line ``analyses and report in N s``; None when the log has none)."""
    records = json.loads((run / "analyzed.json").read_text())
    computed = sum(record["seconds"] for record in records)
    found = re.findall(r"analyses and report in ([0-9.]+) s", (run / "train.log").read_text())
    return computed, float(found[-1]) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quick", help="the main job's preset (default: quick)")
    parser.add_argument("--out", metavar="DIR", help="keep the runs in DIR, which must not exist yet (default: a temporary folder)")
    add_json_option(parser)
    args = parser.parse_args()
    if args.out and Path(args.out).exists():
        parser.error(f"--out {args.out} exists: its runs would be reused, not timed; give a new folder")
    machine_text = machine()
    nrecur = Path(sys.executable).with_name("nrecur")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(args.out) if args.out else Path(folder) / "runs"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([str(nrecur), "run", "--preset", args.preset, "--out", str(out), "--no-progress"], check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        summary = json.loads((out / f"{args.preset}-summary.json").read_text())
        rows = []
        for row in summary["rows"]:
            computed, worker = _analysis_seconds(out / row["name"])
            rows.append({
                "run": row["name"], "train_seconds": row["seconds"], "steps": row["steps"], "threshold_step": row["threshold_step"],
                "final_kl": row["kl"], "analysis_seconds": computed, "analyses_and_report_seconds": worker,
            })  # fmt: skip
    target = TARGET_SECONDS.get(args.preset)
    total = [{"preset": args.preset, "wall_seconds": wall, "cpu_seconds": cpu, "target_seconds": target,
              "over_target": wall / target if target else None}]  # fmt: skip
    print(machine_text)
    print(f"\nnrecur run --preset {args.preset}: {wall:.0f} s wall, {cpu:.0f} s CPU" + (f" (target {target:.0f} s: {wall / target:.1f}x)" if target else ""))
    print(f"\n{'run':24s} {'train (s)':>10s} {'steps':>6s} {'threshold':>10s} {'final KL':>9s} {'analyses (s)':>13s} {'analyses+figures+report (s)':>28s}")
    for row in rows:
        worker = "" if row["analyses_and_report_seconds"] is None else f"{row['analyses_and_report_seconds']:.0f}"
        print(f"{row['run']:24s} {row['train_seconds']:10.0f} {row['steps']:6d} {str(row['threshold_step']):>10s} {row['final_kl']:9.4f} "
              f"{row['analysis_seconds']:13.0f} {worker:>28s}")  # fmt: skip
    write_json(args.json, machine_text, {"preset": args.preset}, total=total, runs=rows)


if __name__ == "__main__":
    main()
