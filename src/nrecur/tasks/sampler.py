"""Vectorized sampler for n-recurrence: one loop over positions, the batch in arrays.

Every position draws the same six uniforms per sequence (noise, token choice,
transition, new rule ×2, new offset), so a seed fixes the whole batch on every
run and machine. The semantics follow SPEC §2.3 step by step; the reference
per-sequence loop in ``benchmarks/bench_sampler.py`` and the statistical tests
check them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from nrecur.tasks.nrecurrence import Batch, NRecurrence


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


def sample_nrecurrence(task: "NRecurrence", batch_size: int, length: int, seed: int | Sequence[int]) -> "Batch":
    from nrecur.tasks.nrecurrence import RECENT_WINDOW, Batch

    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"length must be an integer >= 1, got {length!r}")
    task.check_length(length)
    rng = np.random.default_rng(seed)
    B, L, V = int(batch_size), int(length), task.vocab_size
    periods = np.asarray(task.periods, dtype=np.int64)
    period_probs, target_probs = task.period_probs, task.target_probs
    p_noise, p_transition = task.noise_by_period, task.transition_by_period
    joint_probs = np.outer(period_probs, target_probs).ravel()  # for 'either'
    kind = task.transition_changes

    u = rng.random((3, B))
    p_idx = categorical(period_probs, u[0])
    target = categorical(target_probs, u[1])
    phase = (u[2] * periods[p_idx]).astype(np.int64)

    out = {name: np.empty((L, B), dtype=np.int64) for name in ("tokens", "period", "target", "phase")}
    flags = {name: np.empty((L, B), dtype=bool) for name in ("is_target_position", "is_fake", "transition_after")}
    for i in range(L):
        u = rng.random((6, B))
        n = periods[p_idx]
        on = phase == 0
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
        out["tokens"][i], out["period"][i], out["target"][i], out["phase"][i] = tokens, n, target, phase
        flags["is_target_position"][i], flags["is_fake"][i] = on, fake

        change = u[2] < p_transition[p_idx]
        flags["transition_after"][i] = change
        phase = (phase - 1) % n
        if np.any(change):
            rows = np.flatnonzero(change)
            old_p, old_t = p_idx[rows], target[rows]
            if kind == "either":
                joint = categorical_excluding(joint_probs, old_p * V + old_t, u[3, rows])
                new_p, new_t = joint // V, joint % V
            else:
                new_p = categorical_excluding(period_probs, old_p, u[3, rows]) if kind in ("both", "period") else old_p
                new_t = categorical_excluding(target_probs, old_t, u[4, rows]) if kind in ("both", "target") else old_t
            p_idx[rows], target[rows] = new_p, new_t
            phase[rows] = (u[5, rows] * periods[new_p]).astype(np.int64)

    arrays = {name: np.ascontiguousarray(value.T) for name, value in {**out, **flags}.items()}
    return Batch(**arrays)
