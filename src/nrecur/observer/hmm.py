"""Dense forward filter of a hidden Markov model (O(states²) per token).

``belief ← belief @ T[x] / P(x)``; sequences are grouped by their token at
each position so every group costs one matrix product.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from nrecur.observer._arrays import as_token_tensor, check_impossible
from nrecur.observer.results import HMMPosterior
from nrecur.tasks.base import register_observer
from nrecur.tasks.hmm import HMMProcess, HMMTask


@register_observer(HMMProcess)
def process_posterior(process: HMMProcess, tokens, *, impossible: Literal["raise", "inf"] = "raise") -> HMMPosterior:
    """The forward filter of ``process`` on ``tokens [batch, pos]``."""
    return hmm_posterior(process.transitions, process.initial, tokens, impossible=impossible)


@register_observer(HMMTask)
def task_posterior(task: HMMTask, tokens, *, impossible: Literal["raise", "inf"] = "raise") -> HMMPosterior:
    """The forward filter of an HMM task config (Mess3, RRXOR, HMM) on ``tokens [batch, pos]``."""
    return process_posterior(task.process, tokens, impossible=impossible)


def hmm_posterior(transitions, initial, tokens, *, impossible: Literal["raise", "inf"] = "raise") -> HMMPosterior:
    """Filter ``tokens [batch, pos]`` through ``transitions [vocab, state, state]`` from ``initial [state]``."""
    if impossible not in ("raise", "inf"):
        raise ValueError(f"impossible must be 'raise' or 'inf', got {impossible!r}")
    V, S = np.shape(transitions)[0], np.shape(transitions)[1]
    x, back = as_token_tensor(tokens, V)
    B, L = x.shape
    f64 = dict(dtype=torch.float64, device=x.device)
    T = torch.as_tensor(np.asarray(transitions), **f64)  # [vocab, state, state]
    emit = T.sum(2).T  # [state, vocab]: P(x | state)
    belief = torch.as_tensor(np.asarray(initial), **f64).expand(B, S).clone()  # [batch, state]
    predictive = torch.empty(B, L, V, **f64)
    beliefs = torch.empty(B, L, S, **f64)
    log_p = torch.empty(B, L, **f64)
    for i in range(L):
        pred = belief @ emit  # [batch, vocab]
        if i > 0:
            predictive[:, i - 1] = pred
        xi = x[:, i]
        joint = torch.empty_like(belief)
        for v in range(V):
            rows = torch.nonzero(xi == v).flatten()
            if len(rows):
                joint[rows] = belief[rows] @ T[v]
        z = joint.sum(1)
        log_p[:, i] = torch.log(z)
        belief = joint / z[:, None]
        beliefs[:, i] = belief
    predictive[:, L - 1] = belief @ emit
    first = check_impossible(log_p, impossible)
    return HMMPosterior(
        predictive=back(predictive),
        belief=back(beliefs),
        log_loss=back(-log_p[:, 1:]),
        log_likelihood=back(log_p.sum(1)),
        impossible=back(first),
    )
