"""Scoring an edit on its problems: success at the reads, the hold over the counted reads, moved and KL to ``O*``.

A *read* is a position predicting a target position of ``(n*, t*)``: ``p`` and
the ``FOLLOWING`` after it (:attr:`~nrecur.analysis.edit_problems.EditProblems.reads`).
:func:`hits` says where ``t*`` is most likely there, :func:`hold_rate` is its
share over the counted reads (the headline's measure; see
:mod:`nrecur.analysis.edit`), :func:`score` gathers one edit's figures beside
the same model without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from nrecur.analysis.edit_methods import EditedPredictions
from nrecur.analysis.edit_problems import EditProblems
from nrecur.analysis.steering import kl_per_row
from nrecur.model import GPT
from nrecur.tasks import NRecurrence

__all__ = ["EditScore", "hits", "hold_by_rule", "hold_rate", "kl_from_desired", "predict_log_probs", "score", "share_by_read"]


@dataclass(frozen=True)
class EditScore:
    """Success, hold and moved of one edit on a set of problems."""

    success: np.ndarray
    """``[batch, 1 + FOLLOWING]`` t* most likely at the k-th next target position (NaN past the end)."""
    success_clean: np.ndarray
    """The same without the edit."""
    moved: np.ndarray
    """``[batch, pos - position]`` moved toward ``O*`` at positions ``p, p + 1, …``."""
    hold: float
    """Share of the counted reads (:attr:`EditProblems.counted`) with t* most likely; NaN if none counts."""
    hold_clean: float
    """The same without the edit."""


def hits(problems: EditProblems, log_probs) -> np.ndarray:
    """``[batch, 1 + FOLLOWING]``: 1 where t* is most likely at the read, 0 where not, NaN past the end."""
    reads = problems.reads
    best = torch.as_tensor(log_probs).argmax(-1).cpu().numpy()[np.arange(len(reads))[:, None], np.maximum(reads, 0)]
    return np.where(reads >= 0, best == problems.target[:, None], np.nan)


def hold_rate(problems: EditProblems, log_probs) -> float:
    """Share of the counted reads where t* is most likely under ``log_probs [batch, pos, vocab]``."""
    counted = problems.counted
    return float(hits(problems, log_probs)[counted].mean()) if counted.any() else math.nan


def score(problems: EditProblems, edited: EditedPredictions) -> EditScore:
    p = problems.position
    desired = torch.as_tensor(problems.desired[:, p:])
    before = kl_per_row(desired, edited.clean[:, p:])
    after = kl_per_row(desired, edited.log_probs[:, p:])
    moved = (1.0 - after / before).numpy()
    return EditScore(
        success=hits(problems, edited.log_probs),
        success_clean=hits(problems, edited.clean),
        moved=moved,
        hold=hold_rate(problems, edited.log_probs),
        hold_clean=hold_rate(problems, edited.clean),
    )


def share_by_read(values: np.ndarray) -> tuple[float, ...]:
    """``[batch, read]`` 0/1/NaN → per read the share of hits among the sequences long enough (NaN if none is)."""
    counted = np.isfinite(values).sum(0)
    return tuple(float(v) for v in np.where(counted > 0, np.nansum(values, 0) / np.maximum(counted, 1), np.nan))


def kl_from_desired(problems: EditProblems, log_probs) -> tuple[tuple[float, ...], float]:
    """Mean KL(O* ‖ model) at each position from ``p`` on, and its mean after ``p``."""
    p = problems.position
    kl = kl_per_row(torch.as_tensor(problems.desired[:, p:]), torch.as_tensor(log_probs)[:, p:]).mean(0)  # [pos - p]
    return tuple(float(v) for v in kl), float(kl[1:].mean()) if len(kl) > 1 else math.nan


def predict_log_probs(model: GPT, tokens: np.ndarray) -> torch.Tensor:
    device = next(model.parameters()).device
    logits = model(torch.as_tensor(tokens, dtype=torch.long, device=device))
    return torch.log_softmax(logits.double(), -1).cpu()


def hold_by_rule(problems: EditProblems, log_probs, task: NRecurrence) -> tuple[tuple[float, ...], ...]:
    """``[period, vocab]`` hold rate per rule over its counted reads; NaN where none counts."""
    found = hits(problems, log_probs)
    counted = problems.counted
    table = np.full((len(task.periods), task.vocab_size), np.nan)
    for index, n in enumerate(task.periods):
        for t in range(task.vocab_size):
            rows = (problems.period == n) & (problems.target == t)
            mask = counted & rows[:, None]
            if mask.any():
                table[index, t] = found[mask].mean()
    return tuple(tuple(float(v) for v in row) for row in table)
