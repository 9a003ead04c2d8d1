"""The model and the observer around events: aligned probability curves and the per-event measures.

Around the events of :mod:`nrecur.analysis.events`, :func:`aligned_curves` reads
one predictor's probability of the old and of the new target at the target
positions of the rule after each event (index ``i`` of a predictive is the
prediction of token ``i + 1``), :func:`learning_rate` and :func:`discreteness`
turn each event's series into one number (see :mod:`nrecur.analysis.updates`
for their meaning), and :func:`event_updates` does it for a model and the exact
observer together, with KL(observer ‖ model) by offset. Any predictor may stand
in for the model, the observer itself included: then every curve and index is
the observer's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nrecur.analysis.events import EVENT_KINDS, EventKind, Events, find_events, window_index
from nrecur.tasks.sampler import Batch
from nrecur.train.evaluate import model_log_probs

__all__ = ["Curves", "EventUpdates", "aligned_curves", "discreteness", "event_updates", "kl_by_offset", "learning_rate", "model_probs", "never_last_median"]


@dataclass(frozen=True)
class Curves:
    """One predictor (model or observer) around events: arrays ``[event, offset]`` and ``[event]``."""

    p_old: np.ndarray
    """``[event, offset]``: probability of the old target at target positions of the new rule in the window, NaN
    elsewhere."""
    p_new: np.ndarray
    """``[event, offset]``: probability of the new target there, NaN elsewhere."""
    top_is_new: np.ndarray
    """``[event, offset]``: the most likely token is the new target (False off target positions)."""
    p_new_to_end: np.ndarray
    """``[event, offset]``: ``p_new`` at every offset of the rule after the event (to the next transition or the
    sequence's end), NaN past it; as many offsets as the longest such rule."""
    top_is_new_to_end: np.ndarray
    """``[event, offset]``: ``top_is_new`` over the same offsets."""
    learning_rate: np.ndarray
    """``[event]``: first offset (>= the kind's first offset) where ``p_new_to_end > 0.5``; NaN when never."""
    discreteness: np.ndarray
    """``[event]``: the discreteness index of ``p_new`` in the window (NaN when its total change is below
    ``min_change``)."""


def aligned_curves(probs: np.ndarray, events: Events, is_target_position: np.ndarray, min_change: float) -> Curves:
    """``probs [batch, pos, vocab]`` (index i predicts token i+1) aligned on ``events``."""
    span = max(int(events.horizon.max()), events.window) if len(events) else events.window
    rows, columns = window_index(events, span)
    inside = np.arange(span)[None, :] < events.horizon[:, None]
    at_target = np.asarray(is_target_position, dtype=bool)[rows, columns] & inside  # [event, offset]
    p_new = np.where(at_target, probs[rows, columns - 1, events.new_target[:, None]], np.nan)
    p_old = np.where(at_target, probs[rows, columns - 1, events.old_target[:, None]], np.nan)
    top_is_new = at_target & (probs.argmax(-1)[rows, columns - 1] == events.new_target[:, None])
    window = events.window
    return Curves(
        p_old=p_old[:, :window],
        p_new=p_new[:, :window],
        top_is_new=top_is_new[:, :window],
        p_new_to_end=p_new,
        top_is_new_to_end=top_is_new,
        learning_rate=learning_rate(p_new, events.first_offset),
        discreteness=discreteness(p_new[:, :window], events.first_offset, min_change),
    )


def learning_rate(p: np.ndarray, first_offset: int = 0, threshold: float = 0.5) -> np.ndarray:
    """``p [event, offset]`` (NaN off target positions) → ``[event]``: first offset >= ``first_offset`` with
    ``p > threshold``, NaN when there is none."""
    above = np.nan_to_num(p, nan=-np.inf) > threshold
    above[:, :first_offset] = False
    found = above.any(1)
    return np.where(found, above.argmax(1), np.nan).astype(np.float64)


def discreteness(p: np.ndarray, first_offset: int = 0, min_change: float = 0.1) -> np.ndarray:
    """``p [event, offset]`` (NaN off target positions) → ``[event]``: largest step between consecutive
    values (from ``first_offset`` on), in the direction of the total change, over ``|total change|``;
    NaN when fewer than two values or ``|total change| < min_change``."""
    out = np.full(len(p), np.nan)
    for index, row in enumerate(p[:, first_offset:]):
        values = row[~np.isnan(row)]
        if len(values) < 2:
            continue
        total = values[-1] - values[0]
        if abs(total) < min_change:
            continue
        out[index] = (np.diff(values) * np.sign(total)).max() / abs(total)
    return out


def kl_by_offset(observer: np.ndarray, model: np.ndarray, events: Events) -> np.ndarray:
    """``[event, offset]``: KL(observer ‖ model) of the predictions of positions ``event + offset`` (nats)."""
    rows, columns = window_index(events)
    p = observer[rows, columns - 1]  # [event, offset, vocab]
    q = model[rows, columns - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return terms.sum(-1)


def never_last_median(values: np.ndarray) -> float:
    """Median with NaN ("never") counted as longer than any value (inf when more than half are never)."""
    if len(values) == 0:
        return float("nan")
    return float(np.median(np.where(np.isnan(values), np.inf, values)))


@dataclass(frozen=True)
class EventUpdates:
    """Model and observer around the events of one kind."""

    events: Events
    model: Curves
    observer: Curves
    kl: np.ndarray
    """``[event, offset]``: KL(observer ‖ model) in nats."""


def event_updates(
    model_probs: np.ndarray,
    observer_predictive: np.ndarray,
    batch: Batch,
    window: int,
    settle: int = 0,
    min_change: float = 0.1,
) -> dict[EventKind, EventUpdates]:
    """The core computation, one entry per event kind.

    ``model_probs [batch, pos, vocab]`` and ``observer_predictive [batch, pos, vocab]`` are predictive
    distributions (index i is P(x[i+1] | x[0..i])) on ``batch.tokens``; any predictor may stand in
    for the model, the observer itself included (then every curve and index equals the observer's).
    """
    model_probs = np.asarray(model_probs, dtype=np.float64)
    observer_predictive = np.asarray(observer_predictive, dtype=np.float64)
    out = {}
    for kind in EVENT_KINDS:
        events = find_events(batch, kind, window, settle)
        out[kind] = EventUpdates(
            events=events,
            model=aligned_curves(model_probs, events, batch.is_target_position, min_change),
            observer=aligned_curves(observer_predictive, events, batch.is_target_position, min_change),
            kl=kl_by_offset(observer_predictive, model_probs, events),
        )
    return out


def model_probs(model, tokens: np.ndarray) -> np.ndarray:
    """``tokens [batch, pos]`` → the model's ``[batch, pos, vocab]`` float64 probabilities."""
    return model_log_probs(model, torch.as_tensor(np.asarray(tokens), dtype=torch.long)).exp().numpy()
