"""Steps to the KL threshold with and without Grokfast.

Each seed is trained once per ``--lambdas`` value (0 = plain gradients; > 0 =
Grokfast's EMA filter with ``--alpha``), starting from a preset's deterministic
run, until KL(observer || model) on fresh sequences reaches ``--threshold`` or
``--steps`` run out. The table gives the memorization step (training loss
within 0.01 of its Bayes loss), the step and time at which the threshold was
reached, and the final KL.

``--mode finite --train-size N`` switches to the classic grokking setting: a
fixed training set of N sequences (full batch unless ``--batch-size``), weight
decay 1.0, constant learning rate.

    OMP_NUM_THREADS=1 python benchmarks/bench_grokfast.py                       # quick-adamw, online, ~5 min
    python benchmarks/bench_grokfast.py --mode finite --train-size 1024 --batch-size 64 --lr 3e-3
"""

from __future__ import annotations

import argparse

from _common import machine

from nrecur.train import RunConfig, train
from nrecur.train.presets import PRESETS, get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quick-adamw", choices=sorted(PRESETS))
    parser.add_argument("--mode", default="online", choices=["online", "finite"])
    parser.add_argument("--train-size", type=int, default=2048, help="finite mode: training sequences")
    parser.add_argument("--batch-size", type=int, help="finite mode: sequences per step (default: full batch)")
    parser.add_argument("--steps", type=int, help="step cap (default: the preset's)")
    parser.add_argument("--lr", type=float, help="default: the preset's")
    parser.add_argument("--weight-decay", type=float, help="default: the preset's (finite mode: 1.0)")
    parser.add_argument("--threshold", type=float, default=0.02, help="eval KL that counts as converged (nats/token)")
    parser.add_argument("--alpha", type=float, default=0.98)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 2.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()

    base: RunConfig = get_preset(args.preset).deterministic
    update = {"kl_threshold": args.threshold, "stop_at_threshold": True, "time_budget": 0.0, "device": "cpu"}
    if args.mode == "finite":
        update.update(
            mode="finite", train_size=args.train_size, batch_size=args.batch_size or args.train_size,
            schedule="constant", weight_decay=1.0, lr=1e-3, warmup_steps=10,
        )  # fmt: skip
    for name in ("steps", "lr", "weight_decay"):
        if getattr(args, name) is not None:
            update[name] = getattr(args, name)
    base = base.model_copy(update={"train": base.train.model_copy(update=update)})
    t = base.train
    print(f"machine: {machine()}")
    print(
        f"preset {args.preset}: task V={base.task.vocab_size} periods={list(base.task.periods)} context {base.length}; "
        f"model {base.model.n_layers} layers d_model {base.model.d_model} {base.model.n_heads} heads; {t.mode} data"
        + (f" ({t.train_size} sequences)" if t.mode == "finite" else "")
        + f", batch {min(t.batch_size, t.train_size) if t.mode == 'finite' else t.batch_size}"
        + f"; lr {t.lr} ({t.schedule}), weight decay {t.weight_decay}, cap {t.steps} steps; threshold = eval KL <= {args.threshold}\n"
    )
    print(f"{'seed':>4} {'grokfast':>12} {'memorized':>10} {'threshold':>9} {'seconds':>8} {'final KL':>9}")
    for seed in args.seeds:
        for lamb in args.lambdas:
            train_config = t.model_copy(
                update={"grokfast_lambda": lamb, "grokfast_alpha": args.alpha, "init_seed": seed, "data_seed": 1000 + seed}
            )
            result = train(base.model_copy(update={"train": train_config}), progress=False)
            milestones = result.grokking
            label = f"α={args.alpha:g} λ={lamb:g}" if lamb else "off"
            reached = str(milestones.threshold_step) if milestones.threshold_step is not None else f">{result.steps}"
            memorized = str(milestones.memorization_step) if milestones.memorization_step is not None else "-"
            print(
                f"{seed:>4} {label:>12} {memorized:>10} {reached:>9} {result.seconds:>8.1f} "
                f"{result.evaluations['eval'].kl:>9.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
