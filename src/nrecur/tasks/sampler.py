"""Vectorized sampler for n-recurrence: one loop over positions, the batch in arrays.

Every position draws the same six uniforms per sequence (noise, token choice,
transition, new rule ×2, new offset), so a seed fixes the whole batch on every
run and machine. The semantics follow SPEC §2.3 step by step; the reference
per-sequence loop in ``benchmarks/bench_sampler.py`` and the statistical tests
check them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Sequence

import numpy as np

from nrecur.tasks.base import Sequences, check_seed, check_sizes
from nrecur.tasks.variants import RECENT_WINDOW

if TYPE_CHECKING:  # pragma: no cover
    from nrecur.tasks.nrecurrence import NRecurrence


@dataclass(frozen=True)
class Batch(Sequences):
    """Sampled n-recurrence sequences and the hidden truth behind each position. All arrays ``[batch, pos]``."""

    period: np.ndarray
    """Period ``n`` of the rule in force at this position (int64, the value, not its index)."""
    target: np.ndarray
    """Target token ``t`` of the rule in force (int64)."""
    countdown: np.ndarray
    """Countdown ``c`` to the next target position; 0 means this position is one (int64)."""
    is_target_position: np.ndarray
    """``c == 0`` (bool)."""
    is_fake: np.ndarray
    """A fake token replaced the target here (bool)."""
    transition_after: np.ndarray
    """The rule changed right after this position (bool)."""

    FIELDS: ClassVar[tuple[str, ...]] = (
        "tokens", "period", "target", "countdown", "is_target_position", "is_fake", "transition_after",
    )  # fmt: skip

    @property
    def phase(self) -> np.ndarray:
        """Old name of :attr:`countdown` (kept so existing code keeps working)."""
        return self.countdown


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


def _uniform_other(u: np.ndarray, target: np.ndarray, vocab_size: int) -> np.ndarray:
    """A token uniform over ``V \\ {target}``."""
    r = (u * (vocab_size - 1)).astype(np.int64)
    return r + (r >= target)


def _recent_fake(
    history: np.ndarray, i: int, rows: np.ndarray, target: np.ndarray, window: np.ndarray, u: np.ndarray, vocab_size: int
) -> np.ndarray:
    """Fake tokens for ``rows`` at position ``i``: uniform over the distinct tokens ``≠ target``
    in positions ``i - window … i - 1`` (``history`` is ``[pos, batch]``), else uniform over ``V \\ {target}``."""
    k = len(rows)
    offsets = np.arange(1, int(window.max()) + 1)
    positions = i - offsets[None, :]  # [k, window]
    valid = (offsets[None, :] <= window[:, None]) & (positions >= 0)
    seen = history[np.maximum(positions, 0), rows[:, None]]
    present = np.zeros((k, vocab_size), dtype=bool)
    rr, cc = np.nonzero(valid)
    present[rr, seen[rr, cc]] = True
    present[np.arange(k), target] = False
    count = present.sum(axis=1)
    choice = (u * count).astype(np.int64)
    picked = np.argmax(np.cumsum(present, axis=1) > choice[:, None], axis=1)
    return np.where(count > 0, picked, _uniform_other(u, target, vocab_size))


#: Sequences sampled together: small enough for the per-position arrays to stay in cache.
CHUNK = 4096


def sample_nrecurrence(task: "NRecurrence", batch_size: int, length: int, seed: int | Sequence[int]) -> Batch:
    check_sizes(batch_size, length)
    check_seed(seed)
    task.check_length(length)
    rng = np.random.default_rng(seed)
    B, L = int(batch_size), int(length)
    result = {name: np.empty((B, L), dtype=np.int64) for name in ("tokens", "period", "target", "countdown")}
    result.update({name: np.empty((B, L), dtype=bool) for name in ("is_target_position", "is_fake", "transition_after")})
    for start in range(0, B, CHUNK):
        stop = min(B, start + CHUNK)
        for name, array in _sample_chunk(task, stop - start, L, rng).items():
            result[name][start:stop] = array.T
    return Batch(**result)


def _sample_chunk(task: "NRecurrence", B: int, L: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Sample ``B`` sequences; arrays come back position-major ``[pos, batch]``."""
    V = task.vocab_size
    periods = np.asarray(task.periods, dtype=np.int64)
    period_probs, target_probs = task.period_probs, task.target_probs
    p_noise, p_transition = task.noise_by_period, task.transition_by_period
    new_rule = NEW_RULE[task.transition_changes]

    u = rng.random((3, B))
    p_idx = categorical(period_probs, u[0])
    target = categorical(target_probs, u[1])
    countdown = (u[2] * periods[p_idx]).astype(np.int64)

    out = {name: np.empty((L, B), dtype=np.int64) for name in ("tokens", "period", "target", "countdown")}
    out.update({name: np.empty((L, B), dtype=bool) for name in ("is_target_position", "is_fake", "transition_after")})
    for i in range(L):
        u = rng.random((6, B))
        n = periods[p_idx]
        on = countdown == 0
        fake = on & (u[0] < p_noise[p_idx])
        other = _uniform_other(u[1], target, V)
        off = (u[1] * V).astype(np.int64) if task.target_outside else other
        tokens = np.where(on, target, off)
        if np.any(fake):
            rows = np.flatnonzero(fake)
            if task.fake_source == "uniform":
                tokens[rows] = other[rows]
            else:
                tokens[rows] = _recent_fake(
                    out["tokens"], i, rows, target[rows], RECENT_WINDOW * n[rows], u[1, rows], V
                )
        out["tokens"][i], out["period"][i], out["target"][i], out["countdown"][i] = tokens, n, target, countdown
        out["is_target_position"][i], out["is_fake"][i] = on, fake

        change = u[2] < p_transition[p_idx]
        out["transition_after"][i] = change
        countdown = (countdown - 1) % n
        if np.any(change):
            rows = np.flatnonzero(change)
            new_p, new_t = new_rule(period_probs, target_probs, p_idx[rows], target[rows], u[3, rows], u[4, rows])
            p_idx[rows], target[rows] = new_p, new_t
            countdown[rows] = (u[5, rows] * periods[new_p]).astype(np.int64)
    return out


def _new_rule_either(period_probs, target_probs, old_p, old_t, u_n, u_t):
    """(n', t') ≠ (n, t): one draw on the joint (period, target) table."""
    V = len(target_probs)
    joint = categorical_excluding(np.outer(period_probs, target_probs).ravel(), old_p * V + old_t, u_n)
    return joint // V, joint % V


def _new_rule_both(period_probs, target_probs, old_p, old_t, u_n, u_t):
    """n' ≠ n and t' ≠ t: the conditioned prior factorizes."""
    return categorical_excluding(period_probs, old_p, u_n), categorical_excluding(target_probs, old_t, u_t)


def _new_rule_period(period_probs, target_probs, old_p, old_t, u_n, u_t):
    return categorical_excluding(period_probs, old_p, u_n), old_t


def _new_rule_target(period_probs, target_probs, old_p, old_t, u_n, u_t):
    return old_p, categorical_excluding(target_probs, old_t, u_t)


#: How a transition draws the new rule, one function per ``transition_changes``.
NEW_RULE = {"either": _new_rule_either, "both": _new_rule_both, "period": _new_rule_period, "target": _new_rule_target}
