"""What the n-recurrence sampler and dense form read off a task: its parameters, not its class.

:class:`~nrecur.tasks.NRecurrence` builds its samples and its HMM with
:mod:`nrecur.tasks.sampler` and :mod:`nrecur.tasks.dense`, so those modules take
any object with these attributes instead of importing the task's class: the
task's module imports them, and nothing imports it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from nrecur.tasks.priors import RulePrior

__all__ = ["NRecurrenceParams"]


class NRecurrenceParams(Protocol):
    """The parameters of an n-recurrence process (``NRecurrence`` has them all)."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def periods(self) -> tuple[int, ...]: ...

    @property
    def n_periods(self) -> int: ...

    @property
    def rule_probs(self) -> np.ndarray:
        """``[period, vocab]`` prior of each rule ``(periods[k], t)`` (float64, sums to 1)."""
        ...

    @property
    def rule_distribution(self) -> RulePrior:
        """The prior over rules, with its draws (:mod:`nrecur.tasks.priors`)."""
        ...

    @property
    def noise_by_period(self) -> np.ndarray:
        """``[period]`` p_noise for each period, in the order of ``periods``."""
        ...

    @property
    def transition_by_period(self) -> np.ndarray:
        """``[period]`` p_transition for each period."""
        ...

    @property
    def target_outside(self) -> bool: ...

    @property
    def fake_source(self) -> str:
        """A name in :data:`~nrecur.tasks.variants.FAKE_SOURCES`."""
        ...

    @property
    def transition_changes(self) -> str:
        """A name in :data:`~nrecur.tasks.variants.TRANSITIONS`."""
        ...

    def check_length(self, length: int) -> None:
        """Refuse (ValueError) or warn about sequences of ``length`` tokens."""
        ...
