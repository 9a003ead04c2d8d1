"""How ``nrecur sample`` and ``nrecur bayes --tokens`` show each task kind: one entry per class.

A kind without an entry still prints: its tokens with every hidden-truth field
(sample), or is refused with a message (posterior table). A new kind adds its
views here; nothing else in the CLI changes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from nrecur.tasks import Batch, HMMBatch, HMMTask, NRecurrence, Sequences, Task
from nrecur.tasks.modular import ModularBatch, ModularICL


def _nrecurrence_sequences(task: NRecurrence, batch: Batch) -> list[str]:
    lines = ["[t] target position showing t   {f} fake token at a target position   | rule change after"]
    return lines + [format_sequence(batch, b) for b in range(len(batch))]


def format_sequence(batch: Batch, b: int) -> str:
    """One n-recurrence sequence: the rules in force, then the tokens with target positions marked."""
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


def _hmm_sequences(task: HMMTask, batch: HMMBatch) -> list[str]:
    names = task.process.state_names
    return ["token(state before it) at each position"] + [
        f"seq {b}: " + " ".join(f"{t}({names[s]})" for t, s in zip(batch.tokens[b], batch.states[b]))
        for b in range(len(batch))
    ]


def _modular_sequences(task: ModularICL, batch: ModularBatch) -> list[str]:
    lines = [f"examples 'x y z' with z = a*x + b*y mod {task.p}"]
    for b in range(len(batch)):
        where = "in-distribution" if batch.in_distribution[b] else "out-of-distribution"
        tokens = batch.tokens[b]
        examples = " | ".join(" ".join(str(t) for t in tokens[i : i + 3]) for i in range(0, len(tokens), 3))
        lines.append(f"seq {b}: (a, b) = ({batch.a[b]}, {batch.b[b]}), {where}\n  {examples}")
    return lines


SEQUENCE_VIEWS: dict[type, Callable[[Task, Sequences], list[str]]] = {
    NRecurrence: _nrecurrence_sequences,
    HMMTask: _hmm_sequences,
    ModularICL: _modular_sequences,
}
"""Task class → the lines that show a sample of it."""


def format_batch(task: Task, batch: Sequences) -> str:
    """Sequences as text, with the hidden truth the way each kind reads best."""
    view = _lookup(SEQUENCE_VIEWS, task)
    if view is not None:
        return "\n".join(view(task, batch))
    lines = []  # a kind without its own view: tokens, then each hidden-truth field
    for b in range(len(batch)):
        lines.append(f"seq {b}: " + " ".join(map(str, batch.tokens[b])))
        lines += [f"  {name}: {getattr(batch, name)[b]}" for name in batch.field_names() if name != "tokens"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- posterior tables
#
# A belief view gives the table's title, its column headers, and the cells of row i (beliefs after x[0..i]).


def _top(probs: np.ndarray, label: str, top: int) -> str:
    order = np.argsort(-probs, kind="stable")[:top]
    return "  ".join(f"{label}={v}:{probs[v]:.4f}" for v in order)


def _nrecurrence_beliefs(task: NRecurrence, post, top: int):
    columns = [f"{f'P(n={n})':>8}" for n in task.periods] + [f"{'P(target pos)':>13}", " most likely targets"]

    def row(i: int) -> str:
        periods = " ".join(f"{p:8.4f}" for p in post.period[0, i])
        return f"{periods} {post.p_target_next[0, i]:13.4f}  {_top(post.target[0, i], 't', top)}"

    return "posterior over the rule of the NEXT position, after each token", columns, row


def _hmm_beliefs(task: HMMTask, post, top: int):
    columns = [f"{f'P({name})':>8}" for name in task.process.state_names]
    return (
        "belief over the state of the NEXT position, after each token",
        columns,
        lambda i: " ".join(f"{p:8.4f}" for p in post.belief[0, i]),
    )


def _modular_beliefs(task: ModularICL, post, top: int):
    def row(i: int) -> str:
        return f"{int(post.n_consistent[0, i]):>10}  {_top(post.a[0, i], 'a', top)}   {_top(post.b[0, i], 'b', top)}"

    return "posterior over the task vector (a, b) after each token", [f"{'consistent':>10}", " most likely a, then b"], row


BELIEF_VIEWS: dict[type, Callable] = {
    NRecurrence: _nrecurrence_beliefs,
    HMMTask: _hmm_beliefs,
    ModularICL: _modular_beliefs,
}
"""Task class → ``fn(task, posterior, top) -> (title, column headers, row(i) -> str)``."""


def posterior_table(task: Task, tokens: np.ndarray, top: int, **observer) -> str:
    """The observer's beliefs after each token of ``tokens [pos]``, one row per position."""
    view = _lookup(BELIEF_VIEWS, task)
    if view is None:
        raise ValueError(f"there is no posterior table for task kind {task.kind!r}")
    post = task.posterior(tokens[None, :], impossible="inf", **observer)
    title, columns, row = view(task, post, top)
    impossible = int(post.impossible[0])
    lines = [title, f"{'pos':>4} {'token':>5} {'-log p':>7} " + " ".join(columns)]
    for i, token in enumerate(tokens):
        loss = "-" if i == 0 else f"{post.log_loss[0, i - 1]:7.3f}"
        if impossible >= 0 and i >= impossible:
            lines.append(f"{i:>4} {token:>5} {'inf':>7}  impossible under this task (probability 0)")
            break
        lines.append(f"{i:>4} {token:>5} {loss:>7} {row(i)}")
    return "\n".join(lines)


def _lookup(views: dict[type, Callable], task: Task) -> Callable | None:
    return next((views[cls] for cls in type(task).__mro__ if cls in views), None)
