"""Pairs for activation patching: destinations and sources of different rules, and how far a prediction moved.

:func:`sample_pairs` draws destination sequences that each follow one rule
(the task made deterministic) and pairs each with a source sequence whose
target differs, beside the exact observer's prediction for the source's next
token (``O_src``). :func:`moved_toward` measures a patched prediction against
it: ``1 − KL(O_src ‖ patched) / KL(O_src ‖ clean)``, 0 for no change and 1 for
the source's prediction. :mod:`nrecur.analysis.patching` uses both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nrecur.tasks import NRecurrence
from nrecur.tasks.sampler import Batch

__all__ = ["PatchPairs", "deterministic_task", "kl_to", "moved_toward", "sample_pairs"]


# ---------------------------------------------------------------------------- pairs


def deterministic_task(task: NRecurrence) -> NRecurrence:
    """``task`` with ``p_noise = p_transition = 0``: every sequence follows one rule from start to end."""
    return type(task).model_validate({**task.model_dump(), "p_noise": 0.0, "p_transition": 0.0})


@dataclass(frozen=True)
class PatchPairs:
    """Destination and source sequences side by side (pair ``i`` is row ``i`` of both)."""

    destination: Batch
    source: Batch
    observer_source: np.ndarray
    """``[batch, vocab]`` the observer's predictive for the source at its last position (``O_src``)."""

    @property
    def period_differs(self) -> np.ndarray:
        """``[batch]`` bool: the source's period is not the destination's."""
        return self.destination.period[:, 0] != self.source.period[:, 0]


def sample_pairs(task: NRecurrence, n_pairs: int, length: int, seed: int = 0) -> PatchPairs:
    """``n_pairs`` destinations from ``task`` made deterministic, each paired with the next unused sequence
    of a second sample whose target differs; ``O_src`` comes from ``task``'s own observer."""
    rules = deterministic_task(task)
    destination = rules.sample(n_pairs, length, seed)
    pool = rules.sample(4 * n_pairs, length, seed + 1)
    used = np.zeros(len(pool), dtype=bool)
    chosen = np.empty(n_pairs, dtype=np.int64)
    for i, target in enumerate(destination.target[:, 0]):
        candidates = np.flatnonzero(~used & (pool.target[:, 0] != target))
        if not len(candidates):
            raise ValueError(f"could not find {n_pairs} source sequences with a different target; is there more than one target?")
        chosen[i] = candidates[0]
        used[chosen[i]] = True
    source = pool.select(chosen)
    observer = np.asarray(task.posterior(source.tokens).predictive, dtype=np.float64)[:, -1]
    return PatchPairs(destination=destination, source=source, observer_source=observer)


# ---------------------------------------------------------------------------- how far a prediction moved


def kl_to(target: Tensor, log_probs: Tensor) -> Tensor:
    """``KL(target ‖ exp(log_probs))`` over the last axis; ``target [batch, vocab]`` broadcast against
    ``log_probs [batch, ..., vocab]`` → ``[batch, ...]`` (float64)."""
    target = target.double().reshape(target.shape[0], *([1] * (log_probs.dim() - 2)), target.shape[-1])
    log_target = torch.where(target > 0, target.log(), torch.zeros_like(target))
    return (target * (log_target - log_probs.double())).sum(-1)


def moved_toward(target: Tensor, clean: Tensor, patched: Tensor) -> Tensor:
    """``1 - KL(target ‖ patched) / KL(target ‖ clean)``: ``target [batch, vocab]`` probabilities, ``clean
    [batch, vocab]`` and ``patched [batch, ..., vocab]`` log-probabilities → ``[batch, ...]``."""
    before = kl_to(target, clean[:, None, :]).reshape(-1, *([1] * (patched.dim() - 2)))
    return 1.0 - kl_to(target, patched) / before
