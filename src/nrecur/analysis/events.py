"""Events around which the updates analyses align their series: the type, its window, and its mean band.

An :class:`Events` holds the events of one kind (a rule transition, or a noise
token) found in a batch: where each is, the old and new target, the period
after it, how long the rule after it holds, and the window of positions read
from it on for the curves. :mod:`nrecur.analysis.updates` finds them and
measures the model and the observer around them; :mod:`nrecur.analysis.decoded`
reads the beliefs probes decode around the same events; both summarize a
series over events as a :class:`Band`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["EVENT_KINDS", "Band", "EventKind", "Events", "mean_band", "window_index"]

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
