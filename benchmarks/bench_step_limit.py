"""How far a training step is from the machine: FLOPs per step, measured matmul peak, the step's share of it.

For each preset's model (default: quick and proposal) in one process, with this process's threads:

* **FLOPs per step**: the matrix products of the forward and backward pass of one batch
  (``torch.utils.flop_counter``, attention included) and of the optimizer's step (Muon's
  Newton–Schulz iterations), counted by running them;
* **matmul peak**: the best GFLOP/s of ``torch.matmul`` at the model's own shapes (the forward's
  ``[batch·pos, d_in] @ [d_in, d_out]``) and at large square shapes (the machine's ceiling);
* **step time** of the trainer's step (forward, backward, clipping, optimizer; eager), and the step's
  share of each peak: FLOPs per step / step time / peak;
* Muon's orthogonalization of the model's matrices in bfloat16 (``torch.optim.Muon``'s) and float32;
* ``--compile``: the compiled step (``train.compile on``) against the eager one in alternating rounds, with
  its first compile timed cold (an empty inductor cache) and warm (the cache the cold one filled);
* ``--to-threshold``: training seconds and steps to the preset's KL threshold (long: the whole run).

Timings are medians over rounds that alternate the contenders, so load drifts hit them alike; the load
average is printed beside them.

    python benchmarks/bench_step_limit.py --json docs/results/benchmarks/step_limit.json
    python benchmarks/bench_step_limit.py --presets quick --compile --to-threshold
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from _common import add_json_option, machine, write_json
from torch.utils.flop_counter import FlopCounterMode

from nrecur.train import RunConfig, train
from nrecur.train.loop import Trainer
from nrecur.train.optimizers import muon_parameters, newton_schulz
from nrecur.train.presets import get_preset


def median_seconds(contenders: dict[str, Callable[[], object]], rounds: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each contender over ``rounds`` alternating rounds of ``repeats`` calls (after
    one untimed round)."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_index in range(rounds + 1):
        for name, fn in contenders.items():
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            if round_index:
                times[name].append((time.perf_counter() - start) / repeats)
    return {name: statistics.median(values) for name, values in times.items()}


def step_flops(trainer: Trainer) -> tuple[int, int]:
    """Matrix-product FLOPs of one training step: (forward + backward, optimizer)."""
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train_step()
    total = counter.get_total_flops()
    optimizer = FlopCounterMode(display=False)
    with optimizer:
        trainer.optimizer.step()
    return total - optimizer.get_total_flops(), optimizer.get_total_flops()


def model_shapes(config: RunConfig) -> list[tuple[int, int, int]]:
    """``(tokens, d_in, d_out)`` of the forward's matrix products of one batch."""
    m, tokens = config.model, config.train.batch_size * config.model.n_ctx
    attention = m.n_heads * m.d_head
    return [(tokens, m.d_model, 3 * attention), (tokens, attention, m.d_model), (tokens, m.d_model, m.d_mlp), (tokens, m.d_mlp, m.d_model), (tokens, m.d_model, m.vocab_size)]


def matmul_gflops(shapes: list[tuple[int, int, int]], rounds: int) -> float:
    """Best GFLOP/s of ``torch.matmul`` over ``shapes`` together (one call each)."""
    pairs = [(torch.randn(a, b), torch.randn(b, c)) for a, b, c in shapes]
    flops = sum(2 * a * b * c for a, b, c in shapes)

    def run() -> None:
        for x, y in pairs:
            torch.matmul(x, y)

    run()
    best = min(_time(run) for _ in range(rounds))
    return flops / best / 1e9


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def newton_schulz_times(trainer: Trainer, rounds: int) -> dict[str, float]:
    """Seconds to orthogonalize all the Muon matrices of the model once, in bfloat16 and in float32."""
    matrices = [torch.randn_like(p) for p in muon_parameters(trainer.model)]
    contenders = {str(dtype).removeprefix("torch."): (lambda dtype=dtype: [newton_schulz(m, dtype) for m in matrices]) for dtype in (torch.bfloat16, torch.float32)}
    return median_seconds(contenders, rounds, repeats=3)


