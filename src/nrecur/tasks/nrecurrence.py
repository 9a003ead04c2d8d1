"""Stochastic n-recurrence (SPEC §2.1–2.3): the task definition and its sampler.

A rule ``(n, t)`` puts the target token ``t`` at every ``n``-th position and
random tokens elsewhere. The hidden state at each position is ``(n, t, c)``
with ``c`` the countdown to the next target position (``c = 0``: this position
is one). On top of that, a target may be replaced by a fake token
(``p_noise``), and after every position the rule may change (``p_transition``),
conditioned by ``transition_changes`` to differ from the old one.

``NRecurrence`` is a frozen config: it validates every parameter at
construction, samples sequences with their hidden truth (vectorized over the
batch, one loop over positions), and hands out the exact observer
(``posterior``) and the dense-HMM form (``to_hmm``).
"""

from __future__ import annotations

import math
import warnings
from typing import Literal, Sequence

import numpy as np
from pydantic import field_validator, model_validator

from nrecur.tasks.base import Strata, Task, Truth
from nrecur.tasks.dense import nrecurrence_to_hmm
from nrecur.tasks.hmm import HMMProcess
from nrecur.tasks.sampler import Batch, sample_nrecurrence, sample_nrecurrence_many
from nrecur.tasks.variants import (
    IDENTIFIABLE_CONTEXT,
    TRANSITIONS,
    FakeSourceName,
    PerPeriod,
    TransitionName,
    parse_per_period,
)

#: Generous sanity bounds: beyond them the observer's tables no longer fit in memory.
MAX_VOCAB = 65_536
MAX_PERIOD = 4_096

_WARNED_SHORT: set[tuple[int, ...]] = set()


