"""Training throughput: our GPT against TransformerLens' native model of the same size.

One training step = forward, cross-entropy, backward, AdamW step, on a fixed
random batch. The contenders start from identical weights (the TL model is
``to_transformer_lens(ours)``), run in the same process, and alternate in
rounds after a warm-up, so drifts in machine load hit all of them alike. The
table reports the median tokens/s over rounds.

    python benchmarks/bench_train_throughput.py            # torch's default threads
    python benchmarks/bench_train_throughput.py --threads 1

Needs ``pip install nrecur[tl]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from nrecur.export import to_transformer_lens
from nrecur.model import GPT, GPTConfig


def make_step(
    model: torch.nn.Module, tokens: torch.Tensor, context: Callable = contextlib.nullcontext
) -> Callable[[], None]:
    """One AdamW training step on ``tokens [batch, pos + 1]``, run under ``context()``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=1.0)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step() -> None:
        with context():
            logits = model(inputs)  # [batch, pos, vocab]
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--pos", type=int, default=32, help="tokens per sequence (the model's n_ctx)")
    parser.add_argument("--steps", type=int, default=20, help="steps per contender per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    config = GPTConfig(vocab_size=8, n_ctx=args.pos, d_model=64, n_layers=2, n_heads=4, d_head=16, d_mlp=256)
    ours = GPT(config)
    theirs = to_transformer_lens(ours)
    # One extra token so inputs (tokens[:, :-1]) fill the context exactly.
    tokens = torch.randint(0, config.vocab_size, (args.batch, args.pos + 1))
    explicit = GPT(config)
    explicit.load_state_dict(ours.state_dict())

    def watch_patterns() -> contextlib.AbstractContextManager:
        return explicit.hooks([(lambda name: name.endswith("hook_pattern"), lambda pattern, hook: None)])

    contenders = {
        "nrecur GPT (fused attention)": make_step(ours, tokens),
        "nrecur GPT (explicit attention)": make_step(explicit, tokens, watch_patterns),
        "TransformerLens 4 native (TransformerBridge)": make_step(theirs, tokens),
    }
    for step in contenders.values():
        for _ in range(args.warmup):
            step()

    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, step in contenders.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            seconds[name].append((time.perf_counter() - start) / args.steps)

    tokens_per_step = args.batch * args.pos
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs (load {load}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, OMP_NUM_THREADS={threads}")
    print(f"model: {config.n_layers} layers, d_model {config.d_model}, {config.n_heads} heads × {config.d_head}, "
          f"d_mlp {config.d_mlp}, {ours.num_params} params; batch {args.batch} × {args.pos} tokens; "
          f"median of {args.rounds} rounds × {args.steps} steps")
    print(f"{'model':<46} {'ms/step':>8} {'tokens/s':>10}")
    rates = {}
    for name, times in seconds.items():
        median = statistics.median(times)
        rates[name] = tokens_per_step / median
        print(f"{name:<46} {1e3 * median:8.2f} {rates[name]:10.0f}")
    ratio = rates["nrecur GPT (fused attention)"] / rates["TransformerLens 4 native (TransformerBridge)"]
    print(f"ratio nrecur (fused) / TransformerLens: {ratio:.2f}x")


if __name__ == "__main__":
    main()
