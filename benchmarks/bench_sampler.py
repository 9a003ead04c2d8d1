"""Sampler throughput: the vectorized sampler vs a straightforward per-sequence Python loop.

Both implement SPEC §2.3 (the loop is ``tests/reference.py:loop_sample``) and
run side by side in this process. Target: >= 5 million tokens/s for
``vocab_size=16, periods=2..8`` on 2 CPU cores.

    python benchmarks/bench_sampler.py
"""

from __future__ import annotations

import argparse

from _common import add_json_option, best_time, machine, write_json
from reference import loop_sample

from nrecur import NRecurrence

TASKS = {
    "deterministic": dict(),
    "stochastic 0.2/n": dict(p_noise="0.2/n", p_transition="0.2/n"),
    "stochastic 0.2/n, recent fakes": dict(p_noise="0.2/n", p_transition="0.2/n", fake_source="recent"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=100_000)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--loop-batch-size", type=int, default=500, help="sequences for the slow loop")
    add_json_option(parser)
    args = parser.parse_args()
    where = machine()
    print(where)
    rows = []
    print(f"vocab_size=16, periods=2..8; ours: {args.batch_size} x {args.length} tokens, loop: {args.loop_batch_size} x {args.length}")
    print(f"{'task':<32} {'ours tok/s':>12} {'loop tok/s':>12} {'ratio':>8}")
    for name, extra in TASKS.items():
        task = NRecurrence(vocab_size=16, periods=tuple(range(2, 9)), **extra)
        ours = args.batch_size * args.length / best_time(lambda: task.sample(args.batch_size, args.length, seed=0))
        loop = args.loop_batch_size * args.length / best_time(
            lambda: loop_sample(task, args.loop_batch_size, args.length, seed=0), repeats=1
        )
        print(f"{name:<32} {ours:12.3e} {loop:12.3e} {ours / loop:8.1f}x")
        rows.append({"task": name, "ours_tokens_per_s": ours, "loop_tokens_per_s": loop, "ratio": ours / loop})
    settings = {"vocab_size": 16, "periods": "2..8", "batch_size": args.batch_size, "loop_batch_size": args.loop_batch_size, "length": args.length}
    write_json(args.json, where, settings, rows=rows)


if __name__ == "__main__":
    main()
