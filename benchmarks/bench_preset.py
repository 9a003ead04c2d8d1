"""Time to the KL threshold of ``nrecur train --preset quick`` (Muon) against ``quick-adamw`` (AdamW).

Each run is the command a user types, in a fresh process (``python -m nrecur train --preset P --out
DIR --no-progress``, alone on the machine with torch's default threads), so OpenMP's wait policy is
the one the environment gives; ``--policies`` also runs every preset under other policies, e.g.
``default PASSIVE`` (``default``: the variable unset). The presets alternate seed by seed, so drifts in
machine load hit them alike; the table reports each preset's steps and seconds to the threshold
(``summary.json``'s ``threshold_step`` and ``threshold_seconds``: training time, evaluations included, start-up not), how
many seeds reached it, and the median over seeds of the ratio of ``quick-adamw``'s time to the
preset's under the same policy (seeds where either missed the threshold count as misses, not times).
The default seeds 3 and 4 were not among those the ``quick`` preset was tuned on (0–2).

    python benchmarks/bench_preset.py                                  # seeds 3 and 4, the environment's policy
    python benchmarks/bench_preset.py --seeds 0 1 2 --policies default PASSIVE
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from _common import machine

from nrecur.train.session import read_summary

REFERENCE = "quick-adamw"


class Reached(NamedTuple):
    """Where one run reached the threshold (both None: it did not)."""

    step: int | None
    seconds: float | None


def time_to_threshold(preset: str, seed: int, policy: str, folder: Path) -> Reached:
    """Where one ``nrecur train`` run reached the KL threshold."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    out = folder / f"{preset}-{policy}-{seed}"
    command = [sys.executable, "-m", "nrecur", "train", "--preset", preset, "--out", str(out), "--no-progress",
               "--init-seed", str(seed), "--data-seed", str(seed + 1)]  # fmt: skip
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    summary = read_summary(out)
    return Reached(summary["threshold_step"], summary["threshold_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["quick", REFERENCE], help=f"presets to time (default: quick {REFERENCE}; ratios are to {REFERENCE})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4], help="init seeds; data seed: seed + 1 (default: 3 4)")
    parser.add_argument(
        "--policies", nargs="+", default=[os.environ.get("OMP_WAIT_POLICY", "default")],
        help="OMP_WAIT_POLICY values to run under, 'default' for unset (default: this environment's)",
    )  # fmt: skip
    args = parser.parse_args()
    print(machine())
    results: dict[tuple[str, str], list[Reached]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for policy in args.policies:
                for preset in args.presets:
                    reached = time_to_threshold(preset, seed, policy, Path(tmp))
                    results.setdefault((preset, policy), []).append(reached)
                    line = f"step {reached.step}, {reached.seconds:.1f} s" if reached.seconds is not None else "not reached"
                    print(f"  seed {seed}, OMP_WAIT_POLICY {policy}, {preset}: {line}", flush=True)
    print()
    print(f"{'preset':<14}{'OMP_WAIT_POLICY':<17}{'reached':<9}{'steps to threshold':<24}{'seconds to threshold':<28}{'median':>8}{'speed-up':>10}")
    for policy in args.policies:
        reference = results.get((REFERENCE, policy))
        for preset in args.presets:
            rows = results[(preset, policy)]
            seconds = [r.seconds for r in rows if r.seconds is not None]
            steps_text = ", ".join(str(r.step) if r.step is not None else "-" for r in rows)
            seconds_text = ", ".join(f"{r.seconds:.1f}" if r.seconds is not None else "-" for r in rows)
            median = statistics.median(seconds) if seconds else float("nan")
            paired = [ref.seconds / r.seconds for ref, r in zip(reference or [], rows) if ref.seconds is not None and r.seconds is not None]
            ratio = statistics.median(paired) if paired else float("nan")
            print(
                f"{preset:<14}{policy:<17}{f'{len(seconds)}/{len(rows)}':<9}{steps_text:<24}{seconds_text:<28}"
                f"{median:>7.1f}s{ratio:>9.2f}x"
            )


if __name__ == "__main__":
    main()
