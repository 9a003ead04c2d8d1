"""Time to the KL threshold of ``nrecur train --preset quick`` (Muon) against ``quick-adamw`` (AdamW).

Each run is the command a user types, in a fresh process (``python -m nrecur train --preset P --out
DIR --no-progress``, alone on the machine with torch's default threads), so OpenMP's wait policy is
the one the environment gives; ``--policies`` also runs every preset under other policies, e.g.
``default PASSIVE`` (``default``: the variable unset). The presets alternate seed by seed, so drifts in
machine load hit them alike; the table reports each preset's steps and seconds to the threshold
(``summary.json``'s grok step and seconds: training time, evaluations included, start-up not) and
the median ratio to ``quick-adamw`` under the same policy.

    python benchmarks/bench_preset.py                                  # seeds 0 and 1, the environment's policy
    python benchmarks/bench_preset.py --seeds 0 1 2 --policies default PASSIVE
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine

REFERENCE = "quick-adamw"


def time_to_threshold(preset: str, seed: int, policy: str, folder: Path) -> tuple[int | None, float | None]:
    """(grok step, grok seconds) of one ``nrecur train`` run; (None, None) when it did not reach the threshold."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    out = folder / f"{preset}-{policy}-{seed}"
    command = [sys.executable, "-m", "nrecur", "train", "--preset", preset, "--out", str(out), "--no-progress",
               "--init-seed", str(seed), "--data-seed", str(seed + 1)]  # fmt: skip
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    return summary["grok_step"], summary["grok_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["quick", REFERENCE])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="init seeds (data seed: seed + 1; the presets use 0)")
    parser.add_argument("--policies", nargs="+", default=[os.environ.get("OMP_WAIT_POLICY", "default")], help="OMP_WAIT_POLICY values; default: unset")
    args = parser.parse_args()
    print(machine())
    results: dict[tuple[str, str], list[tuple[int | None, float | None]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for policy in args.policies:
                for preset in args.presets:
                    step, seconds = time_to_threshold(preset, seed, policy, Path(tmp))
                    results.setdefault((preset, policy), []).append((step, seconds))
                    shown = f"step {step}, {seconds:.1f} s" if seconds is not None else "not reached"
                    print(f"  seed {seed}, OMP_WAIT_POLICY {policy}, {preset}: {shown}", flush=True)
    print()
    print(f"{'preset':<14}{'OMP_WAIT_POLICY':<17}{'steps to threshold':<24}{'seconds to threshold':<32}{'median':>8}{'speed-up':>10}")
    for policy in args.policies:
        reference = [s for _, s in results.get((REFERENCE, policy), []) if s is not None]
        for preset in args.presets:
            rows = results[(preset, policy)]
            steps = ", ".join(str(step) if step is not None else "-" for step, _ in rows)
            seconds = [s for _, s in rows if s is not None]
            shown = ", ".join(f"{s:.1f}" if s is not None else "-" for _, s in rows)
            median = statistics.median(seconds) if seconds else float("nan")
            ratio = statistics.median(reference) / median if reference and seconds else float("nan")
            print(f"{preset:<14}{policy:<17}{steps:<24}{shown:<32}{median:>7.1f}s{ratio:>9.2f}x")


if __name__ == "__main__":
    main()
