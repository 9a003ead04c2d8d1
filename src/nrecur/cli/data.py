"""``nrecur sample`` and ``nrecur bayes``: look at the data and at the ideal observer, for any task kind."""

from __future__ import annotations

import argparse
import inspect
import os

import numpy as np

from nrecur.cli.options import add_task_options, task_from_args
from nrecur.observer import bayes_cross_entropy
from nrecur.tasks import Batch, HMMBatch, NRecurrence, Task
from nrecur.tasks.hmm import HMMTask
from nrecur.tasks.modular import ModularBatch, ModularICL


def register(subparsers) -> None:
    sample = subparsers.add_parser(
        "sample",
        help="sample sequences with their hidden truth (print them, or write a .npz)",
        description="Sample sequences of any task kind. Without --out, print them with their hidden truth "
        "(n-recurrence: target positions marked); with --out, write tokens and hidden truth (n-recurrence: period, "
        "target, countdown, is_target_position, is_fake, transition_after; HMMs: states; modular: a, b, slot, "
        "in_distribution) to a .npz file, with the task's config as JSON under 'task'.",
    )
    add_task_options(sample)
    sample.add_argument("--batch-size", type=int, default=4, help="number of sequences (default: 4)")
    sample.add_argument("--length", type=int, default=32, help="tokens per sequence (default: 32)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sample.add_argument("--split", choices=["in_distribution", "out_of_distribution"], help="modular tasks: training task vectors (default) or the others")
    sample.add_argument("--out", help="write a .npz file here instead of printing")
    sample.add_argument(
        "--overwrite", "--force", dest="overwrite", action="store_true",
        help="replace --out if it exists (--force is the same option, as in nrecur train)",
    )  # fmt: skip
    sample.set_defaults(handler=run_sample, command="sample")

    bayes = subparsers.add_parser(
        "bayes",
        help="the exact Bayes observer: optimal loss per position, or the posterior on given tokens",
        description="Without --tokens: the Bayes-optimal next-token cross-entropy of the task per "
        "position (the floor no model can beat), with standard errors. With --tokens: the observer's beliefs "
        "after each token (n-recurrence: period and target; HMMs: the state; modular: the task vector).",
    )
    add_task_options(bayes)
    bayes.add_argument("--tokens", help='a token sequence, e.g. "3 1 3 0 3"; prints the posterior after each token')
    bayes.add_argument("--length", type=int, default=32, help="context length for the optimal loss, without --tokens (default: 32)")
    bayes.add_argument("--batch-size", type=int, default=4096, help="sequences to average over, without --tokens (default: 4096)")
    bayes.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    bayes.add_argument("--top", type=int, default=3, help="most likely targets shown per position (default: 3)")
    bayes.set_defaults(handler=run_bayes, command="bayes")


# ---------------------------------------------------------------------------- sample


def run_sample(args: argparse.Namespace) -> int:
    task = task_from_args(args)
    split = {}
    if args.split is not None:
        if "split" not in inspect.signature(task.sample).parameters:
            raise ValueError(f"--split is for modular tasks; task kind {task.kind!r} has no splits")
        split = {"split": args.split}
    if args.out is not None:
        if not args.out.strip():
            raise ValueError("--out is empty; give a file name such as data.npz")
        if os.path.isdir(args.out):
            raise IsADirectoryError(f"--out {args.out} is a folder; give a file name such as {os.path.join(args.out, 'data.npz')}")
        if os.path.exists(args.out) and not args.overwrite:
            raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
            raise FileNotFoundError(f"the folder of --out {args.out} does not exist")
    batch = task.sample(args.batch_size, args.length, args.seed, **split)
    if args.out is not None:
        batch.save(args.out, extra={"task": task.model_dump_json(), "seed": str(args.seed)})
        print(f"wrote {args.batch_size} sequences of {args.length} tokens to {args.out} (with the task as JSON under 'task')")
        return 0
    print(format_batch(task, batch))
    return 0


def format_batch(task: Task, batch) -> str:
    """Sequences as text, with the hidden truth the way each kind reads best."""
    if isinstance(batch, Batch):
        lines = ["[t] target position showing t   {f} fake token at a target position   | rule change after"]
        lines += [format_sequence(batch, b) for b in range(len(batch))]
    elif isinstance(batch, HMMBatch):
        names = task.process.state_names
        lines = ["token(state) at each position"]
        lines += [
            f"seq {b}: " + " ".join(f"{t}({names[s]})" for t, s in zip(batch.tokens[b], batch.states[b]))
            for b in range(len(batch))
        ]
    elif isinstance(batch, ModularBatch):
        lines = [f"examples 'x y z' with z = a*x + b*y mod {task.p}"]
        for b in range(len(batch)):
            where = "in-distribution" if batch.in_distribution[b] else "out-of-distribution"
            tokens = batch.tokens[b]
            examples = " | ".join(" ".join(str(t) for t in tokens[i : i + 3]) for i in range(0, len(tokens), 3))
            lines.append(f"seq {b}: (a, b) = ({batch.a[b]}, {batch.b[b]}), {where}\n  {examples}")
    else:  # a kind without its own layout: tokens, then each hidden-truth field
        lines = []
        for b in range(len(batch)):
            lines.append(f"seq {b}: " + " ".join(map(str, batch.tokens[b])))
            lines += [f"  {name}: {getattr(batch, name)[b]}" for name in batch.field_names() if name != "tokens"]
    return "\n".join(lines)


def format_sequence(batch: Batch, b: int) -> str:
    """One sequence as text: the rules in force, then the tokens with target positions marked."""
    rules, cells = [], []
    for i, token in enumerate(batch.tokens[b]):
        rule = f"n={batch.period[b, i]} t={batch.target[b, i]}"
        if not rules or batch.transition_after[b, i - 1]:
            rules.append(rule)
        if batch.is_fake[b, i]:
            cells.append(f"{{{token}}}")
        elif batch.is_target_position[b, i]:
            cells.append(f"[{token}]")
        else:
            cells.append(f" {token} ")
        if batch.transition_after[b, i] and i + 1 < batch.tokens.shape[1]:
            cells.append("|")
    return f"seq {b}: " + " -> ".join(rules) + "\n  " + "".join(cells)


# ---------------------------------------------------------------------------- bayes


def parse_tokens(text: str, vocab_size: int) -> np.ndarray:
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


def run_bayes(args: argparse.Namespace) -> int:
    task = task_from_args(args)
    if args.top < 1:
        raise ValueError(f"--top must be an integer >= 1, got {args.top}")
    if args.tokens is not None:
        print(posterior_table(task, parse_tokens(args.tokens, task.vocab_size), args.top))
        return 0
    ce = bayes_cross_entropy(task, args.length, args.batch_size, args.seed)
    print(f"Bayes-optimal next-token cross-entropy, {ce.n_sequences} sequences of {ce.length} tokens (nats)")
    print(f"{'position':>8}  {'loss':>8}  {'stderr':>8}")
    for i, (loss, se) in enumerate(zip(ce.per_position, ce.per_position_stderr)):
        print(f"{i:>8}  {loss:8.4f}  {se:8.4f}")
    print(f"mean over positions: {ce.mean:.4f} ± {ce.stderr:.4f} nats/token (uniform guess: {np.log(task.vocab_size):.4f})")
    return 0


def posterior_table(task: Task, tokens: np.ndarray, top: int) -> str:
    """The observer's beliefs after each token, one row per position."""
    if isinstance(task, NRecurrence):
        return _nrecurrence_table(task, tokens, top)
    post = task.posterior(tokens[None, :], impossible="inf")
    if isinstance(task, HMMTask):
        columns = [f"P({name})" for name in task.process.state_names]
        beliefs = lambda i: post.belief[0, i]  # noqa: E731
        what = "belief over the state of the NEXT position, after each token"
    elif isinstance(task, ModularICL):
        columns = ["consistent"] + [f"P(a={v})" for v in range(task.p)][:top] + [f"P(b={v})" for v in range(task.p)][:top]
        beliefs = lambda i: np.concatenate([[post.n_consistent[0, i]], post.a[0, i, :top], post.b[0, i, :top]])  # noqa: E731
        what = f"posterior over the task vector (a, b) after each token ({task.n_tasks} training vectors as prior)"
    else:
        raise ValueError(f"no posterior table for task kind {task.kind!r}")
    return _table(what, columns, tokens, post, beliefs)


def _table(what: str, columns: list[str], tokens: np.ndarray, post, beliefs) -> str:
    impossible = int(post.impossible[0])
    lines = [what, f"{'pos':>4} {'token':>5} {'-log p':>7} " + " ".join(f"{c:>10}" for c in columns)]
    for i, token in enumerate(tokens):
        loss = "-" if i == 0 else f"{post.log_loss[0, i - 1]:7.3f}"
        if impossible >= 0 and i >= impossible:
            lines.append(f"{i:>4} {token:>5} {'inf':>7}  impossible under this task (probability 0)")
            break
        lines.append(f"{i:>4} {token:>5} {loss:>7} " + " ".join(f"{v:10.4f}" for v in beliefs(i)))
    return "\n".join(lines)


def _nrecurrence_table(task: NRecurrence, tokens: np.ndarray, top: int) -> str:
    post = task.posterior(tokens[None, :], impossible="inf")
    impossible = int(post.impossible[0])
    period_cols = [f"P(n={n})" for n in task.periods]
    header = f"{'pos':>4} {'token':>5} {'-log p':>7} " + " ".join(f"{c:>8}" for c in period_cols)
    header += f" {'P(target pos)':>13}  most likely targets"
    lines = ["posterior over the rule of the NEXT position, after each token", header]
    for i, token in enumerate(tokens):
        loss = "-" if i == 0 else f"{post.log_loss[0, i - 1]:7.3f}"
        if impossible >= 0 and i >= impossible:
            lines.append(f"{i:>4} {token:>5} {'inf':>7}  impossible under this task (probability 0)")
            break
        periods = " ".join(f"{p:8.4f}" for p in post.period[0, i])
        order = np.argsort(-post.target[0, i], kind="stable")[:top]
        targets = "  ".join(f"t={t}:{post.target[0, i, t]:.4f}" for t in order)
        lines.append(f"{i:>4} {token:>5} {loss:>7} {periods} {post.p_target_next[0, i]:13.4f}  {targets}")
    return "\n".join(lines)
