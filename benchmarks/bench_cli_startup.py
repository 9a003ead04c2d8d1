"""How long the ``nrecur`` command takes to answer when it has nothing to compute.

Each command is run as a user types it, in a fresh process (``.venv/bin/nrecur …``), ``--repeats`` times after
one untimed warm-up; the table gives the median and the fastest wall-clock time, and the median CPU time
(user + system, of the process and its children) — on a busy machine the CPU time says more than the wall
clock. Target: ``--help``, ``--version`` and an argument error at most 0.5 s on 2 cores. The commands:

* ``nrecur --help`` and ``nrecur --version``;
* ``nrecur trian`` (a mistyped command) and ``nrecur analyze RUN --wat x`` (an option typo in a command
  whose options need no config);
* mistakes in commands whose options come from the configs and presets: an unknown option
  (``nrecur train --ouy x``), a missing value (``nrecur train --out``), a bad choice
  (``nrecur run --preset quik``), a bad number (``nrecur grokking --steps x``). These are found by the
  command's light parser, rebuilt from the description of its options that the first use of the command
  caches (:mod:`nrecur.cli.light`; the untimed warm-up is that first use). The row "first use" times the
  typo with an empty cache each time: the full parser, which imports the configs (numpy and pydantic, no
  torch).

The commands use a cache folder of their own (``NRECUR_CACHE_DIR``), not the user's.

    python benchmarks/bench_cli_startup.py [--repeats 7] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import add_json_option, machine, write_json

TARGET_SECONDS = 0.5
# (what, arguments, exit code, with an empty cache each time)
COMMANDS = (
    ("--help", ["--help"], 0, False),
    ("--version", ["--version"], 0, False),
    ("mistyped command", ["trian"], 2, False),
    ("analyze option typo", ["analyze", "{run}", "--wat", "x"], 2, False),
    ("train option typo", ["train", "--ouy", "x"], 2, False),
    ("train missing value", ["train", "--out"], 2, False),
    ("run bad choice", ["run", "--preset", "quik"], 2, False),
    ("grokking bad number", ["grokking", "--steps", "x", "--out", "{run}"], 2, False),
    ("train option typo, first use", ["train", "--ouy", "x"], 2, True),
)


def timed(command: list[str], expect: int, cache: str) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one run of ``command`` with its descriptions in folder ``cache``."""
    env = {**os.environ, "NRECUR_CACHE_DIR": cache}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != expect:
        sys.exit(f"{' '.join(command)} exited with {done.returncode}, not {expect}:\n{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each command (default: 7)")
    add_json_option(parser)
    args = parser.parse_args()
    machine_text = machine()
    print(machine_text)
    nrecur = str(Path(sys.executable).with_name("nrecur"))
    rows = []
    with tempfile.TemporaryDirectory() as run:  # an existing folder: the typo is the only mistake
        print(f"{'command':<42}{'median s':>10}{'fastest s':>11}{'CPU s':>8}  target")
        for name, argv, expect, first_use in COMMANDS:
            command = [nrecur, *(a.format(run=run) for a in argv)]
            cache = lambda: tempfile.mkdtemp(dir=run) if first_use else os.path.join(run, "cache")  # noqa: E731
            timed(command, expect, cache())  # warm-up: files in the page cache and the command described, as for a user's second try
            walls, cpus = zip(*(timed(command, expect, cache()) for _ in range(args.repeats)))
            row = {
                "command": " ".join(["nrecur", *argv]).replace("{run}", "RUN") + (" (first use)" if first_use else ""), "what": name,
                "median_seconds": round(statistics.median(walls), 3), "fastest_seconds": round(min(walls), 3),
                "median_cpu_seconds": round(statistics.median(cpus), 3), "repeats": args.repeats, "first_use": first_use,
                "load_average": round(os.getloadavg()[0], 2),
            }  # fmt: skip
            rows.append(row)
            mark = "(no target)" if first_use else "ok" if row["median_seconds"] <= TARGET_SECONDS else f"over {TARGET_SECONDS} s"
            print(f"{row['command']:<42}{row['median_seconds']:>10.3f}{row['fastest_seconds']:>11.3f}{row['median_cpu_seconds']:>8.3f}  {mark}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    write_json(args.json, machine_text, {"repeats": args.repeats, "target_seconds": TARGET_SECONDS}, rows=rows)


if __name__ == "__main__":
    main()