def compile_rows(config: RunConfig, rounds: int, repeats: int) -> dict[str, float]:
    """The compiled step against the eager one, and the first compile's seconds, cold and warm cache."""
    compiled_config = config.model_copy(update={"train": config.train.model_copy(update={"compile": "on"})})
    eager = Trainer(config.model_copy(update={"train": config.train.model_copy(update={"compile": "off"})}))
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            torch._dynamo.reset()
            cold_trainer = Trainer(compiled_config)
            cold = _time(cold_trainer.train_step)
            torch._dynamo.reset()  # the in-process cache gone: what a second run in a new process finds
            warm_trainer = Trainer(compiled_config)
            warm = _time(warm_trainer.train_step)
        finally:
            if previous is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous
        eager.train_step()
        times = median_seconds({"eager": eager.train_step, "compiled": warm_trainer.train_step}, rounds, repeats)
    return {"first_step_cold_s": cold, "first_step_warm_s": warm, "eager_step_ms": 1e3 * times["eager"], "compiled_step_ms": 1e3 * times["compiled"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["quick", "proposal"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10, help="steps per contender per round")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="also time the compiled step and its first compile")
    parser.add_argument("--to-threshold", action="store_true", help="also train each preset to its KL threshold (long)")
    add_json_option(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    machine_text = machine()
    print(machine_text, flush=True)
    large = matmul_gflops([(2048, 2048, 2048)], args.rounds)
    print(f"matmul peak at 2048^3: {large:.1f} GFLOP/s", flush=True)
    rows = []
    for name in args.presets:
        config = get_preset(name).run
        config = config.model_copy(update={"train": config.train.model_copy(update={"device": "cpu"})})
        trainer = Trainer(config)
        trainer.train_step()
        model_flops, optimizer_flops = step_flops(trainer)
        own = matmul_gflops(model_shapes(config), args.rounds)
        step = median_seconds({"step": trainer.train_step}, args.rounds, args.repeats)["step"]
        flops = model_flops + optimizer_flops
        row = {
            "preset": name, "params": trainer.model.num_params, "tokens_per_step": config.train.batch_size * config.model.n_ctx,
            "optimizer": config.train.optimizer, "gflop_forward_backward": model_flops / 1e9, "gflop_optimizer": optimizer_flops / 1e9,
            "matmul_gflops_model_shapes": own, "matmul_gflops_large": large, "step_ms": 1e3 * step,
            "step_gflops": flops / step / 1e9, "share_of_model_shape_peak": flops / step / 1e9 / own,
            "share_of_large_peak": flops / step / 1e9 / large, "load": os.getloadavg()[0],
        }  # fmt: skip
        if config.train.optimizer == "muon":
            ns = newton_schulz_times(trainer, args.rounds)
            row |= {"newton_schulz_bfloat16_ms": 1e3 * ns["bfloat16"], "newton_schulz_float32_ms": 1e3 * ns["float32"]}
        if args.compile:
            row |= compile_rows(config, args.rounds, args.repeats)
        print(
            f"{name}: {row['params']:,} params, {row['tokens_per_step']:,} tokens/step, {row['gflop_forward_backward']:.2f} GFLOP "
            f"forward+backward + {row['gflop_optimizer']:.3f} optimizer; step {row['step_ms']:.1f} ms = {row['step_gflops']:.1f} GFLOP/s; "
            f"matmul at its shapes {own:.1f} GFLOP/s (step: {100 * row['share_of_model_shape_peak']:.0f} %), "
            f"at 2048^3 {large:.1f} (step: {100 * row['share_of_large_peak']:.0f} %); load {row['load']:.2f}",
            flush=True,
        )
        if "newton_schulz_float32_ms" in row:
            print(f"  Muon's orthogonalization of its {len(muon_parameters(trainer.model))} matrices: bfloat16 {row['newton_schulz_bfloat16_ms']:.2f} ms, float32 {row['newton_schulz_float32_ms']:.2f} ms")
        if args.compile:
            saved = row["eager_step_ms"] - row["compiled_step_ms"]
            payback = f"pays back its first compile after {1e3 * row['first_step_warm_s'] / saved:,.0f} steps (warm cache)" if saved > 0 else "saves nothing"
            print(
                f"  compiled step {row['compiled_step_ms']:.1f} ms against eager {row['eager_step_ms']:.1f} ms; first compiled step "
                f"{row['first_step_cold_s']:.1f} s with an empty cache, {row['first_step_warm_s']:.1f} s with a warm one; {payback}",
                flush=True,
            )
        if args.to_threshold:
            result = train(config, progress=False)
            grokking = result.grokking
            row |= {"threshold_step": grokking.threshold_step, "threshold_seconds": grokking.threshold_seconds, "stop_reason": result.stop_reason, "load_after_run": os.getloadavg()[0]}
            print(f"  to KL <= {config.train.kl_threshold:g}: step {grokking.threshold_step}, {grokking.threshold_seconds} s ({result.stop_reason}); load {os.getloadavg()[0]:.2f}", flush=True)
        rows.append(row)
    write_json(args.json, machine_text, {"rounds": args.rounds, "repeats": args.repeats, "threads": torch.get_num_threads()}, presets=rows)


if __name__ == "__main__":
    main()
