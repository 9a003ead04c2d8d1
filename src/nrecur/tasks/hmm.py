"""Hidden Markov models given by ``T[x, i, j] = P(emit x and move to j | in state i)`` (SPEC §2.5).

``HMMProcess`` samples from any such model and runs its forward filter (the
dense observer, O(states²) per token). Two processes from the work on
belief-state geometry in the residual stream are built in: ``mess3`` (its
beliefs form a fractal in the 2-simplex) and ``rrxor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np


@dataclass(frozen=True)
class HMMBatch:
    """Sampled sequences ``[batch, pos]``: the tokens and the state that emitted each."""

    tokens: np.ndarray
    states: np.ndarray


class HMMProcess:
    """A stationary (or explicitly started) HMM with emissions on transitions."""

    def __init__(
        self,
        transitions,
        initial=None,
        state_names: Sequence[str] | None = None,
    ):
        """``transitions`` ``[vocab, state, state]``; ``initial`` ``[state]`` or None for the stationary distribution."""
        T = np.array(transitions, dtype=np.float64)
        if T.ndim != 3 or T.shape[1] != T.shape[2] or T.shape[0] < 1:
            raise ValueError(f"transitions must have shape [vocab, state, state], got {T.shape}")
        if np.any(~np.isfinite(T)) or np.any(T < 0):
            raise ValueError("transitions must be finite probabilities >= 0")
        row_sums = T.sum(axis=(0, 2))
        if np.any(np.abs(row_sums - 1.0) > 1e-9):
            bad = int(np.argmax(np.abs(row_sums - 1.0)))
            raise ValueError(f"transitions out of each state must sum to 1 over (token, next state); state {bad} sums to {row_sums[bad]:.12g}")
        self.transitions = T
        self.vocab_size, self.n_states = T.shape[0], T.shape[1]
        if state_names is not None and len(state_names) != self.n_states:
            raise ValueError(f"state_names needs {self.n_states} names, got {len(state_names)}")
        self.state_names = tuple(state_names) if state_names is not None else tuple(str(i) for i in range(self.n_states))
        self.initial = self.stationary_distribution() if initial is None else _check_initial(initial, self.n_states)

    @property
    def state_matrix(self) -> np.ndarray:
        """``[state, state]``: P(next state | state), summed over tokens."""
        return self.transitions.sum(axis=0)

    def stationary_distribution(self) -> np.ndarray:
        """``[state]``: the unique stationary distribution; an error if it is not unique."""
        A = self.state_matrix
        values, vectors = np.linalg.eig(A.T)
        ones = np.flatnonzero(np.abs(values - 1.0) < 1e-9)
        if len(ones) != 1:
            raise ValueError(
                f"this HMM has {len(ones)} stationary distributions (it is not irreducible); pass initial= explicitly"
            )
        pi = np.real(vectors[:, ones[0]])
        pi = np.abs(pi) / np.abs(pi).sum()
        return pi

    def sample(self, batch_size: int, length: int, seed: int | Sequence[int] = 0) -> HMMBatch:
        """Sample ``[batch, pos]`` tokens and states, vectorized over the batch."""
        if batch_size < 1 or length < 1:
            raise ValueError(f"batch_size and length must be >= 1, got {batch_size}, {length}")
        rng = np.random.default_rng(seed)
        V, S = self.vocab_size, self.n_states
        # Joint CDF over (token, next state) for each state: [state, vocab*state].
        cdf = np.cumsum(self.transitions.transpose(1, 0, 2).reshape(S, V * S), axis=1)
        state = np.minimum(np.searchsorted(np.cumsum(self.initial), rng.random(batch_size), side="right"), S - 1)
        tokens = np.empty((length, batch_size), dtype=np.int64)
        states = np.empty((length, batch_size), dtype=np.int64)
        for i in range(length):
            u = rng.random(batch_size)[:, None]
            rows = cdf[state]
            pick = np.minimum((rows <= u * rows[:, -1:]).sum(axis=1), V * S - 1)
            states[i], tokens[i] = state, pick // S
            state = pick % S
        return HMMBatch(tokens=np.ascontiguousarray(tokens.T), states=np.ascontiguousarray(states.T))

    def posterior(self, tokens, *, impossible: Literal["raise", "inf"] = "raise"):
        """Forward filter: ``.predictive [batch, pos, vocab]``, ``.belief [batch, pos, state]`` (see HMMPosterior)."""
        from nrecur.observer.hmm import hmm_posterior

        return hmm_posterior(self.transitions, self.initial, tokens, impossible=impossible)


def _check_initial(initial, n_states: int) -> np.ndarray:
    p = np.asarray(initial, dtype=np.float64)
    if p.shape != (n_states,) or not np.all(np.isfinite(p)) or np.any(p < 0) or abs(p.sum() - 1.0) > 1e-9:
        raise ValueError(f"initial must be {n_states} probabilities summing to 1")
    return p


def mess3(x: float = 0.05, a: float = 0.85) -> HMMProcess:
    """Mess3(x, a): 3 states, 3 tokens; move with ``1-2x`` to stay / ``x`` to each other state,
    then the destination emits its own token with probability ``a`` (SPEC §2.5)."""
    if not (0 < x <= 0.5):
        raise ValueError(f"mess3: x must lie in (0, 0.5] (x = 0 never switches state: no unique start), got {x}")
    if not (0 <= a <= 1):
        raise ValueError(f"mess3: a must lie in [0, 1], got {a}")
    A = np.full((3, 3), x) + np.eye(3) * (1 - 3 * x)
    E = np.full((3, 3), (1 - a) / 2) + np.eye(3) * (a - (1 - a) / 2)  # [state j, token k]
    T = np.einsum("ij,jk->kij", A, E)
    return HMMProcess(T, state_names=("A", "B", "C"))


def rrxor(p1: float = 0.5, p2: float = 0.5) -> HMMProcess:
    """RRXOR(p1, p2): two random bits (0 with p1, then 0 with p2), then their XOR (SPEC §2.5)."""
    for name, p in (("p1", p1), ("p2", p2)):
        if not (0 <= p <= 1):
            raise ValueError(f"rrxor: {name} must lie in [0, 1], got {p}")
    S, B0, B1, TT, FF = range(5)
    T = np.zeros((2, 5, 5))
    T[0, S, B0], T[1, S, B1] = p1, 1 - p1
    for b, state in ((0, B0), (1, B1)):
        for bit, p in ((0, p2), (1, 1 - p2)):
            T[bit, state, TT if b ^ bit else FF] += p
    T[1, TT, S] = 1.0
    T[0, FF, S] = 1.0
    return HMMProcess(T, state_names=("S", "0", "1", "T", "F"))
