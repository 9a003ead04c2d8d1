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
(``posterior``) and the dense-HMM form (``to_hmm``). The prior over rules is
the product ``period_prior × target_prior`` or, with ``rule_prior``, a joint
table (``tasks/priors.py``); a run that holds rules out of training has a
second one, :meth:`NRecurrence.in_distribution`.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal, Sequence

import numpy as np
from pydantic import field_validator, model_serializer, model_validator

from nrecur.tasks.base import Strata, Task, Truth
from nrecur.tasks.dense import nrecurrence_to_hmm
from nrecur.tasks.hmm import HMMProcess
from nrecur.tasks.priors import RULE_PRIOR_FORMS, JointPrior, ProductPrior, RulePrior, RuleWeights, parse_rule_prior, rule_table
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
    rule_prior: RuleWeights | None = None
    """Joint prior over rules (n, t), in place of period_prior x target_prior: a list of [n, t, weight] triples (weights normalized; rules absent have prior 0), or of [n, t] pairs for a uniform prior over those rules; None for the product."""

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

    @field_validator("rule_prior", mode="before")
    @classmethod
    def _read_rule_prior(cls, value):
        """Any form :func:`~nrecur.tasks.priors.parse_rule_prior` reads → ``((n, t, weight), ...)``."""
        return None if value is None else parse_rule_prior(value)

    @model_validator(mode="after")
    def _check_all(self) -> "NRecurrence":
        _check_prior("period_prior", self.period_prior, len(self.periods), "periods")
        _check_prior("target_prior", self.target_prior, self.vocab_size, "vocab_size tokens")
        if self.rule_prior is not None:
            for name in ("period_prior", "target_prior"):
                marginal = getattr(self, name)
                if marginal is not None and np.ptp(marginal) > 1e-9:
                    raise ValueError(
                        f"rule_prior replaces period_prior and target_prior, so {name} must be left out (or uniform) "
                        f"with it; got {name}={list(marginal)} (put the weights into rule_prior: {RULE_PRIOR_FORMS})"
                    )
            rule_table(self.rule_prior, self.periods, self.vocab_size)  # names a period or token the task lacks
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
        """A rule change must be able to happen as ``transition_changes`` says (the prior and the kind know how)."""
        p_transition = self.transition_by_period
        if not np.any(p_transition > 0):
            return
        problem = self.rule_distribution.transition_problem(TRANSITIONS[self.transition_changes], p_transition)
        if problem is not None:
            raise ValueError(problem)

    @model_serializer(mode="wrap")
    def _leave_out_absent_rule_prior(self, handler):
        """Without ``rule_prior`` a task dumps as it did before the field existed: the same config.json,
        the same sweep trial ids and the same cache keys."""
        data = handler(self)
        if isinstance(data, dict) and data.get("rule_prior", ...) is None:
            del data["rule_prior"]
        return data

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
        """``[period]`` prior over ``periods`` (float64): the marginal of ``rule_prior`` when given."""
        if self.rule_prior is not None:
            return self.rule_probs.sum(axis=1)
        if self.period_prior is None:
            return np.full(self.n_periods, 1.0 / self.n_periods)
        probs = np.asarray(self.period_prior, dtype=np.float64)
        return probs / probs.sum()

    @property
    def target_probs(self) -> np.ndarray:
        """``[vocab]`` prior over target tokens (float64): the marginal of ``rule_prior`` when given."""
        if self.rule_prior is not None:
            return self.rule_probs.sum(axis=0)
        if self.target_prior is None:
            return np.full(self.vocab_size, 1.0 / self.vocab_size)
        probs = np.asarray(self.target_prior, dtype=np.float64)
        return probs / probs.sum()

    @property
    def rule_probs(self) -> np.ndarray:
        """``[period, vocab]`` prior of each rule ``(periods[k], t)`` (float64, sums to 1): ``rule_prior``
        normalized, else ``period_probs ⊗ target_probs``."""
        return self.rule_distribution.table

    @property
    def rule_distribution(self) -> RulePrior:
        """The prior over rules as the sampler, the observers and the dense form use it (``tasks/priors.py``)."""
        if self.rule_prior is None:
            return ProductPrior(self.period_probs, self.target_probs, self.periods)
        return JointPrior(rule_table(self.rule_prior, self.periods, self.vocab_size), self.periods)

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
        """The rules ``(period, target)`` with positive prior, periods in the order of ``periods``, then targets."""
        table = self.rule_probs
        return tuple((int(n), int(t)) for k, n in enumerate(self.periods) for t in range(self.vocab_size) if table[k, t] > 0)

    def in_distribution(self, held_out) -> "NRecurrence":
        """This task under its in-distribution prior: the rule prior restricted to the rules not in
        ``held_out`` (rules of :meth:`rules`) and renormalized, as a joint ``rule_prior``; every other
        parameter as here. The memorizing observer of a run trained without ``held_out`` is its posterior."""
        held_out = {(int(n), int(t)) for n, t in held_out}
        rules = self.rules()
        unknown = sorted(held_out - set(rules))
        if unknown:
            raise ValueError(f"held_out names rules the task does not have (with positive prior): {unknown[:5]}")
        table = self.rule_probs
        kept = [(n, t, float(table[self.periods.index(n), t])) for n, t in rules if (n, t) not in held_out]
        if not kept:
            raise ValueError(f"held_out holds every one of the task's {len(rules)} rules out; keep at least one")
        try:
            return self.model_validate({**self.model_dump(), "period_prior": None, "target_prior": None, "rule_prior": kept})
        except ValueError as error:
            message = str(error.errors()[0]["msg"]).removeprefix("Value error, ") if hasattr(error, "errors") else str(error)
            raise ValueError(
                f"the in-distribution prior (the rule prior without the {len(held_out)} held-out rules) is not a "
                f"valid prior: {message}"
            ) from None

    def rule_index(self, sample: Batch) -> np.ndarray:
        """``[batch, pos]`` index into :meth:`rules` of the rule ``(period, target)`` in force."""
        lookup = np.full((self.max_period + 1, self.vocab_size), -1, dtype=np.int64)
        for index, (n, t) in enumerate(self.rules()):
            lookup[n, t] = index
        return lookup[np.asarray(sample.period), np.asarray(sample.target)]

    def held_out_observer(self, held_out: frozenset) -> tuple[tuple[str, object], ...]:
        """``prior="in_distribution"`` with ``held_out``; raises ValueError (naming the rule) when the rule prior
        restricted to the training rules leaves a rule that must be able to change with nowhere to go."""
        self.in_distribution(held_out)
        return (("prior", "in_distribution"), ("held_out", frozenset(held_out)))

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
