"""Observer throughput: the fast n-recurrence filter vs the dense-HMM forward filter.

Both compute the exact posterior of the same process (fake_source="uniform"),
side by side in this process, on the same tokens. The fast filter costs
O(V·Σn) per token, the dense one O((V·Σn)²), so the ratio grows with the
number of states. Targets: >= 10x at vocab_size=16, periods=2..8 (560 states);
>= 1 million tokens/s for the quick default (vocab_size=8, periods=2..5).

    python benchmarks/bench_observer.py
"""

from __future__ import annotations

import argparse

import torch
from _common import add_json_option, best_time, machine, write_json

from nrecur import NRecurrence

GRID = [(4, 4), (8, 4), (8, 5), (8, 6), (16, 6), (16, 8)]  # (vocab_size, max period), periods 2..max


def with_threads(n: int, fn):
    """Run ``fn()`` with ``n`` torch threads, then restore the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--dense-batch-size", type=int, default=512)
    add_json_option(parser)
    args = parser.parse_args()
    where = machine()
    print(where)
    quick, grid = [], []
    L = args.length

    print(f"\nQuick default task, {args.batch_size} x {L} tokens (compiled kernel; tensor filter for comparison):")
    for name, extra in {"deterministic": {}, "stochastic 0.2/n": dict(p_noise="0.2/n", p_transition="0.2/n"),
                        "stochastic 0.2/n, recent fakes": dict(p_noise="0.2/n", p_transition="0.2/n", fake_source="recent")}.items():
        task = NRecurrence(**extra)
        tokens = task.sample(args.batch_size, L, seed=0).tokens
        rate = args.batch_size * L / best_time(lambda: task.posterior(tokens, backend="kernel"))
        tensor = args.batch_size * L / best_time(lambda: task.posterior(tokens, backend="torch"))
        print(f"  {name:<32} {rate:12.3e} tokens/s   (tensor filter {tensor:10.3e})")
        quick.append({"task": name, "kernel_tokens_per_s": rate, "tensor_tokens_per_s": tensor})

    print(f"\nFast vs dense, stochastic 0.2/n, periods 2..max; fast {args.batch_size} x {L}, dense {args.dense_batch_size} x {L} tokens")
    print("(dense: the better of 1 and all torch threads):")
    print(f"{'V':>4} {'max n':>6} {'states':>7} {'fast tok/s':>12} {'dense tok/s':>12} {'ratio':>8}")
    for V, n_max in GRID:
        task = NRecurrence(vocab_size=V, periods=tuple(range(2, n_max + 1)), p_noise="0.2/n", p_transition="0.2/n")
        tokens = task.sample(args.batch_size, L, seed=0).tokens
        dense_tokens = tokens[: args.dense_batch_size]
        hmm = task.to_hmm()
        fast = args.batch_size * L / best_time(lambda: task.posterior(tokens))
        dense = max(  # the reference at its best: small matrix products may run faster on one thread
            with_threads(n, lambda: args.dense_batch_size * L / best_time(lambda: hmm.posterior(dense_tokens), repeats=1))
            for n in (1, torch.get_num_threads())
        )
        print(f"{V:>4} {n_max:>6} {task.n_states:>7} {fast:12.3e} {dense:12.3e} {fast / dense:8.1f}x")
        grid.append({"vocab_size": V, "max_period": n_max, "states": task.n_states, "fast_tokens_per_s": fast,
                     "dense_tokens_per_s": dense, "ratio": fast / dense})  # fmt: skip
    settings = {"batch_size": args.batch_size, "dense_batch_size": args.dense_batch_size, "length": L}
    write_json(args.json, where, settings, quick=quick, grid=grid)


if __name__ == "__main__":
    main()
