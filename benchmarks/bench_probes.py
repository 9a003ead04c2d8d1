"""The probes analysis on a trained run: its time, the stacked fit against one probe at a time, and the fitting
recipe against full-batch fitting.

On a run folder (default: the main job's deterministic run, ``runs/quick-det``):

1. ``compute(run, "probes")`` with default options — every ridge, MLP and softmax probe at every hook on the
   trained model, its initialization and shuffled targets — wall-clock and CPU seconds.
2. The MLP probes of the trained model at every hook, fitted as one stack (:func:`fit_stacked`) and one at
   a time (:meth:`MLPProbe.fit`, the reference): seconds of each and the largest difference in held-out R².
3. The default recipe (:data:`RECIPE`: Adam on minibatches) against full-batch Adam for 300 steps on all
   the fitted rows (a probe fitted nearly to convergence): held-out R² and seconds of one MLP probe per
   quantity at the trained model's best hook.

    python benchmarks/bench_probes.py [RUN] [--sequences 2048]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import machine

from nrecur import load_run
from nrecur.analysis import compute
from nrecur.analysis.probe_models import RECIPE, FitRecipe, MLPProbe, fit_stacked, r2_score
from nrecur.analysis.probes import CONCAT, MLP_ROWS, best_hooks, probe_inputs, probe_targets, split_sequences


def timed(fn):
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="runs/quick-det")
    parser.add_argument("--sequences", type=int, default=2048)
    args = parser.parse_args()
    print(machine())
    run = load_run(args.run)

    result, wall, cpu = timed(lambda: compute(run, "probes", n_sequences=args.sequences))
    print(f"\ncompute(run, 'probes'), {args.sequences} sequences, every probe and control: {wall:.1f} s wall, {cpu:.1f} s CPU")
    for quantity in result.quantities:
        print(
            f"  {quantity:<15} R² ridge {result.headline[f'r2_linear/{quantity}']:.3f} "
            f"(init {result.headline[f'r2_linear_random_init/{quantity}']:.3f}), "
            f"MLP {result.headline[f'r2_mlp/{quantity}']:.3f} (init {result.headline[f'r2_mlp_random_init/{quantity}']:.3f}, "
            f"shuffled {result.headline[f'r2_mlp_shuffled/{quantity}']:.3f})"
        )

    sample = run.task.sample(args.sequences, run.config.length, 0)
    targets = probe_targets(run.task, run.task.posterior(sample.tokens))
    train_seq, test_seq = split_sequences(args.sequences, 0.2, 0)
    acts = probe_inputs(run.model, sample.tokens)
    hooks = [hook for hook in acts if hook != CONCAT]
    flat = lambda x, seqs: x[seqs].reshape(-1, x.shape[-1])  # noqa: E731
    rows = np.random.default_rng(0).choice(len(train_seq) * run.config.length, size=MLP_ROWS, replace=False)
    x_fit = np.stack([flat(acts[hook], train_seq)[rows] for hook in hooks])
    x_test = np.stack([flat(acts[hook], test_seq) for hook in hooks])
    names = list(targets)
    y_fit = [flat(targets[q], train_seq)[rows] for q in names]
    pairs = [(i, t) for i in range(len(hooks)) for t in range(len(names))]

    stack, stack_wall, stack_cpu = timed(lambda: fit_stacked(x_fit, y_fit, pairs))
    stacked = stack.predict(x_test)

    def one_at_a_time():
        return [MLPProbe.fit(x_fit[i], y_fit[t], distribution=y_fit[t].shape[1] > 1).predict(x_test[i]) for i, t in pairs]

    alone, alone_wall, alone_cpu = timed(one_at_a_time)
    worst = max(abs(r2_score(flat(targets[names[t]], test_seq), a) - r2_score(flat(targets[names[t]], test_seq), s)) for (i, t), a, s in zip(pairs, alone, stacked))
    print(
        f"\n{len(pairs)} MLP probes ({len(hooks)} hooks x {len(names)} quantities, {MLP_ROWS:,} rows, {RECIPE.steps} steps of {RECIPE.batch}):\n"
        f"  stacked {stack_wall:.1f} s wall ({stack_cpu:.1f} s CPU), one at a time {alone_wall:.1f} s wall ({alone_cpu:.1f} s CPU); "
        f"largest difference in held-out R² {worst:.1e}"
    )

    best = best_hooks(acts, targets, train_seq, 0)
    full = FitRecipe(steps=300, batch=MLP_ROWS, lr=3e-3)
    print(f"\none MLP probe at the best hook: the default recipe ({RECIPE.steps} x {RECIPE.batch} rows, lr {RECIPE.lr:g}) "
          f"against full batch ({full.steps} x {MLP_ROWS:,} rows, lr {full.lr:g})")  # fmt: skip
    for t, quantity in enumerate(names):
        i = hooks.index(best[quantity])
        truth = flat(targets[quantity], test_seq)
        scores = []
        for recipe in (RECIPE, full):
            probe, wall, _ = timed(lambda r=recipe: MLPProbe.fit(x_fit[i], y_fit[t], distribution=y_fit[t].shape[1] > 1, recipe=r))
            scores.append(f"R² {r2_score(truth, probe.predict(x_test[i])):.3f} in {wall:.2f} s")
        print(f"  {quantity:<15} @ {best[quantity]:<26} default {scores[0]}; full batch {scores[1]}")


if __name__ == "__main__":
    main()
