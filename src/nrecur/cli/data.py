"""``nrecur sample`` and ``nrecur bayes``: look at the data and at the ideal observer, for any task kind."""

from __future__ import annotations

import argparse
import inspect
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def register(subparsers) -> None:
    subparsers.add_parser(
        "sample",
        help="sample sequences with their hidden truth (print them, or write a .npz)",
        description="Sample sequences of any task kind. Without --out, print them with their hidden truth "
        "(n-recurrence: target positions marked); with --out, write tokens and hidden truth (n-recurrence: period, "
        "target, countdown, is_target_position, is_fake, transition_after; HMMs: states; modular: a, b, slot, "
        "in_distribution) to a .npz file, with the task's config as JSON under 'task'.",
        build=_sample_options,
    )
    subparsers.add_parser(
        "bayes",
        help="the exact Bayes observer: optimal loss per position, or the posterior on given tokens",
        description="Without --tokens: the Bayes-optimal next-token cross-entropy of the task per "
        "position (the floor no model can beat), with standard errors. With --tokens: the observer's beliefs "
        "after each token (n-recurrence: period and target; HMMs: the state; modular: the task vector).",
        build=_bayes_options,
    )


def _sample_options(sample: argparse.ArgumentParser) -> None:
    from nrecur.cli.options import add_task_options

    add_task_options(sample)
    sample.add_argument("--batch-size", type=int, default=4, help="number of sequences (default: 4)")
    sample.add_argument("--length", type=int, help="tokens per sequence (default: 32, or the task's whole sequence when shorter: 3 x n_examples for modular)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sample.add_argument("--split", choices=["in_distribution", "out_of_distribution"], help="modular tasks: training task vectors (default) or the others")
    sample.add_argument("--out", help="write a .npz file here instead of printing")
    sample.add_argument(
        "--overwrite", "--force", dest="overwrite", action="store_true",
        help="replace --out if it exists (--force is the same option, as in nrecur train)",
    )  # fmt: skip
    sample.set_defaults(handler=run_sample, command="sample")


def _bayes_options(bayes: argparse.ArgumentParser) -> None:
    from nrecur.cli.options import add_task_options

    add_task_options(bayes)
    bayes.add_argument("--tokens", help='a token sequence, e.g. "3 1 3 0 3"; prints the posterior after each token')
    bayes.add_argument("--length", type=int, help="context length for the optimal loss, without --tokens (default: 32, or the task's whole sequence when shorter)")
    bayes.add_argument("--batch-size", type=int, default=4096, help="sequences to average over, without --tokens (default: 4096)")
    bayes.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    bayes.add_argument("--top", type=int, default=3, help="with --tokens: most likely values shown per position (n-recurrence: targets; modular: a and b) (default: 3)")
    bayes.add_argument("--prior", choices=["in_distribution", "universal"], help="modular tasks: the observer's prior over task vectors (default: in_distribution)")
    bayes.set_defaults(handler=run_bayes, command="bayes")


# ---------------------------------------------------------------------------- sample


def run_sample(args: argparse.Namespace) -> int:
    from nrecur.cli.options import task_from_args
    from nrecur.cli.views import format_batch

    task = task_from_args(args)
    split = keyword_option(task.sample, "split", args.split, task.kind)
    if args.out is not None:
        if not args.out.strip():
            raise ValueError("--out is empty; give a file name such as data.npz")
        if os.path.isdir(args.out):
            raise IsADirectoryError(f"--out {args.out} is a folder; give a file name such as {os.path.join(args.out, 'data.npz')}")
        if os.path.exists(args.out) and not args.overwrite:
            raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
            raise FileNotFoundError(f"the folder of --out {args.out} does not exist")
    length = default_length(task, args.length)
    batch = task.sample(args.batch_size, length, args.seed, **split)
    if args.out is not None:
        batch.save(args.out, extra={"task": task.model_dump_json(), "seed": str(args.seed)})
        print(f"wrote {args.batch_size} sequences of {length} tokens to {args.out} (with the task as JSON under 'task')")
        return 0
    print(format_batch(task, batch))
    return 0


# ---------------------------------------------------------------------------- bayes


def parse_tokens(text: str, vocab_size: int) -> np.ndarray:
    import numpy as np

    pieces = text.replace(",", " ").split()
    if not pieces:
        raise ValueError("--tokens is empty; give tokens like \"3 1 3 0 3\"")
    try:
        values = [int(p) for p in pieces]
    except ValueError:
        raise ValueError(f"--tokens must be integers separated by spaces, got {text!r}") from None
    if min(values) < 0 or max(values) >= vocab_size:
        raise ValueError(f"--tokens must lie in 0..{vocab_size - 1} (vocab_size={vocab_size}), got {text!r}")
    return np.array(values, dtype=np.int64)


def default_length(task, length: int | None) -> int:
    """``--length`` as given, else 32 tokens or the task's whole sequence when that is shorter."""
    if length is not None:
        return length
    return min(32, task.max_length) if task.max_length is not None else 32


def keyword_option(method, name: str, value, kind: str) -> dict:
    """``{name: value}`` when the task's ``method`` takes ``name`` (modular: ``split``, ``prior``); {} when not given."""
    if value is None:
        return {}
    if name not in inspect.signature(method).parameters:
        raise ValueError(f"--{name} is for modular tasks; task kind {kind!r} has no {name}")
    return {name: value}


def run_bayes(args: argparse.Namespace) -> int:
    import numpy as np

    from nrecur.cli.options import task_from_args
    from nrecur.cli.views import posterior_table
    from nrecur.observer import bayes_cross_entropy

    task = task_from_args(args)
    observer = keyword_option(task.posterior, "prior", args.prior, task.kind)
    if args.top < 1:
        raise ValueError(f"--top must be an integer >= 1, got {args.top}")
    if args.tokens is not None:
        print(posterior_table(task, parse_tokens(args.tokens, task.vocab_size), args.top, **observer))
        return 0
    ce = bayes_cross_entropy(task, default_length(task, args.length), args.batch_size, args.seed, **observer)
    print(f"Bayes-optimal next-token cross-entropy, {ce.n_sequences} sequences of {ce.length} tokens (nats)")
    print(f"{'position':>8}  {'loss':>8}  {'stderr':>8}")
    for i, (loss, se) in enumerate(zip(ce.per_position, ce.per_position_stderr)):
        print(f"{i:>8}  {loss:8.4f}  {se:8.4f}")
    print(f"mean over positions: {ce.mean:.4f} ± {ce.stderr:.4f} nats/token (uniform guess: {np.log(task.vocab_size):.4f})")
    return 0
