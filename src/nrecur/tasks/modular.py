"""In-context modular arithmetic (SPEC §2.6, after He et al.): a finite set of hidden linear rules.

A rule is a *task vector* ``(a, b)`` in ``Z_p × Z_p``. A sequence holds
``n_examples`` examples of one vector, three tokens each: ``x y z`` with
``x, y`` uniform on ``Z_p`` (independently) and ``z = (a·x + b·y) mod p``;
tokens are ``0 … p-1``. Training sees only ``n_tasks`` vectors, chosen once by
``task_seed`` (:attr:`ModularICL.train_tasks`); the other ``p² - n_tasks`` are
out-of-distribution (OOD) tasks, never seen in training.

Only the ``z`` tokens carry information about the rule, so an ideal observer
predicts ``x`` and ``y`` uniformly and ``z`` from the task vectors still
consistent with the examples so far. Two priors over vectors define two
observers (``nrecur.observer.modular``): uniform over the training vectors
(the best a memorizing "switchboard" can do) and uniform over all ``p²``
vectors (the general algorithm, the only one that works OOD).
:meth:`ModularICL.evaluation_views` scores a model against both.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from pydantic import field_validator, model_validator

from nrecur.tasks.base import EvalView, Sequences, Strata, Task, Truth, check_seed, check_sizes, observer_of

#: Largest modulus: the observer follows up to p² vectors per sequence, which beyond this gets unwieldy.
MAX_P = 1024

#: The sample splits, in the order that keys their independent random streams.
SPLITS = ("in_distribution", "out_of_distribution")

#: Slot of a token within its example: ``x``, ``y``, then the answer ``z``.
SLOT_NAMES = ("x", "y", "z")


@dataclass(frozen=True)
class ModularBatch(Sequences):
    """Sampled sequences ``[batch, pos]`` of in-context modular arithmetic and their hidden truth."""

    a: np.ndarray
    """``[batch]`` first component of the sequence's task vector (int64)."""
    b: np.ndarray
    """``[batch]`` second component of the sequence's task vector (int64)."""
    slot: np.ndarray
    """``[batch, pos]`` slot of each token within its example: 0 = x, 1 = y, 2 = z (int64)."""
    in_distribution: np.ndarray
    """``[batch]`` the task vector is one of ``train_tasks`` (bool)."""


