"""Observer speed under the rule prior: the product path, the same prior as a joint table, and another revision.

Times the compiled n-recurrence filter on the default task (deterministic, and
stochastic with p_noise = p_transition = 0.2/n) three ways, side by side:

* the product prior ``period_prior × target_prior`` (what the default task uses);
* the same prior written as a joint ``rule_prior`` (every rule, equal weights);
* with ``--baseline REV``: the product prior at git revision ``REV`` of this
  repository (its ``src/`` extracted to a temporary folder, timed in a
  subprocess). Rounds alternate between the variants, each round starting
  with the next one, so all see the same load; each figure is the best of its
  rounds.

``--clock cpu`` (the default) times with the process's CPU time, which on a
machine shared with other work leaves out the time the process waits for a
core; ``--clock wall`` times with the wall clock.

    python benchmarks/bench_observer_prior.py --baseline REV

The ratio printed is tokens/s here over tokens/s of the other; 1.00 is equal speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The tasks timed: name → NRecurrence keyword arguments (the quick default task, deterministic and stochastic).
TASKS = {"default, deterministic": {}, "default, stochastic 0.2/n": {"p_noise": "0.2/n", "p_transition": "0.2/n"}}


def time_observer(batch_size: int, length: int, repeats: int, joint: bool, clock: str) -> dict[str, float]:
    """Best seconds of ``repeats`` kernel runs per task (after one untimed warm-up), in this process's nrecur."""
    import nrecur.observer  # noqa: F401  (registers the observers)
    from nrecur import NRecurrence

    now = time.process_time if clock == "cpu" else time.perf_counter
    times = {}
    for name, extra in TASKS.items():
        task = NRecurrence(**extra)
        if joint:
            task = NRecurrence(**extra, rule_prior=[[n, t] for n in task.periods for t in range(task.vocab_size)])
        tokens = task.sample(batch_size, length, seed=0).tokens
        task.posterior(tokens, backend="kernel")
        best = float("inf")
        for _ in range(repeats):
            start = now()
            task.posterior(tokens, backend="kernel")
            best = min(best, now() - start)
        times[name] = best
    return times


def extract(revision: str, folder: Path) -> Path:
    """``src/`` of ``revision`` under ``folder``; returns the path to put on ``PYTHONPATH``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def run_worker(pythonpath: Path, args: argparse.Namespace, joint: bool) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", "--batch-size", str(args.batch_size), "--length", str(args.length),
               "--repeats", str(args.repeats), "--clock", args.clock] + (["--joint"] if joint else [])  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"the worker for {pythonpath} failed:\n{result.stderr}")
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    if not Path(answer["nrecur"]).is_relative_to(pythonpath.resolve()):  # an installed copy took precedence
        raise RuntimeError(f"the worker imported {answer['nrecur']}, not the nrecur under {pythonpath}")
    return answer["times"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV", help="git revision to compare with (its product-prior path)")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per round (best kept)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of every variant")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="process CPU time (default) or wall-clock time")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--joint", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import nrecur

        times = time_observer(args.batch_size, args.length, args.repeats, args.joint, args.clock)
        print(json.dumps({"nrecur": str(Path(nrecur.__file__).resolve()), "times": times}))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import machine

    print(machine())
    print(
        f"{args.batch_size} x {args.length} tokens per call, compiled kernel; best of {args.rounds} rounds x "
        f"{args.repeats} runs by {args.clock} time"
    )
    here = ROOT / "src"
    with tempfile.TemporaryDirectory() as tmp:
        variants = {"product (this tree)": (here, False), "joint (this tree)": (here, True)}
        if args.baseline:
            variants[f"product ({args.baseline})"] = (extract(args.baseline, Path(tmp)), False)
        best: dict[str, dict[str, float]] = {name: {} for name in variants}
        names = list(variants)
        for round_index in range(args.rounds):
            for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
                path, joint = variants[name]
                for task, seconds in run_worker(path, args, joint).items():
                    best[name][task] = min(best[name].get(task, float("inf")), seconds)
    tokens = args.batch_size * args.length
    print(f"\n{'task':<28}" + "".join(f"{name:>28}" for name in names) + "   (tokens/s)")
    for task in TASKS:
        print(f"{task:<28}" + "".join(f"{tokens / best[name][task]:28.3e}" for name in names))
    reference = names[-1] if args.baseline else names[0]
    print(f"\nratio of tokens/s to {reference}:")
    for task in TASKS:
        ratios = ", ".join(f"{name} {best[reference][task] / best[name][task]:.3f}" for name in names if name != reference)
        print(f"  {task:<28} {ratios}")


if __name__ == "__main__":
    main()
