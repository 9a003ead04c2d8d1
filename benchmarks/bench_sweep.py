"""Sweeps on the local backend: throughput against a sequential loop, and the overhead per trial.

1. **Throughput.** The same 24 trials (small n-recurrence models, ~1–3 s of
   training each) are trained, each way in a fresh process so both pay one
   start-up, (a) by a plain loop calling ``nrecur.train`` one trial after the
   other with torch's default threads (all cores), and (b) by ``nrecur sweep``
   as a user runs it: the local backend (one worker per core, one thread each;
   the workers' start-up included) and the default group runner ``auto``, which
   for these small steps trains each group of same-shape trials at once
   (``torch.func``). The two alternate for ``--rounds`` rounds, so drifts in
   machine load hit both; each round gives trials per hour and the ratio
   (target ≥ 1.8× on 2 cores). With ``--one-by-one``, (c) the same sweep with
   ``--group-runner one-by-one`` (one trial at a time per worker) joins each
   round: the measurement behind ``auto``'s choice.
2. **Overhead.** A sweep of ``--tiny`` tiny trials. Overhead per trial =
   (workers × wall time − Σ pure training time) / trials, where a trial's pure
   training time is its optimizer steps alone (``Trainer.train_step`` timed
   in this process, one thread, for each distinct config): everything else —
   worker start-up, the evaluation set and evaluations, checkpoints, the run
   folder, the record and the table — counts as overhead (target ≤ 1 s). The
   same in CPU seconds (workers' and this process's CPU time less the pure
   training time) is printed too: it is far less disturbed by other load.

    python benchmarks/bench_sweep.py                 # both; ~3 min on 2 cores
    python benchmarks/bench_sweep.py --rounds 1 --tiny 16
    python benchmarks/bench_sweep.py --one-by-one --tiny 16  # also the one-by-one runner
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine

import torch

from nrecur.sweep import BackendOptions, expand, load_sweep, run_sweep, spec_from_data
from nrecur.sweep.groups import resolve_runner
from nrecur.train import train
from nrecur.train.loop import Trainer

SMALL = {
    "name": "bench-small",
    "preset": "tiny",
    "seeds": 6,
    "base": {
        "model": {"n_ctx": 16},
        "train": {"steps": 300, "eval_every": 50, "eval_size": 256, "batch_size": 32, "checkpoint_every": 50, "stop_at_threshold": False},
    },
    "grid": {"model.d_model": [16, 32], "model.n_layers": [1, 2]},
}
"""24 small trials of 1–3 s of training each (on an idle 2-core CPU)."""


def tiny_spec(trials: int) -> dict:
    return {
        "name": "bench-tiny",
        "preset": "tiny",
        "seeds": trials // 2,
        "base": {"train": {"steps": 40, "eval_every": 20, "checkpoint_every": 20, "stop_at_threshold": False}},
        "grid": {"model.d_model": [16, 32]},
    }


def sequential(spec: dict, folder: Path) -> None:
    """A plain loop over the trials in this process (torch's default threads)."""
    for trial in expand(spec_from_data(spec)):
        train(trial.config, folder / trial.trial_id, progress=False)


def timed(command: list[str]) -> float:
    """Wall time of a command in a fresh process (its output hidden; it must succeed)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def swept(spec: dict, folder: Path, workers: int | None = None) -> float:
    """Wall time of the sweep, one trial at a time per worker (so that its pure training time is the lone trainer's)."""
    start = time.perf_counter()
    result = run_sweep(spec_from_data(spec), folder, options=BackendOptions(workers=workers, runner="one-by-one"), report=None)
    assert result.status_counts.get("ok") == result.trials, result.status_counts
    return time.perf_counter() - start


def pure_step_seconds(spec: dict) -> tuple[dict[str, float], dict[str, float]]:
    """Wall and CPU seconds of optimizer steps alone per trial id (one thread; timed once per distinct model config)."""
    torch.set_num_threads(1)
    per_shape: dict[str, tuple[float, float]] = {}
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for trial in expand(spec_from_data(spec)):
        key = trial.config.model.model_dump_json()
        if key not in per_shape:
            trainer = Trainer(trial.config)
            for _ in range(5):
                trainer.train_step()  # warm-up
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(50):
                trainer.train_step()
            per_shape[key] = ((time.perf_counter() - start) / 50, (time.process_time() - start_cpu) / 50)
        wall[trial.trial_id] = per_shape[key][0] * trial.config.train.steps
        cpu[trial.trial_id] = per_shape[key][1] * trial.config.train.steps
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the throughput comparison")
    parser.add_argument("--tiny", type=int, default=64, help="trials of the overhead sweep")
    parser.add_argument("--one-by-one", action="store_true", help="also time the sweep with --group-runner one-by-one in each round")
    parser.add_argument("--loop", nargs=2, metavar=("SPEC_JSON", "DIR"), help=argparse.SUPPRESS)  # the sequential side
    args = parser.parse_args()
    if args.loop:
        sequential(json.loads(Path(args.loop[0]).read_text()), Path(args.loop[1]))
        return
    print(f"machine: {machine()}")
    trials = expand(spec_from_data(SMALL))
    n = len(trials)
    print(f"group runner auto: {resolve_runner('auto', trials)[1]}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        spec_file = scratch / "small.yaml"  # JSON is YAML
        spec_file.write_text(json.dumps(SMALL))
        for round_ in range(args.rounds):
            loop = timed([sys.executable, __file__, "--loop", str(spec_file), str(scratch / f"loop{round_}")])
            command = [sys.executable, "-m", "nrecur", "sweep", str(spec_file), "--quiet"]
            sweep = timed([*command, "--out", str(scratch / f"sweep{round_}")])
            frame = load_sweep(scratch / f"sweep{round_}")
            assert (frame["status"] == "ok").all()
            rows.append((loop, sweep))
            print(f"round {round_ + 1}: {n} trials; sequential loop {loop:.1f} s ({3600 * n / loop:.0f} trials/h), "
                  f"local sweep {sweep:.1f} s ({3600 * n / sweep:.0f} trials/h): {loop / sweep:.2f}x")  # fmt: skip
            if args.one_by_one:
                alone = timed([*command, "--group-runner", "one-by-one", "--out", str(scratch / f"alone{round_}")])
                assert (load_sweep(scratch / f"alone{round_}")["status"] == "ok").all()
                print(f"         local sweep, --group-runner one-by-one {alone:.1f} s ({3600 * n / alone:.0f} trials/h): "
                      f"{loop / alone:.2f}x the loop; auto is {alone / sweep:.2f}x as fast")  # fmt: skip
        ratios = [loop / sweep for loop, sweep in rows]
        if ratios:
            print(f"throughput: local backend / sequential loop = {statistics.median(ratios):.2f}x (median of {len(ratios)} rounds; target >= 1.8x)")

        spec = tiny_spec(args.tiny)
        pure, pure_cpu = pure_step_seconds(spec)
        workers = 2
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        parent_before = time.process_time()
        wall = swept(spec, scratch / "tiny", workers=workers)
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime) + time.process_time() - parent_before
        frame = load_sweep(scratch / "tiny")
        trained = sum(pure.values())
        logged = float(frame["seconds"].sum())
        count = len(frame)
        print(
            f"overhead: {count} tiny trials ({spec['base']['train']['steps']} steps each) on {workers} workers in {wall:.1f} s; "
            f"pure training {trained:.1f} s in all ({trained / count:.2f} s per trial), the trainer's own clock "
            f"{logged:.1f} s (steps + evaluations + checkpoints)"
        )
        print(f"overhead per trial beyond its optimizer steps: {(workers * wall - trained) / count:.2f} s (target <= 1 s); "
              f"beyond the trainer's clock: {(workers * wall - logged) / count:.2f} s")  # fmt: skip
        # CPU time hardly depends on what else the machine runs: the same overhead, less disturbed by load
        print(f"CPU time of the sweep (workers and this process) {cpu:.1f} s: {(cpu - sum(pure_cpu.values())) / count:.2f} CPU s per trial beyond its optimizer steps ({sum(pure_cpu.values()):.1f} CPU s)")


if __name__ == "__main__":
    main()
