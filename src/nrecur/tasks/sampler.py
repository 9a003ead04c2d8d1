"""Vectorized sampler for n-recurrence: one loop over positions, the batch in arrays.

Every position draws the same six uniforms per sequence (noise, token choice,
transition, new rule ×2, new offset), so a seed fixes the whole batch on every
run and machine. How a fresh rule is drawn belongs to the task's rule prior
(``priors.py``: the product's draws are the transition kinds', a joint table's
its own), where a fake token comes from to the variant objects of
``variants.py`` (``FAKE_SOURCES``); each gets its share of those uniforms.
The semantics follow SPEC §2.3 step by step; the per-sequence loop
``loop_sample`` of ``tests/reference.py`` and the statistical tests check them.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from nrecur.tasks.base import Sequences, check_seed, check_sizes
from nrecur.tasks.nrecurrence_params import NRecurrenceParams
from nrecur.tasks.variants import FAKE_SOURCES, TRANSITIONS, uniform_other


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


#: Sequences sampled together: small enough for the per-position arrays to stay in cache.
CHUNK = 4096

#: Uniforms drawn ahead for seeds sampled side by side (8 MB of float64).
MANY_UNIFORMS = 1 << 20


def sample_nrecurrence(task: NRecurrenceParams, batch_size: int, length: int, seed: int | Sequence[int]) -> Batch:
    check_sizes(batch_size, length)
    check_seed(seed)
    task.check_length(length)
    rng = np.random.default_rng(seed)
    B, L = int(batch_size), int(length)
    result = {name: np.empty((B, L), dtype=np.int64) for name in ("tokens", "period", "target", "countdown")}
    result.update({name: np.empty((B, L), dtype=bool) for name in ("is_target_position", "is_fake", "transition_after")})
    for start in range(0, B, CHUNK):
        stop = min(B, start + CHUNK)
        size = stop - start
        for name, array in _sample_chunk(task, L, rng.random((3, size)), lambda i: rng.random((6, size))).items():
            result[name][start:stop] = array.T
    return Batch(**result)


def sample_nrecurrence_many(
    task: NRecurrenceParams, batch_size: int, length: int, seeds: Sequence[int | Sequence[int]]
) -> list[Batch]:
    """``[sample_nrecurrence(task, batch_size, length, seed) for seed in seeds]``, the same arrays, with the
    small batches of many seeds sampled side by side in one loop over positions.

    Each seed's uniforms are drawn as :func:`sample_nrecurrence` reads them (three per sequence, then six
    per sequence and position, from one stream), so only the NumPy calls per position are shared: the
    ensemble draws the batches of all its members this way.
    """
    check_sizes(batch_size, length)
    for seed in seeds:
        check_seed(seed)
    task.check_length(length)
    B, L = int(batch_size), int(length)
    per_loop = min(CHUNK // B, MANY_UNIFORMS // (6 * B * L))  # seeds per loop over positions
    if len(seeds) < 2 or per_loop < 2:
        return [sample_nrecurrence(task, B, L, seed) for seed in seeds]
    batches: list[Batch] = []
    for first_seed in range(0, len(seeds), per_loop):
        group = seeds[first_seed : first_seed + per_loop]
        streams = [np.random.default_rng(seed).random(3 * B + L * 6 * B) for seed in group]
        # the seeds' batches side by side: column k * B + b is sequence b of seed k
        initial = np.concatenate([stream[: 3 * B].reshape(3, B) for stream in streams], axis=1)  # [3, batch]
        steps = np.concatenate([stream[3 * B :].reshape(L, 6, B) for stream in streams], axis=2)  # [pos, 6, batch]
        out = _sample_chunk(task, L, initial, lambda i: steps[i])
        for k in range(len(group)):
            batches.append(Batch(**{name: np.ascontiguousarray(array[:, k * B : (k + 1) * B].T) for name, array in out.items()}))
    return batches


def _sample_chunk(
    task: NRecurrenceParams, L: int, initial: np.ndarray, uniforms: Callable[[int], np.ndarray]
) -> dict[str, np.ndarray]:
    """Sample ``B`` sequences from uniforms ``initial [3, B]`` and ``uniforms(i) [6, B]`` for position ``i``
    (called once per position, in order); arrays come back position-major ``[pos, batch]``."""
    V = task.vocab_size
    periods = np.asarray(task.periods, dtype=np.int64)
    prior = task.rule_distribution
    p_noise, p_transition = task.noise_by_period, task.transition_by_period
    transitions, fakes = TRANSITIONS[task.transition_changes], FAKE_SOURCES[task.fake_source]

    B = initial.shape[1]
    u = initial
    period_index, target = prior.draw_initial(u[0], u[1])
    countdown = (u[2] * periods[period_index]).astype(np.int64)

    out = {name: np.empty((L, B), dtype=np.int64) for name in ("tokens", "period", "target", "countdown")}
    out.update({name: np.empty((L, B), dtype=bool) for name in ("is_target_position", "is_fake", "transition_after")})
    for i in range(L):
        u = uniforms(i)
        n = periods[period_index]
        on = countdown == 0
        fake = on & (u[0] < p_noise[period_index])
        off = (u[1] * V).astype(np.int64) if task.target_outside else uniform_other(u[1], target, V)
        tokens = np.where(on, target, off)
        if np.any(fake):
            rows = np.flatnonzero(fake)
            tokens[rows] = fakes.draw(out["tokens"], i, rows, target[rows], n[rows], u[1, rows], V)
        out["tokens"][i], out["period"][i], out["target"][i], out["countdown"][i] = tokens, n, target, countdown
        out["is_target_position"][i], out["is_fake"][i] = on, fake

        change = u[2] < p_transition[period_index]
        out["transition_after"][i] = change
        countdown = (countdown - 1) % n
        if np.any(change):
            rows = np.flatnonzero(change)
            new_period_index, new_target = prior.draw_change(
                transitions, period_index[rows], target[rows], u[3, rows], u[4, rows]
            )
            period_index[rows], target[rows] = new_period_index, new_target
            countdown[rows] = (u[5, rows] * periods[new_period_index]).astype(np.int64)
    return out
