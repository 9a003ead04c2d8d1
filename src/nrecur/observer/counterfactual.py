"""The observer's counterfactual: its predictive when one variable of its belief comes from another sequence.

n-recurrence has two causal variables (SPEC §5): *what* (the target ``t``) and
*when* (the timing ``(n, c)``: period and countdown). After a base prefix the
observer holds ``P_b(n, t, c)``, after a source prefix of the same length
``P_s``. The counterfactual belief keeps the base's marginal over one variable
and takes the source's over the other::

    what:  Q(n, t, c) ∝ P_b(n, c) · P_s(t)
    when:  Q(n, t, c) ∝ P_s(n, c) · P_b(t)
    both:  Q(n, t, c) ∝ P_s(n, c) · P_s(t)

(``both``: every variable from the source, the product of its marginals — the
reference for the dimension of the whole belief). A product of marginals can
put mass on a rule the prior never draws (a joint ``rule_prior`` with absent
rules): such a state emits no token with positive probability, so ``Q`` keeps
the states of rules with positive prior and is renormalized over them; where
none is left (the base believes only in periods the prior never pairs with the
source's targets) the counterfactual is undefined: NaN, flagged in
``defined``. The
counterfactual predictive of the next token is then computed from ``Q`` exactly
as the filter computes its own (the filter's ``_predict``, with the base's
tokens as the observed window for ``"recent"`` fakes): the base's sequence was
observed, only the belief about one variable was swapped.

Tensors: ``belief [batch, pos, period, max_period, vocab]`` over ``(n, c, t)``
(zero for ``c >= n``), ``predictive [batch, pos, vocab]``; index ``i`` along
``pos`` is "having seen ``x[0..i]``", as in :class:`~nrecur.observer.results.Posterior`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from nrecur.observer.nrecurrence import _predict, _Tables, _window_counts
from nrecur.tasks.nrecurrence import NRecurrence

__all__ = ["VARIABLES", "Counterfactual", "counterfactual", "counterfactual_belief", "predictive_of_belief"]

Variable = Literal["what", "when", "both"]

VARIABLES: tuple[str, ...] = ("what", "when", "both")
"""The variables a counterfactual swaps: the target, the timing ``(n, c)``, or both."""


@dataclass(frozen=True)
class Counterfactual:
    """The counterfactual belief and predictive on a batch of (base, source) pairs (NumPy, float64)."""

    variable: str
    belief: np.ndarray
    """``[batch, pos, period, max_period, vocab]``: Q(n = periods[k], c, t) about position i+1."""
    predictive: np.ndarray
    """``[batch, pos, vocab]``: the counterfactual P(x[i+1] = v)."""
    defined: np.ndarray
    """``[batch, pos]`` bool: some state of a rule with positive prior has mass (elsewhere belief and
    predictive are NaN)."""


def counterfactual_belief(task: NRecurrence, base, source, variable: Variable) -> np.ndarray:
    """``Q [batch, pos, period, max_period, vocab]`` from the observer's posteriors ``base`` and ``source``
    (:class:`~nrecur.observer.results.Posterior` of the same shape), renormalized over the rules of positive
    prior; NaN where no such rule has mass."""
    if variable not in VARIABLES:
        raise ValueError(f"variable must be one of {', '.join(VARIABLES)}, got {variable!r}")
    timing = np.asarray((base if variable == "what" else source).countdown, dtype=np.float64)  # [batch, pos, period, max_period]
    target = np.asarray((source if variable != "when" else base).target, dtype=np.float64)  # [batch, pos, vocab]
    allowed = (task.rule_probs > 0).astype(np.float64)  # [period, vocab]
    belief = timing[..., None] * target[:, :, None, None, :] * allowed[None, None, :, None, :]
    total = belief.sum(axis=(2, 3, 4))  # [batch, pos]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total[..., None, None, None] > 0, belief / total[..., None, None, None], np.nan)


def predictive_of_belief(task: NRecurrence, belief: np.ndarray, tokens) -> np.ndarray:
    """The predictive ``[batch, pos, vocab]`` the observer computes from ``belief`` ``[batch, pos, period,
    max_period, vocab]`` about position i+1, having seen ``tokens [batch, pos]`` (their window decides
    ``"recent"`` fakes)."""
    x = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    B, L = x.shape
    if belief.shape != (B, L, task.n_periods, task.max_period, task.vocab_size):
        raise ValueError(
            f"belief must have shape [batch, pos, period, max_period, vocab] = {(B, L, task.n_periods, task.max_period, task.vocab_size)}, "
            f"got {belief.shape}"
        )
    tables = _Tables(task, x.device, L)
    counts = _window_counts(x, task.vocab_size) if tables.window else None
    q = torch.as_tensor(belief, dtype=torch.float64).reshape(B, L, -1, task.vocab_size)  # [batch, pos, period·max_period, vocab]
    mass = q.view(B, L, task.n_periods, task.max_period, -1).sum(3)  # [batch, pos, period, vocab]
    out = torch.empty(B, L, task.vocab_size, dtype=torch.float64)
    for i in range(L):
        # The filter's slots (period, absolute phase) at position j = i + 1 hold the countdown cells.
        alpha = torch.zeros(B, tables.K, task.vocab_size, dtype=torch.float64)  # [batch, slot, vocab]
        alpha[:, tables.countdown_slots[i + 1]] = q[:, i, tables.countdown_cells]
        out[:, i], _, _ = _predict(task, tables, i + 1, alpha, mass[:, i], counts)
    return out.numpy()


def counterfactual(task: NRecurrence, base_tokens, source_tokens, variable: Variable) -> Counterfactual:
    """The observer's counterfactual for ``variable`` on pairs ``base_tokens``, ``source_tokens`` ``[batch,
    pos]`` (row ``i`` of each is one pair; the same length, so both beliefs are about the same position)."""
    base_tokens, source_tokens = np.asarray(base_tokens), np.asarray(source_tokens)
    if base_tokens.shape != source_tokens.shape:
        raise ValueError(f"base and source tokens must have the same shape [batch, pos], got {base_tokens.shape} and {source_tokens.shape}")
    belief = counterfactual_belief(task, task.posterior(base_tokens), task.posterior(source_tokens), variable)
    defined = ~np.isnan(belief).any(axis=(2, 3, 4))  # [batch, pos]
    predictive = predictive_of_belief(task, np.nan_to_num(belief), base_tokens)
    predictive[~defined] = np.nan
    return Counterfactual(variable=variable, belief=belief, predictive=predictive, defined=defined)
