"""Variants of n-recurrence (SPEC §2.3): what a rule change may change, where fake tokens come from.

Each variant is one object in a registry (``TRANSITIONS``, ``FAKE_SOURCES``);
the task's config names it, and the sampler, the observers and the dense form
ask the object instead of branching on the name. A new variant is a new class
here, added to its registry and to the ``Literal`` beside it.

**Transition kinds.** A rule change from ``(n, t)`` to ``(n', t')`` makes one of
four *moves*, ``(same period, same target)``. A kind is the set of moves it
allows; the new rule is drawn from the prior restricted to them. Everything
the rest of nrecur needs follows from that set:

* the *alternative mass* ``Z(n, t)``: the prior mass of the rules a change may
  reach, ``Σ_moves a(n)·b(t)`` with ``a = π(n)`` for the same period and
  ``1 - π(n)`` for another one (``b`` likewise with ``τ``). When every move
  keeps the period, the period is not drawn and its factor is 1 (same for the
  target). The task refuses priors where a live rule has ``Z`` below
  ``MIN_ALTERNATIVE_MASS``;
* the observer's closed form: with ``w = leaving mass / Z`` over ``[period,
  vocab]``, its sums ``W = Σ w``, ``W_n = Σ_t w``, ``W_t = Σ_n w``, the mass
  reaching ``(n', t')`` through each move is ``w`` (same, same), ``W_n - w``
  (same period), ``W_t - w`` (same target), ``W - W_n - W_t + w`` (both new),
  times the prior of the new rule. A kind is thus four integer coefficients on
  ``(W, W_n, W_t, w)`` (``spread``) plus two ``[period, vocab]`` tables: the
  share of each rule's mass that leaves (``p_transition / Z``) and the prior
  factor of each arriving rule. The compiled kernel takes exactly these
  arrays, so it has no per-kind code;
* the sampler's draw from the uniforms ``u_period``, ``u_target`` it gets for
  each changing sequence. The four kinds of the spec keep their own draws, so
  every seed gives the same sequences as before; a new kind inherits a generic
  draw on the joint ``[period, vocab]`` table.

The same set serves a joint prior over rules (``rule_prior``,
``tasks/priors.py``): the alternative mass is then the sum of the joint table
over the reachable rules, which is the closed form above taken of the table
itself (:meth:`TransitionKind.reachable`), and a draw inverts the table's CDF
masked to the allowed moves (:meth:`TransitionKind.draw_from_table`).

**Fake sources.** The observers know one family: a fake is uniform over the
distinct tokens ``≠ t`` among the last ``window·n`` positions, and uniform over
``V \\ {t}`` when there are none. ``"uniform"`` is ``window = 0`` (the window is
always empty), ``"recent"`` is ``window = RECENT_WINDOW``.

Also here: ``parse_per_period``, the one reader of per-period probabilities
written as text, and the multipliers of the period the task's definition uses.
"""

from __future__ import annotations

import functools
import math
from typing import ClassVar, Literal

import numpy as np

__all__ = [
    "FAKE_SOURCES",
    "IDENTIFIABLE_CONTEXT",
    "MIN_ALTERNATIVE_MASS",
    "PER_PERIOD_FORMS",
    "RECENT_WINDOW",
    "TRANSITIONS",
    "FakeSource",
    "FakeSourceName",
    "PerPeriod",
    "TransitionKind",
    "TransitionName",
    "categorical",
    "categorical_excluding",
    "parse_per_period",
]

#: Fake tokens drawn from the last ``RECENT_WINDOW * n`` positions (SPEC §2.3): a multiplier of n.
RECENT_WINDOW = 3
#: Contexts shorter than ``IDENTIFIABLE_CONTEXT * max(periods)`` get a warning (SPEC §2.3): a multiplier of n.
IDENTIFIABLE_CONTEXT = 3
#: A rule change conditions the prior on the allowed moves; when a live rule's alternatives have prior
#: mass below this, the closed-form update loses precision, so such priors are refused.
MIN_ALTERNATIVE_MASS = 1e-6

