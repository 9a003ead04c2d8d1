"""Steps to grok with and without Grokfast, in the classic finite-data setting.

A fixed training set of ``--train-size`` sequences is repeated for many epochs
(full batch, AdamW with strong weight decay, as in the grokking literature);
the run stops when KL(observer || model) on fresh sequences reaches
``--threshold``. Each seed is trained twice, with the plain gradient and with
Grokfast's EMA filter (``--alpha``, ``--lamb``); the table gives the
memorization step (training loss within 0.01 of its Bayes loss), the step and
time at which the threshold was reached, and the final KL.

    OMP_NUM_THREADS=1 python benchmarks/bench_grokfast.py            # ~ minutes on a CPU
    python benchmarks/bench_grokfast.py --train-size 256 --steps 4000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse

from _common import machine

from nrecur.model import GPTConfig
from nrecur.tasks import NRecurrence
from nrecur.train import RunConfig, TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab-size", type=int, default=6)
    parser.add_argument("--periods", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--n-ctx", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=128, help="training sequences (full batch)")
    parser.add_argument("--steps", type=int, default=3000, help="step cap per run")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1.0)
    parser.add_argument("--threshold", type=float, default=0.02, help="eval KL that counts as grokked (nats/token)")
    parser.add_argument("--alpha", type=float, default=0.98)
    parser.add_argument("--lamb", type=float, default=2.0)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()

    task = NRecurrence(vocab_size=args.vocab_size, periods=tuple(args.periods))
    model = GPTConfig(
        vocab_size=args.vocab_size, n_ctx=args.n_ctx, d_model=args.d_model, n_layers=args.n_layers,
        n_heads=4, d_head=args.d_model // 4, d_mlp=4 * args.d_model,
    )  # fmt: skip
    print(f"machine: {machine()}")
    print(
        f"task V={args.vocab_size} periods={args.periods} context {args.n_ctx}; model {args.n_layers} layers d_model "
        f"{args.d_model}; finite set of {args.train_size} sequences, full batch, lr {args.lr}, weight decay "
        f"{args.weight_decay}; grokked = eval KL <= {args.threshold}\n"
    )
    print(f"{'seed':>4} {'grokfast':>10} {'memorized':>10} {'grokked':>9} {'seconds':>8} {'final KL':>9} {'train excess':>13}")
    for seed in args.seeds:
        for lamb in (0.0, args.lamb):
            config = RunConfig(
                task=task,
                model=model,
                train=TrainConfig(
                    mode="finite", train_size=args.train_size, batch_size=args.train_size, steps=args.steps,
                    lr=args.lr, weight_decay=args.weight_decay, warmup_steps=10, schedule="constant",
                    grokfast_lambda=lamb, grokfast_alpha=args.alpha, init_seed=seed, data_seed=1000 + seed,
                    eval_every=args.eval_every, eval_size=512, kl_threshold=args.threshold, stop_when_grokked=True,
                    device="cpu",
                ),
            )  # fmt: skip
            result = train(config, progress=False)
            grok = result.grokking
            label = f"λ={lamb:g}" if lamb else "off"
            grokked = str(grok.grok_step) if grok.grok_step is not None else f">{result.steps}"
            memorized = str(grok.memorization_step) if grok.memorization_step is not None else "-"
            print(
                f"{seed:>4} {label:>10} {memorized:>10} {grokked:>9} {result.seconds:>8.1f} "
                f"{result.evaluations['eval'].kl:>9.4f} {result.evaluations['train'].excess_ce:>13.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
