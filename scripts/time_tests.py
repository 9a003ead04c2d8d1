"""Time the test suite's two tiers and write docs/results/tests/times.json (the contributing page renders it).

    .venv/bin/python scripts/time_tests.py [--out docs/results/tests/times.json]

Runs ``./test.sh -m "not slow"`` (the fast tier) and then ``./test.sh`` (the whole suite), each in a fresh
process, and records the wall-clock seconds and pytest's counts. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIERS = {"fast": ["-m", "not slow"], "full": []}
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def run(tier: str, extra: list[str]) -> dict:
    command = [str(ROOT / "test.sh"), "-q", "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    counts = {name.rstrip("s") if name.startswith("error") else name: int(n) for n, name in COUNT.findall(last)}
    shown = "./test.sh" + "".join(f' {a}' if " " not in a else f' "{a}"' for a in extra)
    return {"tier": tier, "command": shown, "seconds": round(seconds, 1), "passed": counts.get("passed", 0),
            "failed": counts.get("failed", 0), "skipped": counts.get("skipped", 0), "exit_code": done.returncode,
            "failures": "; ".join(line.split(" - ")[0] for line in done.stdout.splitlines() if line.startswith(("FAILED ", "ERROR ")))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs/results/tests/times.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import machine

    where = machine()
    rows = [run(tier, extra) for tier, extra in TIERS.items()]
    for row in rows:
        print(f"{row['tier']:<5} {row['seconds']:8.1f} s  {row['passed']} passed, {row['failed']} failed, {row['skipped']} skipped")
    from nrecur._io import atomic_write_text

    data = {"command": "python scripts/time_tests.py", "machine": where, "rows": rows}
    atomic_write_text(args.out, json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
