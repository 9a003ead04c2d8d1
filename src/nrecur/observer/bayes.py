"""The Bayes-optimal cross-entropy of a task: the floor no model can beat.

Samples fresh sequences, runs the exact observer and averages the log-loss of
each next token. The standard error treats sequences as independent draws
(positions within a sequence are not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class BayesCrossEntropy:
    """Optimal next-token cross-entropy (nats) of a task at one context length."""

    per_position: np.ndarray
    """``[pos - 1]``: mean -log P(x[i+1] | x[0..i]) at prediction position i."""
    per_position_stderr: np.ndarray
    """``[pos - 1]``: standard error of ``per_position`` over sequences."""
    mean: float
    """Average over all predicted tokens."""
    stderr: float
    """Standard error of ``mean`` (over sequences)."""
    n_sequences: int
    length: int


def bayes_cross_entropy(
    task, length: int, batch_size: int = 4096, seed: int | Sequence[int] = 0, **observer
) -> BayesCrossEntropy:
    """Estimate the optimal cross-entropy of ``task`` on ``batch_size`` sequences of ``length`` tokens
    (``observer``: keyword arguments of ``task.posterior``, e.g. ``prior="universal"`` for modular tasks)."""
    if length < 2:
        raise ValueError(f"length must be >= 2 (there is nothing to predict otherwise), got {length}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 for a standard error, got {batch_size}")
    tokens = task.sample(batch_size, length, seed).tokens
    return summarize_log_loss(np.asarray(task.posterior(tokens, **observer).log_loss), length)


def summarize_log_loss(log_loss: np.ndarray, length: int) -> BayesCrossEntropy:
    """Means and standard errors of a ``[batch, pos - 1]`` log-loss table."""
    n = log_loss.shape[0]
    per_sequence = log_loss.mean(axis=1)
    return BayesCrossEntropy(
        per_position=log_loss.mean(axis=0),
        per_position_stderr=log_loss.std(axis=0, ddof=1) / np.sqrt(n),
        mean=float(per_sequence.mean()),
        stderr=float(per_sequence.std(ddof=1) / np.sqrt(n)),
        n_sequences=n,
        length=length,
    )
