"""The problems an edit is scored on: destinations spliced with donors of the rule ``(n*, t*)`` it asserts.

A destination follows one rule ``(n, t)`` up to the edit position ``p``; from
``p + 1`` on the tokens are a donor's, which follows ``(n*, t*)`` (``t* ≠ t``)
with its next target at ``p + 1``. :func:`edit_problems` draws them for every
rule, with a random donor (another target) for the random edit, the exact
observer's predictive for the donor (``O*``), and which later target positions
the tokens since ``p`` already reveal (those the hold does not count; see
:mod:`nrecur.analysis.edit`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nrecur.analysis.patch_pairs import deterministic_task
from nrecur.tasks import NRecurrence

__all__ = ["FOLLOWING", "EditProblems", "default_position", "draw_other_targets", "edit_problems"]

FOLLOWING = 3
"""Target positions of ``(n*, t*)`` after the first (``p + 1``) at which the hold is read."""


@dataclass(frozen=True)
class EditProblems:
    """Destinations spliced with donors at ``position``; everything ``[batch, ...]``."""

    tokens: np.ndarray
    """``[batch, pos]`` the destination up to ``position``, the donor after it (what the model reads)."""
    donor: np.ndarray
    """``[batch, pos]`` a sequence that follows ``(period, target)`` throughout, next target at ``position + 1``."""
    random_donor: np.ndarray
    """``[batch, pos]`` a sequence of another target than ``t*`` (its own period and phase): the random edit's donor."""
    position: int
    """``p``: the last position the edit acts on."""
    period: np.ndarray
    """``[batch]`` ``n*``."""
    target: np.ndarray
    """``[batch]`` ``t*``."""
    destination_period: np.ndarray
    """``[batch]`` ``n`` of the destination."""
    destination_target: np.ndarray
    """``[batch]`` ``t`` of the destination (never ``t*``)."""
    desired: np.ndarray
    """``[batch, pos, vocab]`` ``O*``: the observer's predictive for the donor."""
    revealed: np.ndarray
    """``[batch, 1 + FOLLOWING]`` bool: the exact observer of the tokens since ``p`` alone predicts ``t*`` at the
    read (see :attr:`reads`); column 0, ``p`` itself, has no tokens since ``p`` (False)."""

    @property
    def reads(self) -> np.ndarray:
        """``[batch, 1 + FOLLOWING]`` positions predicting the next target positions of ``(n*, t*)``: ``p``,
        ``p + n*``, …; -1 past the end of the sequence."""
        reads = self.position + self.period[:, None] * np.arange(1 + FOLLOWING)[None, :]
        return np.where(reads < self.tokens.shape[1], reads, -1)

    @property
    def counted(self) -> np.ndarray:
        """``[batch, 1 + FOLLOWING]`` bool: the reads the hold counts — after ``p``, inside the sequence, and
        not yet revealed by the tokens since ``p``."""
        counted = (self.reads >= 0) & ~self.revealed
        counted[:, 0] = False
        return counted


def draw_other_targets(pool, target: np.ndarray, what: str) -> np.ndarray:
    """Row indices into ``pool``: for each ``t*`` the next unused sequence whose target differs."""
    used = np.zeros(len(pool.tokens), dtype=bool)
    chosen = np.empty(len(target), dtype=np.int64)
    for i, t in enumerate(target):
        candidates = np.flatnonzero(~used & (pool.target[:, 0] != t))
        if not len(candidates):
            raise ValueError(f"could not find {what} with a target other than t*; is there more than one target?")
        chosen[i] = candidates[0]
        used[chosen[i]] = True
    return chosen


def edit_problems(task: NRecurrence, per_rule: int, length: int, position: int, seed: int = 0) -> EditProblems:
    """``per_rule`` problems for every rule ``(n*, t*)`` of ``task``, sequences from ``task`` made
    deterministic; donors drawn by rejection until each rule has ``per_rule`` with its next target at
    ``position + 1`` (so any token distribution of the task's variant is kept). ``O*`` and what the tokens
    since ``position`` reveal come from ``task``'s own observer."""
    if not 0 <= position < length - 1:
        raise ValueError(f"the edit position must be in [0, {length - 2}] for sequences of length {length}, got {position}")
    rules = deterministic_task(task)
    wanted = task.rules()
    donors: dict[tuple[int, int], list[np.ndarray]] = {rule: [] for rule in wanted}
    pool_size, attempt = 256 * len(wanted), 0
    while any(len(found) < per_rule for found in donors.values()):
        if attempt > 12:
            short = [rule for rule, found in donors.items() if len(found) < per_rule]
            raise ValueError(f"could not draw {per_rule} donor sequences for the rules {short}; their prior is too small")
        pool = rules.sample(pool_size, length, seed * 1000 + attempt + 1)
        ok = pool.countdown[:, position + 1] == 0
        for row in np.flatnonzero(ok):
            found = donors[(int(pool.period[row, 0]), int(pool.target[row, 0]))]
            if len(found) < per_rule:
                found.append(pool.tokens[row])
        pool_size, attempt = pool_size * 2, attempt + 1
    donor = np.stack([tokens for rule in wanted for tokens in donors[rule]])
    period = np.repeat([n for n, _ in wanted], per_rule)
    target = np.repeat([t for _, t in wanted], per_rule)

    # Destinations and random donors: the next unused sequences whose target differs from t*.
    pool = rules.sample(4 * len(donor), length, seed * 1000 + 999)
    destination = pool.select(draw_other_targets(pool, target, "destinations"))
    others = rules.sample(4 * len(donor), length, seed * 1000 + 998)
    random_donor = others.tokens[draw_other_targets(others, target, "random donors")]
    tokens = np.concatenate([destination.tokens[:, : position + 1], donor[:, position + 1 :]], axis=1)
    desired = np.asarray(task.posterior(donor).predictive, dtype=np.float64)

    # What the tokens since p reveal: the observer of the continuation alone, read where the model is read.
    since = np.asarray(task.posterior(donor[:, position + 1 :]).predictive)  # [batch, pos - p - 1, vocab]
    reads = position + period[:, None] * np.arange(1 + FOLLOWING)[None, :]
    inside = (reads > position) & (reads < length)
    rows = np.arange(len(donor))[:, None]
    best = since[rows, np.where(inside, reads - position - 1, 0)].argmax(-1)  # [batch, read]
    revealed = inside & (best == target[:, None])
    return EditProblems(
        tokens=tokens,
        donor=donor,
        random_donor=random_donor,
        position=position,
        period=period,
        target=target,
        destination_period=destination.period[:, 0],
        destination_target=destination.target[:, 0],
        desired=desired,
        revealed=revealed,
    )


def default_position(length: int, max_period: int) -> int:
    """Room for FOLLOWING more target positions of the longest period after ``p``, and at least half the context before."""
    return min(length - 2, max(length - 1 - FOLLOWING * max_period, length // 2))
