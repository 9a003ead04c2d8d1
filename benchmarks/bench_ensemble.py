"""Many models at once: ``Ensemble.step`` (vmap over stacked parameters) against the one-by-one loop.

The one-by-one loop is the normal trainer: ``M`` :class:`~nrecur.train.loop.Trainer` objects, each
taking ``Trainer.train_step()`` in turn (its batch, the objective, backward, clipping, AdamW). The
ensemble trains the same ``M`` configs (different init and data seeds, learning rates and weight
decays) with one ``Ensemble.step()``. Both run in this process and alternate in rounds after a
warm-up, so drifts in machine load hit them alike; the table reports the median time of one step of
all ``M`` models over the rounds, and the ratio of the medians. With ``--compile`` a third contender
runs the ensemble through ``torch.compile``; its compilation time (the first step) is reported apart.
``--end-to-end STEPS`` also times whole runs into run folders, evaluations and checkpoints included:
``train()`` of each config in turn against one ``train_ensemble()`` of them all.

    python benchmarks/bench_ensemble.py                          # 16 models, batch 16, CPU
    python benchmarks/bench_ensemble.py --batch 64 --threads 1
    python benchmarks/bench_ensemble.py --device cuda --compile --data-workers 4
    python benchmarks/bench_ensemble.py --end-to-end 300
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from _common import machine

from nrecur.model import GPTConfig
from nrecur.train import RunConfig, TrainConfig, Trainer, train
from nrecur.train.ensemble import Ensemble, train_ensemble


def member_configs(count: int, batch: int, device: str) -> list[RunConfig]:
    """``count`` runs of the default small model that differ in seeds, lr and weight decay."""
    model = GPTConfig(vocab_size=8, n_ctx=32, d_model=64, n_layers=2, n_heads=4, d_head=16, d_mlp=256)
    return [
        RunConfig(
            model=model,
            train=TrainConfig(
                batch_size=batch, init_seed=i, data_seed=100 + i, lr=1e-3 * (1 + i % 4), weight_decay=0.1 * (i % 3),
                steps=10**6, warmup_steps=10, eval_size=64, device=device,
            ),
        )  # fmt: skip
        for i in range(count)
    ]


def one_by_one(trainers: list[Trainer]) -> Callable[[], None]:
    def step() -> None:
        for trainer in trainers:
            trainer.train_step()

    return step


def timed(step: Callable[[], None], steps: int, device: str) -> float:
    """Seconds per call of ``step``, over ``steps`` calls."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16, help="sequences per step, each model")
    parser.add_argument("--steps", type=int, default=10, help="steps per contender per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--compile", action="store_true", help="also time the ensemble through torch.compile")
    parser.add_argument("--data-workers", type=int, default=0, help="processes drawing the ensemble's batches ahead")
    parser.add_argument("--end-to-end", type=int, default=0, metavar="STEPS", help="also time whole runs of STEPS steps")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(machine())
    if args.device == "cuda":
        print(f"device: {torch.cuda.get_device_name()}")
    configs = member_configs(args.models, args.batch, args.device)
    print(f"{args.models} models of {Trainer(configs[0]).model.num_params} parameters, batch {args.batch} each, "
          f"context {configs[0].model.n_ctx}; {args.rounds} rounds of {args.steps} steps; "
          f"ensemble batches drawn by {args.data_workers or 'a thread'} {'processes' if args.data_workers else ''}")  # fmt: skip

    trainers = [Trainer(config) for config in configs]
    contenders: dict[str, Callable[[], None]] = {"one by one (Trainer.train_step)": one_by_one(trainers)}
    ensembles = [Ensemble(configs, data_workers=args.data_workers)]
    contenders["ensemble (vmap)"] = ensembles[0].step
    if args.compile:
        compiled = Ensemble(configs, compile=True, data_workers=args.data_workers)
        ensembles.append(compiled)
        seconds = timed(compiled.step, 1, args.device)
        print(f"torch.compile: first step (compilation) {seconds:.1f} s")
        contenders["ensemble (vmap, torch.compile)"] = compiled.step
    for step in contenders.values():
        timed(step, args.warmup, args.device)

    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, step in contenders.items():
            times[name].append(timed(step, args.steps, args.device))
    for ensemble in ensembles:
        ensemble.close()

    base = statistics.median(times["one by one (Trainer.train_step)"])
    print(f"\n{'contender':34s} {'ms/step (median)':>17s} {'min':>8s} {'max':>8s} {'speed-up':>9s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:34s} {median * 1e3:17.1f} {min(values) * 1e3:8.1f} {max(values) * 1e3:8.1f} {base / median:8.2f}x")
    print(f"(a step = one optimizer step of all {args.models} models; load average at the end {_load():.2f})")
    if args.end_to_end:
        end_to_end(configs, args.end_to_end, args.data_workers)


def end_to_end(configs: list[RunConfig], steps: int, data_workers: int) -> None:
    """Whole runs (evaluation every steps/3 on 512 sequences, checkpoints, folders): one by one, then at once."""
    update = {"steps": steps, "eval_every": max(1, steps // 3), "eval_size": 512, "checkpoint_every": steps}
    configs = [c.model_copy(update={"train": c.train.model_copy(update=update)}) for c in configs]
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        for index, config in enumerate(configs):
            train(config, f"{root}/alone{index}", progress=False)
        alone = time.perf_counter() - start
        start = time.perf_counter()
        train_ensemble(configs, [f"{root}/member{index}" for index in range(len(configs))], data_workers=data_workers)
        together = time.perf_counter() - start
    print(f"\nwhole runs of {steps} steps (3 evaluations on 512 sequences, checkpoints): {len(configs)} × train() "
          f"{alone:.1f} s, train_ensemble() {together:.1f} s: {alone / together:.2f}x (load at the end {_load():.2f})")


def _load() -> float:
    import os

    return os.getloadavg()[0]


if __name__ == "__main__":
    main()
