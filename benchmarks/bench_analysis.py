"""How long the analyses take on the main job's models, and the ridge table against one probe per quantity.

For each run of the main job that is there (``nrecur run`` writes them under
``runs/``): the wall-clock time of ``nrecur analyze RUN --what all`` as a user
types it (a fresh process, default sizes, latest checkpoint, every headline
beside its controls; target ≤ 90 s on 2 cores for the deterministic run), the
time of each analysis inside it, for the first run the same command with its
figures drawn in its own process instead of a forked one beside the next
analysis (``NRECUR_WRITE_IN_BACKGROUND=0``, :mod:`nrecur.analysis.writer`),
and the analyses over every saved checkpoint (``--checkpoints all``: each analysis that has an
over-training form; target ≤ 1 minute). Side by side in this process: the table of
held-out ridge R² for every hook × quantity with one Gram matrix and one solve
per hook (ours) against a :class:`RidgeProbe` fitted per hook and quantity
(the reference), on the same activations; they agree to 1e-9.

    python benchmarks/bench_analysis.py [--runs runs] [--preset quick] [--json docs/results/benchmarks/analysis.json]

Analyses write into each run's ``analysis/`` folder, as ``nrecur analyze`` does.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from _common import add_json_option, machine, write_json

from nrecur import load_run
from nrecur.analysis import ANALYSES
from nrecur.analysis.writer import BACKGROUND_VARIABLE
from nrecur.analysis.probes import RidgeProbe, probe_inputs, probe_targets, r2_score, ridge_r2_table, split_sequences

RUNS = ("det", "stoch-finetune", "stoch-scratch", "mess3")
LINE = re.compile(r"^(\S+) \((step \d+|all checkpoints), ([\d.]+) s\): ", re.MULTILINE)
"""A line ``nrecur analyze`` prints per analysis: name, checkpoint, seconds."""


def per_quantity_table(acts, targets, train_seq, test_seq):
    """The reference: one ridge probe per hook and quantity."""
    table = {q: {} for q in targets}
    for hook, x in acts.items():
        x_train, x_test = x[train_seq].reshape(-1, x.shape[-1]), x[test_seq].reshape(-1, x.shape[-1])
        for quantity, y in targets.items():
            probe = RidgeProbe.fit(x_train, y[train_seq].reshape(-1, y.shape[-1]))
            table[quantity][hook] = r2_score(y[test_seq].reshape(-1, y.shape[-1]), probe.predict(x_test))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", help="folder of the main job's runs (default: runs)")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--sequences", type=int, default=2048, help="sequences for the ridge-table comparison")
    add_json_option(parser)
    args = parser.parse_args()
    machine_text = machine()
    print(machine_text)
    rows: list[dict] = []
    nrecur = Path(sys.executable).with_name("nrecur")
    folders = [Path(args.runs) / f"{args.preset}-{name}" for name in RUNS]
    folders = [f for f in folders if (f / "checkpoints").is_dir()]
    if not folders:
        sys.exit(f"no runs of the main job under {args.runs}; run `nrecur run --out {args.runs}` first")

    print(f"\n{'run':<22} {'what':<34} {'seconds':>8} {'target':>7}")
    for folder in folders:
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        start = time.perf_counter()
        out = subprocess.run([str(nrecur), "analyze", str(folder), "--what", "all"], capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if out.returncode != 0:
            sys.exit(out.stderr)
        target = 90 if folder.name.endswith("-det") else None
        print(f"{folder.name:<22} {'nrecur analyze --what all':<34} {seconds:>8.1f} {target or '':>7}")
        rows.append({"run": folder.name, "what": "all (one process)", "seconds": round(seconds, 1), "target_seconds": target})
        for name, _, took in LINE.findall(out.stdout):
            print(f"{'':<22} {'  ' + name:<34} {float(took):>8.1f}")
            rows.append({"run": folder.name, "what": name, "seconds": float(took), "target_seconds": None})
        if folder == folders[0]:  # the reference: the same command with every figure drawn in its own process
            start = time.perf_counter()
            here = subprocess.run([str(nrecur), "analyze", str(folder), "--what", "all"], capture_output=True, text=True, env={**env, BACKGROUND_VARIABLE: "0"})
            reference = time.perf_counter() - start
            if here.returncode != 0:
                sys.exit(here.stderr)
            print(f"{'':<22} {'figures drawn in the same process':<34} {reference:>8.1f}   ratio {reference / seconds:.2f}x")
            rows.append({"run": folder.name, "what": "all, figures in the same process (reference)", "seconds": round(reference, 1), "target_seconds": None})
        over = [name for name, a in ANALYSES.items() if a.over_training is not None and a.applies(load_run(folder)) is None]
        if not over:
            continue
        out = subprocess.run([str(nrecur), "analyze", str(folder), "--what", *over, "--checkpoints", "all"], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            sys.exit(out.stderr)
        steps = len(load_run(folder).checkpoint_steps)
        for name, at, took in LINE.findall(out.stdout):
            if at == "all checkpoints":
                print(f"{'':<22} {f'  {name} ({steps} ckpts)':<34} {float(took):>8.1f}")
                rows.append({"run": folder.name, "what": f"{name} ({steps} checkpoints)", "seconds": float(took), "target_seconds": None})

    run = load_run(folders[0])
    sample = run.task.sample(args.sequences, run.config.length, 0)
    targets = probe_targets(run.task, run.task.posterior(sample.tokens))
    acts = probe_inputs(run.model, sample.tokens)
    train_seq, test_seq = split_sequences(args.sequences, 0.2, 0)
    start = time.perf_counter()
    ours = ridge_r2_table(acts, targets, train_seq, test_seq)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    reference = per_quantity_table(acts, targets, train_seq, test_seq)
    reference_s = time.perf_counter() - start
    worst = max(abs(ours[q][h] - reference[q][h]) for q in ours for h in ours[q])
    assert worst < 1e-9, worst
    print(
        f"\nridge R² table, {folders[0].name}, {args.sequences} sequences x {run.config.length} positions, "
        f"{len(acts)} inputs x {len(targets)} quantities ({sum(y.shape[-1] for y in targets.values())} outputs):\n"
        f"  one solve per hook {ours_s:.2f} s, one probe per hook and quantity {reference_s:.2f} s, "
        f"ratio {reference_s / ours_s:.1f}x; largest difference {worst:.1e}"
    )
    ridge = [{"ours_seconds": round(ours_s, 3), "reference_seconds": round(reference_s, 3), "ratio": round(reference_s / ours_s, 2), "largest_difference": worst}]
    write_json(args.json, machine_text, {"preset": args.preset, "sequences": args.sequences}, rows=rows, ridge=ridge)


if __name__ == "__main__":
    main()
