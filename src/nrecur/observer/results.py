"""Typed results of the exact observers.

Every array is float64 and of the same kind as the tokens that went in: NumPy
in, NumPy out; a torch tensor in, a torch tensor out on the same device.
Index ``i`` along ``pos`` always means "having seen ``x[0..i]``": the
predictive distribution there is for token ``i + 1``, and the beliefs are about
the hidden state of position ``i + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Array = Any  # np.ndarray | torch.Tensor


class ImpossibleSequenceError(ValueError):
    """A token sequence has probability zero under the task."""


@dataclass(frozen=True)
class Posterior:
    """The exact observer of n-recurrence on a batch ``[batch, pos]``."""

    predictive: Array
    """``[batch, pos, vocab]``: P(x[i+1] = v | x[0..i])."""
    period: Array
    """``[batch, pos, period]``: P(period of position i+1 = periods[k] | x[0..i])."""
    target: Array
    """``[batch, pos, vocab]``: P(target of position i+1 = v | x[0..i])."""
    countdown: Array
    """``[batch, pos, period, max_period]``: P(period = periods[k], countdown c = j at position i+1 | x[0..i]);
    zero for ``j >= periods[k]``. ``c = 0`` means position i+1 is a target position."""
    log_loss: Array
    """``[batch, pos - 1]``: -log P(x[i+1] | x[0..i]) of the observed next token."""
    log_likelihood: Array
    """``[batch]``: log P(x[0..L-1]), the first token included."""
    impossible: Array
    """``[batch]``: position of the first token with probability zero, or -1. Only with
    ``impossible="inf"``: such a sequence's log-loss is ``inf`` from that token on, its
    log-likelihood ``-inf``, and its beliefs from that position on are NaN (undefined)."""

    @property
    def p_target_next(self) -> Array:
        """``[batch, pos]``: probability that position i+1 is a target position."""
        return self.countdown[..., 0].sum(-1)

    @property
    def phase(self) -> Array:
        """Old name of :attr:`countdown` (kept so existing code keeps working)."""
        return self.countdown


@dataclass(frozen=True)
class HMMPosterior:
    """The forward filter of a hidden Markov model on a batch ``[batch, pos]``."""

    predictive: Array
    """``[batch, pos, vocab]``: P(x[i+1] = v | x[0..i])."""
    belief: Array
    """``[batch, pos, state]``: P(state of position i+1 | x[0..i]) (the state that emits x[i+1])."""
    log_loss: Array
    """``[batch, pos - 1]``: -log P(x[i+1] | x[0..i])."""
    log_likelihood: Array
    """``[batch]``: log P(x[0..L-1])."""
    impossible: Array
    """``[batch]``: first position with probability zero, or -1 (only with ``impossible="inf"``)."""