class NRecurrence(Task):
    """Stochastic n-recurrence; ``p_noise = p_transition = 0`` gives the deterministic task."""

    kind: Literal["nrecurrence"] = "nrecurrence"
    """Task kind (the discriminator in a run's config.json)."""
    vocab_size: int = 8
    """Number of tokens V; tokens are 0..V-1 (V >= 2)."""
    periods: tuple[int, ...] = (2, 3, 4, 5)
    """The possible periods n: distinct integers >= 2."""
    period_prior: tuple[float, ...] | None = None
    """Probabilities over `periods` (same length, summing to 1); None for uniform."""
    target_prior: tuple[float, ...] | None = None
    """Probabilities over the V tokens as target; None for uniform."""
    p_noise: PerPeriod = 0.0
    """Probability that a target position shows a fake token instead of t: a float in [0, 1), a mapping period -> probability, or 'c/n' for c divided by the period (e.g. 0.2/n = 1/(5n))."""
    p_transition: PerPeriod = 0.0
    """Probability that the rule changes after a position: a float in [0, 1), a mapping period -> probability, or 'c/n'."""
    target_outside: bool = False
    """May the target token also appear at non-target positions?"""
    fake_source: FakeSourceName = "uniform"
    """Fake tokens: uniform over V minus t, or uniform over the distinct tokens other than t in the previous 3n positions."""
    transition_changes: TransitionName = "either"
    """What a transition must change: (n,t) differs ('either'), both differ, only the period, or only the target."""

    # ------------------------------------------------------------------ validation

    @field_validator("vocab_size")
    @classmethod
    def _check_vocab(cls, value: int) -> int:
        if not 2 <= value <= MAX_VOCAB:
            raise ValueError(f"vocab_size must be an integer in [2, {MAX_VOCAB}], got {value}")
        return value

    @field_validator("periods")
    @classmethod
    def _check_periods(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) == 0:
            raise ValueError("periods must name at least one period (integers >= 2), got none")
        if any(not 2 <= n <= MAX_PERIOD for n in value):
            raise ValueError(f"periods must be integers in [2, {MAX_PERIOD}], got {list(value)}")
        if len(set(value)) != len(value):
            raise ValueError(f"periods must be distinct, got {list(value)}")
        return value

    @field_validator("p_noise", "p_transition", mode="before")
    @classmethod
    def _normalize_per_period(cls, value, info):
        """Text goes through :func:`parse_per_period`; a mapping gets integer periods as keys."""
        try:
            if isinstance(value, str):
                return parse_per_period(value)
            if isinstance(value, dict):
                return _mapping_by_period(value)
        except ValueError as error:
            raise ValueError(f"{info.field_name}: {error}") from None
        return value

    @model_validator(mode="after")
    def _check_all(self) -> "NRecurrence":
        _check_prior("period_prior", self.period_prior, len(self.periods), "periods")
        _check_prior("target_prior", self.target_prior, self.vocab_size, "vocab_size tokens")
        for name in ("p_noise", "p_transition"):
            value = getattr(self, name)
            if isinstance(value, dict):
                missing = sorted(set(self.periods) - set(value))
                extra = sorted(set(value) - set(self.periods))
                if missing or extra:
                    raise ValueError(
                        f"{name} as a mapping needs exactly one probability per period {list(self.periods)}; "
                        f"missing {missing}, unknown {extra}"
                    )
            for n, p in zip(self.periods, self._per_period(value)):
                if not (0.0 <= p < 1.0) or math.isnan(p):
                    raise ValueError(f"{name} must lie in [0, 1) for every period, got {p} for n={n}")
        self._check_transitions_possible()
        return self

    def _check_transitions_possible(self) -> None:
        """A rule change must be able to happen as ``transition_changes`` says (its kind knows how)."""
        p_transition = self.transition_by_period
        if not np.any(p_transition > 0):
            return
        why = TRANSITIONS[self.transition_changes].impossible_because(self.period_probs, self.target_probs, p_transition)
        if why is not None:
            raise ValueError(
                f"transition_changes={self.transition_changes!r} cannot happen with this prior: {why} "
                f"(p_transition > 0 for periods {[n for n, p in zip(self.periods, p_transition) if p > 0]})"
            )

    # ------------------------------------------------------------------ derived values

    def _per_period(self, value: PerPeriod) -> list[float]:
        if isinstance(value, dict):
            return [float(value.get(n, 0.0)) for n in self.periods]
        if isinstance(value, str):
            c = float(value.strip()[:-2])
            return [c / n for n in self.periods]
        return [float(value)] * len(self.periods)

    @property
    def n_periods(self) -> int:
        return len(self.periods)

    @property
    def max_period(self) -> int:
        return max(self.periods)

    @property
    def n_states(self) -> int:
        """Number of hidden states ``(n, t, c)``: ``V * sum(periods)``."""
        return self.vocab_size * sum(self.periods)

    @property
    def period_probs(self) -> np.ndarray:
        """``[period]`` prior over ``periods`` (float64)."""
        if self.period_prior is None:
            return np.full(self.n_periods, 1.0 / self.n_periods)
        probs = np.asarray(self.period_prior, dtype=np.float64)
        return probs / probs.sum()

    @property
    def target_probs(self) -> np.ndarray:
        """``[vocab]`` prior over target tokens (float64)."""
        if self.target_prior is None:
            return np.full(self.vocab_size, 1.0 / self.vocab_size)
        probs = np.asarray(self.target_prior, dtype=np.float64)
        return probs / probs.sum()

    @property
    def noise_by_period(self) -> np.ndarray:
        """``[period]`` p_noise for each period, in the order of ``periods``."""
        return np.asarray(self._per_period(self.p_noise), dtype=np.float64)

    @property
    def transition_by_period(self) -> np.ndarray:
        """``[period]`` p_transition for each period."""
        return np.asarray(self._per_period(self.p_transition), dtype=np.float64)

    @property
    def is_deterministic(self) -> bool:
        return not (np.any(self.noise_by_period > 0) or np.any(self.transition_by_period > 0))

    def check_length(self, length: int) -> None:
        """Warn when a context is shorter than three times the largest period (SPEC §2.3)."""
        super().check_length(length)
        if length < IDENTIFIABLE_CONTEXT * self.max_period and self.periods not in _WARNED_SHORT:
            # Once per process and set of periods: training checks its context, then samples one token more
            # (and evaluates): one message, naming the first length, not several that disagree.
            _WARNED_SHORT.add(self.periods)
            warnings.warn(
                f"context length {length} is shorter than {IDENTIFIABLE_CONTEXT} x the largest period "
                f"({IDENTIFIABLE_CONTEXT * self.max_period}); the longest rules may not be identifiable",
                stacklevel=4,
            )

    # ------------------------------------------------------------------ the Task interface

    def sample(self, batch_size: int, length: int, seed: int | Sequence[int] = 0) -> Batch:
        """Sample ``batch_size`` sequences of ``length`` tokens with their hidden truth.

        Vectorized over the batch (one loop over positions); the same seed gives
        the same batch on every run and machine (NumPy's PCG64).
        """
        return sample_nrecurrence(self, batch_size, length, seed)

    def sample_many(self, batch_size: int, length: int, seeds: Sequence[int | Sequence[int]]) -> list[Batch]:
        """The batches of many seeds, as :meth:`sample` gives each, sampled side by side (faster for small batches)."""
        return sample_nrecurrence_many(self, batch_size, length, seeds)

    # posterior(tokens, *, impossible="raise"|"inf", backend="auto"|"kernel"|"torch") -> Posterior comes from
    # the Task base: the filter lives in nrecur.observer.nrecurrence, which registers itself for this class.

    def truth(self, sample: Batch) -> Truth:
        """Accuracy where the next position is a target position; strata by the period in force."""
        return Truth(
            accuracy_name="target_acc",
            accuracy_mask=np.asarray(sample.is_target_position)[:, 1:],
            accuracy_title="when the next position is a target position",
            strata=Strata(
                labels=np.asarray(sample.period),
                values=tuple(int(n) for n in self.periods),
                names=tuple(f"n{n}" for n in self.periods),
                title="period",
            ),
        )

    def rules(self) -> tuple[tuple[int, int], ...]:
        """The rules ``(period, target)`` with positive prior."""
        return tuple(
            (int(n), int(t))
            for n, p_n in zip(self.periods, self.period_probs)
            for t, p_t in enumerate(self.target_probs)
            if p_n > 0 and p_t > 0
        )

    def rule_index(self, sample: Batch) -> np.ndarray:
        """``[batch, pos]`` index into :meth:`rules` of the rule ``(period, target)`` in force."""
        lookup = np.full((self.max_period + 1, self.vocab_size), -1, dtype=np.int64)
        for index, (n, t) in enumerate(self.rules()):
            lookup[n, t] = index
        return lookup[np.asarray(sample.period), np.asarray(sample.target)]

    def to_hmm(self) -> HMMProcess:
        """The same process as a dense HMM over ``(n, t, c)`` (only for ``fake_source='uniform'``)."""
        return nrecurrence_to_hmm(self)


def _check_prior(name: str, prior: tuple[float, ...] | None, size: int, what: str) -> None:
    if prior is None:
        return
    if len(prior) != size:
        raise ValueError(f"{name} needs one probability per {what} ({size}), got {len(prior)}")
    values = np.asarray(prior, dtype=np.float64)
    if np.any(~np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"{name} must be probabilities >= 0, got {list(prior)}")
    if abs(values.sum() - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1, got sum {values.sum():.6g}")


def _mapping_by_period(value: dict) -> dict[int, float]:
    """A mapping period → probability with integer keys; a period given twice (2 and "2") is an error."""
    clean: dict[int, float] = {}
    for key, prob in value.items():
        if isinstance(key, bool) or not float(key).is_integer():
            raise ValueError(f"mapping keys must be periods (whole numbers), got {key!r}")
        if isinstance(prob, bool) or not isinstance(prob, (int, float)):
            raise ValueError(f"the probability for period {key} must be a number, got {prob!r}")
        if int(float(key)) in clean:
            raise ValueError(f"period {int(float(key))} is given twice")
        clean[int(float(key))] = float(prob)
    return clean
