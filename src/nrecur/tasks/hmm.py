"""Hidden Markov models given by ``T[x, i, j] = P(emit x and move to j | in state i)`` (SPEC §2.5).

``HMMProcess`` is the process itself: it samples and hands its tokens to the
dense forward filter (O(states²) per token, registered by
``nrecur.observer.hmm``). The task configs ``Mess3(x, a)``, ``RRXOR(p1, p2)``
and ``HMM(T)`` build one; Mess3's beliefs form a fractal in the 2-simplex,
the picture of the work on belief-state geometry in the residual stream.
``mess3()`` and ``rrxor()`` return the processes directly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from pydantic import field_validator, model_validator

from nrecur.tasks.base import Sequences, Strata, Task, Truth, check_seed, check_sizes, observer_of


@dataclass(frozen=True)
class HMMBatch(Sequences):
    """Sampled sequences ``[batch, pos]``: the tokens and the hidden state at each position."""

    states: np.ndarray
    """``[batch, pos]`` the state the process is in before emitting ``tokens[:, i]``: with
    ``T[x, i, j]`` it emits ``x`` while moving to ``states[:, i+1]`` (for Mess3 the token comes from that
    destination state). The observer's belief after ``tokens[:, :i+1]`` is about ``states[:, i+1]``."""


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
        check_sizes(batch_size, length)
        check_seed(seed)
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
        return observer_of(self)(self, tokens, impossible=impossible)


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


# ---------------------------------------------------------------------------- task configs


class HMMTask(Task):
    """Base of the HMM task kinds: each builds an :class:`HMMProcess` (``.process``)."""

    def build(self) -> HMMProcess:
        raise NotImplementedError

    @functools.cached_property
    def process(self) -> HMMProcess:
        """The process this config describes (built once)."""
        return self.build()

    @property
    def vocab_size(self) -> int:
        return self.process.vocab_size

    @property
    def n_states(self) -> int:
        return self.process.n_states

    def sample(self, batch_size: int, length: int, seed: int | Sequence[int] = 0) -> HMMBatch:
        """Sample ``[batch, pos]`` tokens and the hidden state of each position."""
        return self.process.sample(batch_size, length, seed)

    def describe(self) -> str:
        """The kind with every parameter (a given ``T`` as its size)."""
        values = {k: v for k, v in self.model_dump().items() if k not in ("kind", "T") and v is not None}
        if "T" in type(self).model_fields:
            values = {"states": self.n_states, "tokens": self.vocab_size, **values}
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in values.items())})"

    def truth(self, sample: HMMBatch) -> Truth:
        """Accuracy at every position; strata by the hidden state at the prediction position."""
        return Truth(
            accuracy_name="next_acc",
            accuracy_mask=np.ones((len(sample.tokens), sample.tokens.shape[1] - 1), dtype=bool),
            accuracy_title="at every position",
            strata=Strata(
                labels=np.asarray(sample.states),
                values=tuple(range(self.n_states)),
                names=tuple(f"s{name}" for name in self.process.state_names),
                title="state",
            ),
        )


class Mess3(HMMTask):
    """Mess3(x, a) (SPEC §2.5): 3 states, 3 tokens; beliefs form a fractal in the 2-simplex."""

    kind: Literal["mess3"] = "mess3"
    """Task kind (the discriminator in a run's config.json)."""
    x: float = 0.05
    """Probability of moving to each other state (staying: 1 - 2x); in (0, 0.5]."""
    a: float = 0.85
    """Probability that a state emits its own token (each other token: (1 - a)/2); in [0, 1]."""

    @model_validator(mode="after")
    def _check(self) -> "Mess3":
        self.process  # noqa: B018 - mess3() checks x and a with messages naming them
        return self

    def build(self) -> HMMProcess:
        return mess3(self.x, self.a)


class RRXOR(HMMTask):
    """RRXOR(p1, p2) (SPEC §2.5): two random bits, then their XOR; 5 states, tokens {0, 1}."""

    kind: Literal["rrxor"] = "rrxor"
    """Task kind (the discriminator in a run's config.json)."""
    p1: float = 0.5
    """Probability that the first random bit is 0; in [0, 1]."""
    p2: float = 0.5
    """Probability that the second random bit is 0; in [0, 1]."""

    @model_validator(mode="after")
    def _check(self) -> "RRXOR":
        self.process  # noqa: B018 - rrxor() checks p1 and p2 with messages naming them
        return self

    def build(self) -> HMMProcess:
        return rrxor(self.p1, self.p2)


class HMM(HMMTask):
    """Any hidden Markov model ``T[x, i, j] = P(emit x and move to j | in state i)``, given in the config."""

    kind: Literal["hmm"] = "hmm"
    """Task kind (the discriminator in a run's config.json)."""
    T: tuple[tuple[tuple[float, ...], ...], ...]
    """Transition tensor [vocab][state][state]: non-negative, each state's row sums to 1 over (token, next state)."""
    initial: tuple[float, ...] | None = None
    """Distribution of the first state; None for the stationary one (which must then be unique)."""
    state_names: tuple[str, ...] | None = None
    """Names of the states (default 0, 1, ...)."""

    @field_validator("T", mode="before")
    @classmethod
    def _three_axes(cls, value):
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("T must be nested lists of numbers of shape [vocab, state, state]") from None
        if array.ndim != 3:
            raise ValueError(f"T must have shape [vocab, state, state], got shape {list(array.shape)}")
        return array.tolist()

    @model_validator(mode="after")
    def _check(self) -> "HMM":
        self.process  # noqa: B018 - building the process validates T and initial with messages naming them
        return self

    def build(self) -> HMMProcess:
        try:
            return HMMProcess(self.T, initial=self.initial, state_names=self.state_names)
        except ValueError as error:
            raise ValueError(str(error).replace("transitions", "T")) from None