class ModularICL(Task):
    """In-context modular arithmetic: ``k`` examples ``x y (a·x + b·y mod p)`` of one hidden task vector."""

    kind: Literal["modular"] = "modular"
    """Task kind (the discriminator in a run's config.json)."""
    p: int = 7
    """Modulus p; tokens are 0..p-1 and task vectors (a, b) range over Z_p x Z_p; an integer in [2, 1024]
    (a prime in the paper, p=29; 7 keeps a CPU run small: 49 task vectors, 7 tokens)."""
    n_examples: int = 8
    """Examples k per sequence (x y z each, so 3k tokens), k >= 1; 8 examples give the universal observer
    room to pin the vector down (about 2 examples for prime p) and a model room to show it."""
    n_tasks: int = 16
    """Number of task vectors seen in training, chosen by task_seed; an integer in [1, p^2]
    (16 of 49 at the defaults leaves 33 out-of-distribution vectors)."""
    task_seed: int = 0
    """Seed that picks the training task vectors (an integer >= 0)."""

    # ------------------------------------------------------------------ validation

    @field_validator("p")
    @classmethod
    def _check_p(cls, value: int) -> int:
        if not 2 <= value <= MAX_P:
            raise ValueError(f"p must be an integer in [2, {MAX_P}], got {value}")
        return value

    @field_validator("n_examples")
    @classmethod
    def _check_examples(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"n_examples must be an integer >= 1, got {value}")
        return value

    @field_validator("task_seed")
    @classmethod
    def _check_task_seed(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"task_seed must be an integer >= 0, got {value}")
        return value

    @model_validator(mode="after")
    def _check_n_tasks(self) -> "ModularICL":
        if not 1 <= self.n_tasks <= self.n_vectors:
            raise ValueError(
                f"n_tasks must be an integer in [1, p^2] = [1, {self.n_vectors}] for p={self.p}, got {self.n_tasks}"
            )
        return self

    # ------------------------------------------------------------------ derived values

    @property
    def vocab_size(self) -> int:
        """Tokens are the residues 0..p-1."""
        return self.p

    @property
    def n_vectors(self) -> int:
        """Number of task vectors, ``p²``."""
        return self.p * self.p

    @property
    def max_length(self) -> int:
        """``3 · n_examples`` tokens."""
        return 3 * self.n_examples

    @functools.cached_property
    def train_task_index(self) -> np.ndarray:
        """``[n_tasks]`` sorted indices ``a·p + b`` of the training task vectors (read-only int64)."""
        chosen = np.random.default_rng(self.task_seed).permutation(self.n_vectors)[: self.n_tasks]
        index = np.sort(chosen)
        index.setflags(write=False)
        return index

    @property
    def train_tasks(self) -> np.ndarray:
        """``[n_tasks, 2]`` the training task vectors ``(a, b)``, sorted (int64)."""
        return np.stack(np.divmod(self.train_task_index, self.p), axis=1)

    @property
    def ood_tasks(self) -> np.ndarray:
        """``[p² - n_tasks, 2]`` the out-of-distribution task vectors ``(a, b)``, sorted (int64)."""
        other = np.setdiff1d(np.arange(self.n_vectors), self.train_task_index)
        return np.stack(np.divmod(other, self.p), axis=1)

    # ------------------------------------------------------------------ the Task interface

    def sample(
        self,
        batch_size: int,
        length: int,
        seed: int | Sequence[int] = 0,
        split: Literal["in_distribution", "out_of_distribution"] = "in_distribution",
    ) -> ModularBatch:
        """The first ``length`` tokens (1..3k) of ``batch_size`` sequences, each of one task vector drawn
        uniformly from ``train_tasks`` (``split="in_distribution"``) or from the other vectors
        (``"out_of_distribution"``). The two splits draw from independent streams of ``seed``."""
        check_sizes(batch_size, length)
        check_seed(seed)
        self.check_length(length)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        vectors = self.train_tasks if split == "in_distribution" else self.ood_tasks
        if len(vectors) == 0:
            raise ValueError(
                f"there are no out-of-distribution task vectors: n_tasks = p^2 = {self.n_vectors} puts every "
                "vector in training; lower n_tasks to sample split='out_of_distribution'"
            )
        entropy = list(seed) if isinstance(seed, (tuple, list)) else int(seed)
        rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(SPLITS.index(split),)))
        p, examples = self.p, -(-length // 3)  # examples begun within `length` tokens (ceil)
        a, b = vectors[rng.integers(len(vectors), size=batch_size)].T  # [batch] each
        xy = rng.integers(p, size=(batch_size, examples, 2))  # [batch, example, 2]
        z = (a[:, None] * xy[..., 0] + b[:, None] * xy[..., 1]) % p  # [batch, example]
        tokens = np.concatenate([xy, z[..., None]], axis=2).reshape(batch_size, 3 * examples)[:, :length]
        slot = np.broadcast_to(np.arange(length) % 3, (batch_size, length))
        return ModularBatch(
            tokens=np.ascontiguousarray(tokens),
            a=a.copy(),
            b=b.copy(),
            slot=slot.copy(),
            in_distribution=np.full(batch_size, split == "in_distribution"),
        )

    def posterior(
        self,
        tokens,
        *,
        prior: Literal["in_distribution", "universal"] = "in_distribution",
        impossible: Literal["raise", "inf"] = "raise",
    ):
        """The exact observer on ``tokens [batch, pos]`` under a uniform prior over ``train_tasks``
        (``"in_distribution"``) or over all p² vectors (``"universal"``); see ``nrecur.observer.modular``."""
        return observer_of(self)(self, tokens, prior=prior, impossible=impossible)

    def truth(self, sample: ModularBatch) -> Truth:
        """Accuracy where the next token is a z (an answer); strata by the slot of the next token."""
        slot = np.asarray(sample.slot)
        return Truth(
            accuracy_name="z_acc",
            accuracy_mask=slot[:, 1:] == 2,
            accuracy_title="when the next token is a z (the answer of an example)",
            strata=Strata(
                labels=(slot + 1) % 3,  # prediction position i is labelled by the slot of token i+1
                values=(0, 1, 2),
                names=tuple(f"next_{name}" for name in SLOT_NAMES),
                title="slot of the next token",
            ),
        )

    def evaluation_views(self) -> tuple[EvalView, ...]:
        """In-distribution sequences against both observers, OOD ones against the universal one
        (none when every vector is a training vector)."""
        views = (
            EvalView(
                "eval",
                split="in_distribution",
                observer=(("prior", "in_distribution"),),
                description="training task vectors against the in-distribution observer (the training Bayes optimum)",
            ),
            EvalView(
                "universal",
                split="in_distribution",
                observer=(("prior", "universal"),),
                description="training task vectors against the universal observer (the general algorithm)",
            ),
        )
        if self.n_tasks == self.n_vectors:
            return views
        return views + (
            EvalView(
                "out_dist",
                split="out_of_distribution",
                observer=(("prior", "universal"),),
                description="unseen task vectors against the universal observer",
            ),
        )

    def rules(self) -> None:
        """None: the out-of-distribution split is built in (``n_tasks``); training cannot hold out more."""
        return None

    def describe(self) -> str:
        return (
            f"ModularICL(p={self.p}, {self.n_examples} examples, {self.n_tasks} of {self.n_vectors} "
            f"task vectors in training, task_seed={self.task_seed})"
        )
