"""Events around which the updates analyses align their series: the type, its window, and its mean band.

An :class:`Events` holds the events of one kind (a rule transition, or a noise
token) found in a batch: where each is, the old and new target, the period
after it and the window of positions read from it on. :mod:`nrecur.analysis.updates`
finds them and measures the model and the observer around them;
:mod:`nrecur.analysis.decoded` reads the beliefs probes decode around the same
events. Both draw with the colours and the mean band defined here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["EVENT_KINDS", "MODEL_COLOUR", "NOISE_COLOUR", "OBSERVER_COLOUR", "EventKind", "Events", "mean_band", "window_index"]

EventKind = Literal["transition", "noise"]
EVENT_KINDS: tuple[EventKind, ...] = ("transition", "noise")

# Okabe–Ito colours (colour-blind safe).
MODEL_COLOUR = "#0072B2"
OBSERVER_COLOUR = "#E69F00"
NOISE_COLOUR = "#009E73"


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
    window: int

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


def window_index(events: Events) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices ``[event, offset]`` of the positions of each event's window."""
    rows = np.repeat(events.sequence[:, None], events.window, 1)
    columns = events.position[:, None] + np.arange(events.window)
    return rows, columns


def mean_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``[event, offset]`` (NaN ignored): mean, and the 95 % interval of the mean; count."""
    count = (~np.isnan(values)).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.nansum(values, 0) / np.maximum(count, 1), np.nan)
        spread = np.sqrt(np.nansum((values - mean) ** 2, 0) / np.maximum(count - 1, 1))
        half = 1.96 * spread / np.sqrt(np.maximum(count, 1))
    return mean, half, count