Move = tuple[bool, bool]
"""``(same period, same target)`` of a rule change."""
#: Rule-table cells a generic transition draw handles at once (its masked tables: 8 MB of float64).
_DRAW_BLOCK = 1 << 20
#: Coefficients on ``(W, W_n, W_t, w)`` of the mass reaching a rule through each move (see the module docstring).
_MOVE_SPREAD: dict[Move, tuple[int, int, int, int]] = {
    (True, True): (0, 0, 0, 1),
    (True, False): (0, 1, 0, -1),
    (False, True): (0, 0, 1, -1),
    (False, False): (1, -1, -1, 1),
}


# ---------------------------------------------------------------------------------------------- draws


def categorical(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices drawn from ``probs`` by inverse CDF of uniforms ``u`` (zero-probability entries never come out)."""
    cdf = np.cumsum(probs)
    index = np.searchsorted(cdf, u * cdf[-1], side="right")
    return np.minimum(index, len(probs) - 1)


def categorical_excluding(probs: np.ndarray, exclude: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Draw from ``probs`` conditioned on the index differing from ``exclude`` (per row).

    The excluded cell's interval is cut out of the CDF: a uniform on the
    remaining mass is shifted past it. ``probs[exclude] < 1`` is guaranteed by
    the task's validation.
    """
    cdf = np.cumsum(probs)
    excluded = probs[exclude]
    before = cdf[exclude] - excluded
    v = u * (cdf[-1] - excluded)
    v = np.where(v >= before, v + excluded, v)
    index = np.minimum(np.searchsorted(cdf, v, side="right"), len(probs) - 1)
    clash = index == exclude  # only from rounding at an interval's edge
    if np.any(clash):
        masked = np.where(np.arange(len(probs))[None, :] == exclude[clash, None], -1.0, probs[None, :])
        index[clash] = np.argmax(masked, axis=1)
    return index


def uniform_other(u: np.ndarray, target: np.ndarray, vocab_size: int) -> np.ndarray:
    """A token uniform over ``V \\ {target}`` per row, from uniforms ``u``."""
    r = (u * (vocab_size - 1)).astype(np.int64)
    return r + (r >= target)


# ---------------------------------------------------------------------------------------------- transition kinds


class TransitionKind:
    """What a rule change may change (SPEC §2.3 ``transition_changes``). Subclasses set ``name``, ``moves``."""

    name: ClassVar[str]
    moves: ClassVar[frozenset[Move]]
    """The allowed ``(same period, same target)`` combinations."""

    def allows(self, same_period: bool, same_target: bool) -> bool:
        return (bool(same_period), bool(same_target)) in self.moves

    @property
    def keeps_period(self) -> bool:
        """Every allowed move keeps the period: a change never draws one."""
        return all(same_n for same_n, _ in self.moves)

    @property
    def keeps_target(self) -> bool:
        """Every allowed move keeps the target: a change never draws one."""
        return all(same_t for _, same_t in self.moves)

    # --- what the prior must allow

    def alternative_mass(self, period_probs: np.ndarray, target_probs: np.ndarray) -> np.ndarray:
        """``[period, vocab]`` ``Z(n, t)``: prior mass of the rules a change from ``(n, t)`` may reach."""
        same_n = np.ones_like(period_probs) if self.keeps_period else period_probs
        same_t = np.ones_like(target_probs) if self.keeps_target else target_probs
        factor_n = {True: same_n, False: 1.0 - period_probs}
        factor_t = {True: same_t, False: 1.0 - target_probs}
        return sum(np.outer(factor_n[move_n], factor_t[move_t]) for move_n, move_t in sorted(self.moves, reverse=True))

    def impossible_because(
        self, period_probs: np.ndarray, target_probs: np.ndarray, p_transition: np.ndarray
    ) -> str | None:
        """Why a change cannot happen as specified under these priors (``[period]``, ``[vocab]``,
        ``[period]``), or None. Only asked when some ``p_transition`` is positive."""
        periods_alive = int(np.count_nonzero(period_probs > 0))
        targets_alive = int(np.count_nonzero(target_probs > 0))
        if not any(same_n for same_n, _ in self.moves) and periods_alive < 2:
            return "it needs at least two periods with positive prior"
        if not any(same_t for _, same_t in self.moves) and targets_alive < 2:
            return "it needs at least two target tokens with positive prior"
        if (True, True) not in self.moves and periods_alive * targets_alive < 2:
            return "it needs at least two (period, target) rules with positive prior"
        live = np.outer((period_probs > 0) & (p_transition > 0), target_probs > 0)
        if np.any(live & (self.alternative_mass(period_probs, target_probs) < MIN_ALTERNATIVE_MASS)):
            return (
                f"the rules it may change to have prior mass below {MIN_ALTERNATIVE_MASS:g} "
                "(a prior almost entirely on one period or target)"
            )
        return None

    # --- the observer's closed form (torch tensors or NumPy arrays)

    @functools.cached_property
    def spread(self) -> tuple[int, int, int, int]:
        """Coefficients on ``(W, W_n, W_t, w)`` of the mass reaching a rule, summed over the allowed moves."""
        return tuple(sum(_MOVE_SPREAD[move][k] for move in self.moves) for k in range(4))  # type: ignore[return-value]

    def leave_rate(self, period_probs: np.ndarray, target_probs: np.ndarray, p_transition: np.ndarray) -> np.ndarray:
        """``[period, vocab]`` ``p_transition(n) / Z(n, t)``: a rule's mass times this is its ``w``.
        0 where nothing leaves or nothing can be reached (rules the prior never reaches)."""
        z = self.alternative_mass(period_probs, target_probs)
        rate = np.broadcast_to(p_transition[:, None], z.shape)
        return np.where((rate > 0) & (z > 0), rate / np.where(z > 0, z, 1.0), 0.0)

    def arrival(self, period_probs: np.ndarray, target_probs: np.ndarray) -> np.ndarray:
        """``[period, vocab]`` prior factor of an arriving rule ``(n', t')``: ``π(n')τ(t')`` without
        the factors a change never draws."""
        pi = np.ones_like(period_probs) if self.keeps_period else period_probs
        tau = np.ones_like(target_probs) if self.keeps_target else target_probs
        return np.outer(pi, tau)

    def inflow(self, w, arrival):
        """Mass arriving at each new rule ``[batch, period(n'), vocab(t')]`` from ``w = mass · leave_rate``
        ``[batch, period(n), vocab(t)]``, with ``arrival`` ``[period, vocab]`` (same kind of array)."""
        parts = (
            lambda: w.sum(axis=(-2, -1), keepdims=True),  # W      [batch, 1, 1]
            lambda: w.sum(axis=-1, keepdims=True),  # W_n            [batch, period, 1]
            lambda: w.sum(axis=-2, keepdims=True),  # W_t            [batch, 1, vocab]
            lambda: w,  # w                                          [batch, period, vocab]
        )
        total = None  # Σ coefficient · part, only the parts the kind uses, ±1 as plain additions/subtractions
        for coefficient, part in zip(self.spread, parts):
            if coefficient == 0:
                continue
            term = part() if abs(coefficient) == 1 else abs(coefficient) * part()
            if total is None:
                total = term if coefficient > 0 else -term
            else:
                total = total + term if coefficient > 0 else total - term
        return arrival * total

    # --- the sampler

    def draw(
        self,
        period_probs: np.ndarray,
        target_probs: np.ndarray,
        old_period_index: np.ndarray,
        old_target: np.ndarray,
        u_period: np.ndarray,
        u_target: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """New ``(period index, target)`` per changing row, from the old ones and two uniforms per row.

        This generic draw is :meth:`draw_from_table` on the product prior; the kinds of the spec override
        it with their own (seeds stay as they were).
        """
        return self.draw_from_table(np.outer(period_probs, target_probs), old_period_index, old_target, u_period)

    def draw_from_table(
        self, table: np.ndarray, old_period_index: np.ndarray, old_target: np.ndarray, u: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """New ``(period index, target)`` per changing row from a joint prior ``table [period, vocab]``:
        its CDF, masked to the rules the allowed moves reach from the old rule, inverted at ``u [rows]``.
        The task's validation guarantees that every changing row can reach a rule of positive weight."""
        P, V = table.shape
        rows = len(old_period_index)
        period_index, target = np.empty(rows, dtype=np.int64), np.empty(rows, dtype=np.int64)
        step = max(1, _DRAW_BLOCK // (P * V))  # rows at a time: the masked tables take rows · P · V floats
        for start in range(0, rows, step):
            part = slice(start, min(rows, start + step))
            count = part.stop - part.start
            same_n = np.arange(P)[None, :, None] == old_period_index[part, None, None]  # [rows, period, 1]
            same_t = np.arange(V)[None, None, :] == old_target[part, None, None]  # [rows, 1, vocab]
            allowed = np.zeros((count, P, V), dtype=bool)
            for move_n, move_t in self.moves:
                allowed |= (same_n == move_n) & (same_t == move_t)
            weights = (table[None] * allowed).reshape(count, P * V)
            cdf = np.cumsum(weights, axis=1)  # [rows, rule]
            index = np.sum(cdf <= (u[part] * cdf[:, -1])[:, None], axis=1)  # the first rule whose CDF passes u·total
            last = P * V - 1 - np.argmax(weights[:, ::-1] > 0, axis=1)  # rounding never lands on a zero weight
            index = np.minimum(index, last)
            period_index[part], target[part] = index // V, index % V
        return period_index, target

    # --- a joint prior over rules

    def reachable(self, table):
        """``[period, vocab]``: for each rule ``(n, t)`` the sum of ``table [period, vocab]`` over the rules a
        change from it may reach. The allowed-move relation is symmetric, so this is :meth:`inflow` of
        ``table`` itself: the mass of a joint prior a change may reach (``table`` the prior), or how
        many rules of its support (``table`` the support's indicator; exact, the sums are of integers)."""
        return self.inflow(table, np.ones_like(table))

    def successors_in_words(self, period: int, target: int) -> str:
        """The rules a change from ``(period, target)`` may reach, e.g. ``(n', 3) with n' != 2``."""
        words = {
            (True, True): f"({period}, {target}) itself",
            (True, False): f"({period}, t') with t' != {target}",
            (False, True): f"(n', {target}) with n' != {period}",
            (False, False): f"(n', t') with n' != {period} and t' != {target}",
        }
        return " or ".join(words[move] for move in sorted(self.moves, reverse=True))


class Either(TransitionKind):
    """``(n', t') ≠ (n, t)``."""

    name = "either"
    moves = frozenset({(True, False), (False, True), (False, False)})

    def draw(self, period_probs, target_probs, old_period_index, old_target, u_period, u_target):
        """One draw on the joint (period, target) table, the old rule's cell cut out."""
        V = len(target_probs)
        joint = categorical_excluding(np.outer(period_probs, target_probs).ravel(), old_period_index * V + old_target, u_period)
        return joint // V, joint % V


class Both(TransitionKind):
    """``n' ≠ n`` and ``t' ≠ t``."""

    name = "both"
    moves = frozenset({(False, False)})

    def draw(self, period_probs, target_probs, old_period_index, old_target, u_period, u_target):
        """The conditioned prior factorizes: one draw each."""
        return (
            categorical_excluding(period_probs, old_period_index, u_period),
            categorical_excluding(target_probs, old_target, u_target),
        )


class PeriodOnly(TransitionKind):
    """``n' ≠ n``, ``t' = t``."""

    name = "period"
    moves = frozenset({(False, True)})

    def draw(self, period_probs, target_probs, old_period_index, old_target, u_period, u_target):
        return categorical_excluding(period_probs, old_period_index, u_period), old_target


class TargetOnly(TransitionKind):
    """``t' ≠ t``, ``n' = n``."""

    name = "target"
    moves = frozenset({(True, False)})

    def draw(self, period_probs, target_probs, old_period_index, old_target, u_period, u_target):
        return old_period_index, categorical_excluding(target_probs, old_target, u_target)


TransitionName = Literal["either", "both", "period", "target"]
"""The values of ``NRecurrence.transition_changes``: the keys of ``TRANSITIONS``."""
TRANSITIONS: dict[str, TransitionKind] = {kind.name: kind for kind in (Either(), Both(), PeriodOnly(), TargetOnly())}
"""``transition_changes`` → its :class:`TransitionKind`."""


# ---------------------------------------------------------------------------------------------- fake sources


class FakeSource:
    """Where a fake target token comes from (SPEC §2.3 ``fake_source``). Subclasses set ``name``, ``window``."""

    name: ClassVar[str]
    window: ClassVar[int]
    """Fakes come from the distinct tokens of the last ``window · n`` positions (a multiplier of n);
    0: they never depend on the observed tokens (the dense HMM form exists)."""

    def draw(
        self, history: np.ndarray, i: int, rows: np.ndarray, target: np.ndarray, period: np.ndarray, u: np.ndarray,
        vocab_size: int,
    ) -> np.ndarray:  # fmt: skip
        """Fake tokens ``[rows]`` at position ``i`` for the sequences ``rows`` with targets and periods
        ``[rows]``, from uniforms ``u [rows]``; ``history [pos, batch]`` holds the tokens so far."""
        raise NotImplementedError


class UniformFakes(FakeSource):
    """Uniform over ``V \\ {t}``."""

    name = "uniform"
    window = 0

    def draw(self, history, i, rows, target, period, u, vocab_size):
        return uniform_other(u, target, vocab_size)


class RecentFakes(FakeSource):
    """Uniform over the distinct tokens ``≠ t`` among the previous ``3n`` positions, else over ``V \\ {t}``."""

    name = "recent"
    window = RECENT_WINDOW

    def draw(self, history, i, rows, target, period, u, vocab_size):
        k = len(rows)
        window = self.window * period  # [rows]
        offsets = np.arange(1, int(window.max()) + 1)
        positions = i - offsets[None, :]  # [rows, window]
        valid = (offsets[None, :] <= window[:, None]) & (positions >= 0)
        seen = history[np.maximum(positions, 0), rows[:, None]]
        present = np.zeros((k, vocab_size), dtype=bool)
        rr, cc = np.nonzero(valid)
        present[rr, seen[rr, cc]] = True
        present[np.arange(k), target] = False
        count = present.sum(axis=1)
        choice = (u * count).astype(np.int64)
        picked = np.argmax(np.cumsum(present, axis=1) > choice[:, None], axis=1)
        return np.where(count > 0, picked, uniform_other(u, target, vocab_size))


FakeSourceName = Literal["uniform", "recent"]
"""The values of ``NRecurrence.fake_source``: the keys of ``FAKE_SOURCES``."""
FAKE_SOURCES: dict[str, FakeSource] = {source.name: source for source in (UniformFakes(), RecentFakes())}
"""``fake_source`` → its :class:`FakeSource`."""


# ---------------------------------------------------------------------------------------------- per-period values

PerPeriod = float | dict[int, float] | str
"""A probability that may depend on the period: one float, a mapping period → float, or ``"c/n"``."""

PER_PERIOD_FORMS = "a probability (0.05), one per period (2:0.1,3:0.05), or c/n (0.2/n = 0.2 divided by the period)"


def parse_per_period(text: str) -> PerPeriod:
    """Read a per-period probability written as text.

    ``"0.05"`` → 0.05; ``"2:0.1,3:0.05"`` → ``{2: 0.1, 3: 0.05}``; ``"0.2/n"`` → the
    string ``"0.2/n"`` (resolved by the task, which knows its periods). Raises
    ``ValueError`` on malformed, non-finite or negative numbers and on a period
    named twice; whether values lie below 1 and name the task's periods is the
    task's check.
    """
    text = text.strip()

    def number(part: str) -> float:
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"cannot read {text!r}: {part.strip()!r} is not a number >= 0; give {PER_PERIOD_FORMS}")
        return value

    if text.endswith("/n"):
        number(text[:-2])
        return text
    if ":" not in text:
        return number(text)
    mapping: dict[int, float] = {}
    for item in text.split(","):
        key, _, value = item.partition(":")
        try:
            period = int(key)
        except ValueError:
            raise ValueError(f"cannot read {text!r}: {key.strip()!r} is not a period; give {PER_PERIOD_FORMS}") from None
        if period in mapping:
            raise ValueError(f"cannot read {text!r}: period {period} is given twice")
        mapping[period] = number(value)
    return mapping
