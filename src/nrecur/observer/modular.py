"""Exact observer of in-context modular arithmetic (SPEC §2.6): a posterior over task vectors.

Both priors are uniform over a set of task vectors (the training vectors, or all
``p²``), and a vector's likelihood is ``p^-2k`` times 1 if it reproduces every
observed answer ``z`` and 0 otherwise. So the posterior is uniform over the
*consistent* vectors of the prior's support, and everything follows from
counting them:

* next token an ``x`` or a ``y``: uniform over ``Z_p``;
* next token a ``z`` (having seen ``x``, ``y``): ``P(z) = #{consistent (a, b):
  a·x + b·y ≡ z} / #consistent``;
* after observing ``z``: keep the vectors that predicted it.

The consistent set is held as a flat list of live ``(sequence, a, b)`` pairs,
filtered once per example, and every count is one ``bincount`` over it. The
work is proportional to the number of live pairs, which collapses after the
first example or two (a prime ``p`` pins a vector down with two generic
examples), so a batch costs about ``batch · |support|`` pair operations in all
rather than ``batch · k · p²``. Batches are cut into chunks to bound the pair
list's memory.

Index ``i`` along ``pos`` means "having seen ``x[0..i]``", as for every
observer: ``predictive[:, i]`` is the distribution of token ``i + 1``, the
marginals ``a``, ``b`` and ``n_consistent`` describe the posterior after token
``i``. Sequences longer than ``3k`` are read as further examples of the same
vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from nrecur.observer._arrays import as_token_tensor, check_impossible
from nrecur.observer.results import Array, ImpossibleSequenceError
from nrecur.tasks.base import register_observer
from nrecur.tasks.modular import ModularICL

#: The priors over task vectors the observer knows.
PRIORS = ("in_distribution", "universal")

#: Live (sequence, vector) pairs per chunk of the batch: three int64 arrays of this size bound the memory.
CHUNK_PAIRS = 1 << 22


@dataclass(frozen=True)
class ModularPosterior:
    """The exact observer of in-context modular arithmetic on a batch ``[batch, pos]`` under one prior."""

    predictive: Array
    """``[batch, pos, vocab]``: P(x[i+1] = v | x[0..i]); uniform unless token i+1 is a z."""
    a: Array
    """``[batch, pos, vocab]``: P(a = v | x[0..i]), the posterior marginal of the first component."""
    b: Array
    """``[batch, pos, vocab]``: P(b = v | x[0..i]), the posterior marginal of the second component."""
    n_consistent: Array
    """``[batch, pos]``: number of task vectors with positive posterior after x[0..i] (int64)."""
    log_loss: Array
    """``[batch, pos - 1]``: -log P(x[i+1] | x[0..i]) of the observed next token."""
    log_likelihood: Array
    """``[batch]``: log P(x[0..L-1]), the first token included."""
    impossible: Array
    """``[batch]``: first position with probability zero, or -1 (only with ``impossible="inf"``). From
    there on the log-loss is ``inf`` and predictive and marginals are NaN (no vector is consistent)."""


@register_observer(ModularICL)
def modular_posterior(
    task: ModularICL,
    tokens,
    *,
    prior: Literal["in_distribution", "universal"] = "in_distribution",
    impossible: Literal["raise", "inf"] = "raise",
) -> ModularPosterior:
    """The exact observer of ``task`` on ``tokens [batch, pos]`` under a uniform prior over
    ``task.train_tasks`` (``"in_distribution"``) or over all p² task vectors (``"universal"``)."""
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    if impossible not in ("raise", "inf"):
        raise ValueError(f"impossible must be 'raise' or 'inf', got {impossible!r}")
    p = task.p
    x, back = as_token_tensor(tokens, p)
    B, L = x.shape
    device = x.device
    if prior == "universal":
        support = torch.arange(task.n_vectors, device=device)  # [vector]
    else:
        support = torch.tensor(task.train_task_index, device=device)  # [vector]
    f64 = dict(dtype=torch.float64, device=device)
    predictive = torch.empty(B, L, p, **f64)
    marginal_a = torch.empty(B, L, p, **f64)
    marginal_b = torch.empty(B, L, p, **f64)
    n_consistent = torch.empty(B, L, dtype=torch.long, device=device)
    chunk = max(1, CHUNK_PAIRS // len(support))
    for start in range(0, B, chunk):
        rows = slice(start, min(start + chunk, B))
        _filter(p, support, x[rows], predictive[rows], marginal_a[rows], marginal_b[rows], n_consistent[rows])

    log_p = torch.empty(B, L, **f64)  # [batch, pos]: log P(x[i] | x[0..i-1])
    log_p[:, 0] = -math.log(p)
    log_p[:, 1:] = torch.log(predictive[:, :-1].gather(2, x[:, 1:, None]).squeeze(2))
    try:
        first = check_impossible(log_p, impossible)
    except ImpossibleSequenceError as error:
        if prior != "in_distribution":
            raise
        raise ImpossibleSequenceError(
            f"{error} Under prior='in_distribution' a sequence of an out-of-distribution task vector is "
            "impossible as soon as an answer rules out every training vector; score those with prior='universal'."
        ) from None
    return ModularPosterior(
        predictive=back(predictive),
        a=back(marginal_a),
        b=back(marginal_b),
        n_consistent=back(n_consistent),
        log_loss=back(-log_p[:, 1:]),
        log_likelihood=back(log_p.sum(1)),
        impossible=back(first),
    )


def _filter(
    p: int,
    support: torch.Tensor,
    x: torch.Tensor,
    predictive: torch.Tensor,
    marginal_a: torch.Tensor,
    marginal_b: torch.Tensor,
    n_consistent: torch.Tensor,
) -> None:
    """Filter one chunk ``x [batch, pos]`` from a uniform prior over ``support [vector]`` (indices a·p + b),
    writing the predictive and the marginals of a and b (``[batch, pos, vocab]`` float64 each) and the
    number of consistent vectors (``[batch, pos]`` int64) into the given views."""
    B, L = x.shape
    device = x.device
    # The live pairs: sequence index and task vector, one entry per consistent (sequence, vector).
    seq = torch.arange(B, device=device).repeat_interleave(len(support))  # [pair]
    va, vb = (support // p).repeat(B), (support % p).repeat(B)  # [pair]
    count = torch.full((B,), len(support), dtype=torch.long, device=device)  # [batch]

    predictive.fill_(1.0 / p)  # x and y are uniform; z positions filled below
    # Before the first answer: the prior (positions 0 and 1).
    marginal_a[:, :2] = torch.bincount(support // p, minlength=p).double() / len(support)
    marginal_b[:, :2] = torch.bincount(support % p, minlength=p).double() / len(support)
    n_consistent[:, :2] = len(support)

    for ix in range(0, L - 1, 3):  # every example whose x and y are observed
        iy, iz = ix + 1, ix + 2
        answer = (va * x[:, ix][seq] + vb * x[:, iy][seq]) % p  # [pair]: the z each live vector predicts
        predictive[:, iy] = _histogram(seq, answer, B, p) / count[:, None]  # [batch, vocab]
        if iz == L:
            break
        keep = answer == x[:, iz][seq]  # [pair]
        seq, va, vb = seq[keep], va[keep], vb[keep]
        count = torch.bincount(seq, minlength=B)  # [batch]
        # The posterior after the answer holds until the next one (positions iz, iz+1, iz+2).
        marginal_a[:, iz : iz + 3] = _histogram(seq, va, B, p)[:, None] / count[:, None, None]
        marginal_b[:, iz : iz + 3] = _histogram(seq, vb, B, p)[:, None] / count[:, None, None]
        n_consistent[:, iz : iz + 3] = count[:, None]
    # No consistent vector left: every later prediction is undefined, as the marginals (0 / 0) already are.
    predictive.masked_fill_(n_consistent[..., None] == 0, torch.nan)


def _histogram(seq: torch.Tensor, value: torch.Tensor, B: int, p: int) -> torch.Tensor:
    """``[batch, vocab]`` float64: how many live pairs of each sequence have each ``value [pair]``."""
    return torch.bincount(seq * p + value, minlength=B * p).view(B, p).double()
