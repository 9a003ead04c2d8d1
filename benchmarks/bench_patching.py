"""Activation patching: the batched path against one forward pass per cell, side by side on one run.

On a run folder (default: the main job's deterministic quick run), the full
patching scan of the analysis — every site (residual stream, attention and MLP
outputs, each head's z), layer and position for ``--pairs`` sequence pairs —
once with the batched path (a site's positions and heads as rows of one
expanded batch, from the cached residual stream entering its block; target
≤ 1 minute for 256 pairs on 2 cores), and with the reference that runs one
plain forward pass per cell over all pairs (:func:`patch_cell`, as a
TransformerLens-style loop does), with the source's activations cached once. The loop is timed on ``--cells`` cells drawn
evenly from all of them and extrapolated to the full scan; the output says so.
Both give the same log-probabilities on the timed cells (to float32 rounding; checked to 1e-4).

    python benchmarks/bench_patching.py [--run runs/quick-det] [--pairs 256] [--cells 48]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import machine

import numpy as np
import torch

from nrecur import load_run
from nrecur.analysis.patch_pairs import sample_pairs
from nrecur.analysis.patch_runs import PER_HEAD, as_tokens, clean_runs, patch_cell, patch_from, site_hooks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/quick-det", help="run folder (default: runs/quick-det)")
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--cells", type=int, default=48, help="cells the per-cell loop is timed on (default: 48)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not Path(args.run, "config.json").exists():
        sys.exit(f"no run at {args.run}; pass --run RUN")
    print(machine())
    run = load_run(args.run)
    model = run.model.eval()
    pairs = sample_pairs(run.task, args.pairs, run.config.length, args.seed)
    destination, source = as_tokens(model, pairs.destination.tokens), as_tokens(model, pairs.source.tokens)
    hooks = [hook for kind in site_hooks(model).values() for hook in kind]
    heads, length = model.config.n_heads, run.config.length
    cells = [(hook, p, h) for hook in hooks for p in range(length) for h in (range(heads) if hook.endswith(PER_HEAD) else [None])]
    print(f"run {args.run}: {len(hooks)} hooks, {len(cells)} cells (site, layer[, head], position) × {args.pairs} pairs")

    patch_from(model, clean_runs(model, destination[:2], source[:2], hooks), hooks[0], max_rows=4096)  # warm-up
    start = time.perf_counter()
    clean = clean_runs(model, destination, source, hooks)
    batched = {hook: patch_from(model, clean, hook, max_rows=4096) for hook in hooks}
    batched_seconds = time.perf_counter() - start

    timed = [cells[i] for i in np.linspace(0, len(cells) - 1, min(args.cells, len(cells))).round().astype(int)]
    worst = 0.0
    patch_cell(model, destination, source, *timed[0], clean.source[timed[0][0]])  # warm-up, untimed
    start = time.perf_counter()
    for hook, position, head in timed:
        reference = patch_cell(model, destination, source, hook, position, head, clean.source[hook])
        got = batched[hook][:, position] if head is None else batched[hook][:, position, head]
        worst = max(worst, float((got - reference).abs().max()))
    loop_per_cell = (time.perf_counter() - start) / len(timed)
    loop_seconds = loop_per_cell * len(cells)

    print(f"\n{'path':<44} {'seconds':>9}")
    print(f"{'batched (all cells, measured)':<44} {batched_seconds:>9.1f}")
    print(f"{f'one forward per cell ({len(timed)} cells, extrapolated)':<44} {loop_seconds:>9.1f}")
    print(f"ratio (loop / batched): {loop_seconds / batched_seconds:.1f}x; target for the batched path: <= 60 s")
    print(f"largest difference of log-probabilities on the timed cells: {worst:.1e}")
    if worst > 1e-4:  # float32 rounding of different batch shapes
        sys.exit("the batched path and the per-cell loop disagree")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
