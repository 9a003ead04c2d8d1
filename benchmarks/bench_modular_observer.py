"""Observer throughput for in-context modular arithmetic: the vectorized filter vs a plain loop.

Both compute the exact posterior over task vectors (predictive, marginals of
a and b, number of consistent vectors) on the same tokens, side by side in
this process, under the in-distribution prior (uniform over ``n_tasks``
training vectors) and the universal one (all p² vectors). The reference
(``tests/reference.py``: ``modular_loop_posterior``) loops over sequences and,
per example, over the consistent vectors in plain Python. Target: p = 29,
32 examples (96 tokens), well under a second per 1000 sequences on 2 cores.

    python benchmarks/bench_modular_observer.py
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _common import add_json_option, best_time, machine, write_json
from reference import modular_loop_posterior

from nrecur.observer.modular import modular_posterior
from nrecur.tasks.modular import ModularICL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=int, default=29)
    parser.add_argument("--n-examples", type=int, default=32)
    parser.add_argument("--n-tasks", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--reference-batch-size", type=int, default=256)
    add_json_option(parser)
    args = parser.parse_args()
    where = machine()
    print(where)
    rows = []
    task = ModularICL(p=args.p, n_examples=args.n_examples, n_tasks=args.n_tasks)
    L = task.max_length
    print(f"\n{task.describe()}; fast {args.batch_size} x {L}, reference {args.reference_batch_size} x {L} tokens")
    print(f"{'split':<20} {'prior':<16} {'fast tok/s':>12} {'ref tok/s':>12} {'ratio':>8} {'ms / 1000 seq':>14}")
    for split, prior in (("in_distribution", "in_distribution"), ("in_distribution", "universal"),
                         ("out_of_distribution", "universal")):  # fmt: skip
        tokens = task.sample(args.batch_size, L, seed=0, split=split).tokens
        reference_tokens = tokens[: args.reference_batch_size]
        fast_s = best_time(lambda: modular_posterior(task, tokens, prior=prior))
        reference_s = best_time(lambda: modular_loop_posterior(task, reference_tokens, prior), repeats=1)
        # Both must agree before their speeds mean anything.
        post = modular_posterior(task, reference_tokens, prior=prior)
        predictive, _, _, n_consistent = modular_loop_posterior(task, reference_tokens, prior)
        assert np.allclose(post.predictive, predictive, atol=1e-12) and np.array_equal(post.n_consistent, n_consistent)
        fast = args.batch_size * L / fast_s
        reference = args.reference_batch_size * L / reference_s
        per_1000 = 1000 * 1000 * fast_s / args.batch_size
        print(f"{split:<20} {prior:<16} {fast:12.3e} {reference:12.3e} {fast / reference:7.1f}x {per_1000:14.1f}")
        rows.append({"split": split, "prior": prior, "fast_tokens_per_s": fast, "reference_tokens_per_s": reference,
                     "ratio": fast / reference, "ms_per_1000_sequences": per_1000})  # fmt: skip
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average {load:.2f} at the end ({time.strftime('%H:%M:%S')})")
    settings = {"p": args.p, "n_examples": args.n_examples, "n_tasks": args.n_tasks, "batch_size": args.batch_size,
                "reference_batch_size": args.reference_batch_size}  # fmt: skip
    write_json(args.json, where, settings, rows=rows)


if __name__ == "__main__":
    main()
