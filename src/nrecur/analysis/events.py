"""Events around which the updates analyses align their series: the type, its window, and its mean band.

An :class:`Events` holds the events of one kind (a rule transition, or a noise
token) found in a batch: where each is, the old and new target, the period
after it, how long the rule after it holds, and the window of positions read
from it on for the curves. :func:`find_events` finds them in a sampled batch
(:func:`sample_events`), keeping those with a full window after them and a
settled rule before them (the defaults: :func:`default_window`,
:func:`default_settle`). :mod:`nrecur.analysis.event_curves` measures the
model and the observer around them; :mod:`nrecur.analysis.decoded` reads the
beliefs probes decode around the same events; both summarize a series over
events as a :class:`Band`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from nrecur.tasks import NRecurrence
from nrecur.tasks.sampler import Batch

__all__ = [
    "EVENT_KINDS", "Band", "EventKind", "Events", "default_settle", "default_window", "find_events", "mean_band", "sample_events", "shortest_context",
    "window_index",
]  # fmt: skip

EventKind = Literal["transition", "noise"]
EVENT_KINDS: tuple[EventKind, ...] = ("transition", "noise")


@dataclass(frozen=True)
class Events:
    """Events of one kind in a batch: all arrays ``[event]``."""

    kind: EventKind
    sequence: np.ndarray
    """Row of the batch."""
    position: np.ndarray
    """Position of the event: the first position of the new rule, or the noise token."""
    old_target: np.ndarray
    """Target of the rule before the event (for noise: the rule's target)."""
    new_target: np.ndarray
    """Target of the rule after the event (for noise: the rule's target)."""
    period: np.ndarray
    """Period of the rule after the event."""
    horizon: np.ndarray
    """Offsets the rule after the event holds: up to the next transition, or to the end of the sequence
    (at least ``window``)."""
    window: int
    """Offsets of the curves drawn around each event (and of the discreteness index)."""
    length: int
    """Length of the batch's sequences."""

    def __len__(self) -> int:
        return len(self.position)

    @property
    def first_offset(self) -> int:
        """Offsets before this one are not part of an event's series (noise: its own, pre-noise prediction)."""
        return 0 if self.kind == "transition" else 1

    @property
    def target_changed(self) -> np.ndarray:
        """``[event]``: the event changed the target (False for noise and period-only transitions)."""
        return self.old_target != self.new_target

    @property
    def cut_by_transition(self) -> np.ndarray:
        """``[event]``: a later transition ended the rule before the sequence ended."""
        return self.position + self.horizon < self.length


def window_index(events: Events, span: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices ``[event, offset]`` of the positions of each event's window, or of its first
    ``span`` offsets (columns past the sequence's end are clipped to its last position)."""
    span = events.window if span is None else span
    rows = np.repeat(events.sequence[:, None], span, 1)
    columns = np.minimum(events.position[:, None] + np.arange(span), events.length - 1)
    return rows, columns


def mean_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``[event, offset]`` (NaN ignored): mean, and the 95 % interval of the mean; count."""
    count = (~np.isnan(values)).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.nansum(values, 0) / np.maximum(count, 1), np.nan)
        spread = np.sqrt(np.nansum((values - mean) ** 2, 0) / np.maximum(count - 1, 1))
        half = 1.96 * spread / np.sqrt(np.maximum(count, 1))
    return mean, half, count


@dataclass(frozen=True)
class Band:
    """A series by offset over events: its mean, the 95 % interval of the mean (half-width), and how many
    events have a value there (NaN where none)."""

    mean: tuple[float, ...]
    ci95: tuple[float, ...]
    count: tuple[int, ...]

    @classmethod
    def of(cls, values: np.ndarray) -> "Band":
        """The band of ``values [event, offset]`` (NaN ignored)."""
        mean, half, count = mean_band(np.asarray(values, dtype=np.float64))
        return cls(tuple(float(v) for v in mean), tuple(float(v) for v in half), tuple(int(c) for c in count))


def _rule_start(transition_after: np.ndarray) -> np.ndarray:
    """``[batch, pos]``: first position of the rule in force at each position."""
    batch, length = transition_after.shape
    starts = np.zeros((batch, length), dtype=np.int64)
    starts[:, 1:] = np.where(transition_after[:, :-1], np.arange(1, length), 0)
    return np.maximum.accumulate(starts, axis=1)


def _rule_end(transition_after: np.ndarray) -> np.ndarray:
    """``[batch, pos]``: last position of the rule in force at each position (the sequence's last at most)."""
    length = transition_after.shape[1]
    ends = np.where(transition_after, np.arange(length), length - 1)
    return np.minimum.accumulate(ends[:, ::-1], axis=1)[:, ::-1]


def find_events(batch: Batch, kind: EventKind, window: int, settle: int = 0) -> Events:
    """The events of ``kind`` in ``batch`` with a full window after them.

    Kept: ``1 <= position`` and ``position + window <= length``; no transition after any of the
    positions ``position .. position + window - 2`` (so the whole window follows one rule); the rule in
    force before the event (for noise: at it) began at least ``settle`` positions before the event.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    transition_after = np.asarray(batch.transition_after, dtype=bool)
    length = transition_after.shape[1]
    if kind == "transition":
        candidate = np.zeros_like(transition_after)
        candidate[:, 1:] = transition_after[:, :-1]
    elif kind == "noise":
        candidate = np.asarray(batch.is_fake, dtype=bool).copy()
        candidate[:, 0] = False
    else:
        raise ValueError(f"unknown event kind {kind!r}; expected one of {EVENT_KINDS}")
    sequence, position = np.nonzero(candidate)
    keep = position + window <= length
    sequence, position = sequence[keep], position[keep]
    # No transition inside the window: transition_after[e .. e + window - 2] all False.
    cumulative = np.concatenate([np.zeros((len(transition_after), 1), np.int64), np.cumsum(transition_after, 1)], 1)
    inside = cumulative[sequence, position + window - 1] - cumulative[sequence, position]
    keep = inside == 0
    before = position - 1 if kind == "transition" else position
    keep &= position - _rule_start(transition_after)[sequence, before] >= settle
    sequence, position = sequence[keep], position[keep]
    target = np.asarray(batch.target)
    old = target[sequence, position - 1] if kind == "transition" else target[sequence, position]
    return Events(
        kind=kind,
        sequence=sequence,
        position=position,
        old_target=old,
        new_target=target[sequence, position],
        period=np.asarray(batch.period)[sequence, position],
        horizon=_rule_end(transition_after)[sequence, position] - position + 1,
        window=window,
        length=length,
    )


def default_window(task: NRecurrence, length: int) -> int:
    """``min(4 × largest period, length // 2)``: several target positions, and room for events in the context."""
    return max(1, min(4 * task.max_period, length // 2))


def default_settle(task: NRecurrence) -> int:
    """Twice the largest period: the positions the rule before an event must have held."""
    return 2 * task.max_period


def shortest_context(task: NRecurrence) -> int:
    """The shortest context with room for an event under the default window and settle: an event is kept
    only at positions ``settle ≤ p ≤ length − window``, so ``n`` needs ``2M + min(4M, n // 2) ≤ n`` (``M``
    the largest period). For ``n < 8M`` that is ``2M ≤ ⌈n / 2⌉``, first true at ``n = 4M − 1``."""
    return 4 * task.max_period - 1


def sample_events(task: NRecurrence, n_sequences: int, length: int, seed: int) -> tuple[Batch, object]:
    """A batch of ``task`` and its observer's posterior on it (``.predictive [batch, pos, vocab]``, marginals)."""
    batch = task.sample(n_sequences, length, seed)
    return batch, task.posterior(batch.tokens)
