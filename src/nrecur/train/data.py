"""Where training sequences come from: fresh every step (online) or a fixed set (finite).

Every batch is a pure function of the data seed and the step, so a resumed run
sees exactly the batches an uninterrupted one would, with no generator state
to save. Held-out rules: for a task with a finite set of hidden rules
(``task.rules()``, e.g. n-recurrence's ``(period, target)``), a fraction of
them never appears in training; training sequences whose hidden rule is one of
them at any position. Training sequences are drawn from the task under its
in-distribution prior (``task.in_distribution(held_out)``: the rule prior
restricted to the other rules), so that they follow exactly the process the
memorizing observer assumes — rejecting sequences of the full process that
touch a held-out rule would instead favour sequences with fewer rule changes.
Only where that prior is not a valid one (a rule left with no allowed
successor) are such sequences rejected and redrawn.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Hashable, Protocol

import numpy as np

from nrecur.tasks import Sequences, Task

Rule = Hashable
"""A hidden rule of a task, e.g. ``(period, target)`` for n-recurrence."""

_DOMAIN_RULES = 0x52554C45  # separate the random streams of rules, training batches and the training set
_DOMAIN_BATCH = 0x42415443
_DOMAIN_SET = 0x53455421
_DOMAIN_EPOCH = 0x45504F43


def held_out_rules(task: Task, fraction: float, seed: int) -> frozenset[Rule]:
    """The ``round(fraction * n_rules)`` rules of ``task.rules()`` kept out of training, chosen by ``seed``.

    At least one rule always stays in training. A task without rules holds nothing out
    (``RunConfig`` refuses a positive fraction for one).
    """
    rules = task.rules()
    if not rules or fraction <= 0:
        return frozenset()
    count = min(int(round(fraction * len(rules))), len(rules) - 1)
    if count <= 0:
        return frozenset()
    chosen = np.random.default_rng((seed, _DOMAIN_RULES)).choice(len(rules), size=count, replace=False)
    return frozenset(rules[i] for i in sorted(chosen))


def touches(task: Task, sample: Sequences, rules: frozenset[Rule]) -> np.ndarray:
    """``[batch]`` bool: the hidden rule of the sequence is one of ``rules`` at some position."""
    if not rules:
        return np.zeros(len(sample), dtype=bool)
    held = np.array([rule in rules for rule in task.rules()])  # [rule]
    return held[task.rule_index(sample)].any(axis=1)


def training_source(task: Task, rules: frozenset[Rule]) -> tuple[Task, frozenset[Rule]]:
    """``(task to sample, rules still to reject)`` for training without ``rules``: the task under its
    in-distribution prior with nothing to reject, or — where the kind has none or it is not a valid prior —
    ``task`` itself with ``rules`` rejected."""
    if not rules:
        return task, frozenset()
    try:
        return task.in_distribution(rules), frozenset()
    except ValueError:
        return task, rules


def sample_avoiding(
    task: Task, count: int, length: int, seed: tuple[int, ...], rules: frozenset[Rule], max_rounds: int = 1000
) -> Sequences:
    """``count`` sequences of ``length`` whose hidden rule never is one of ``rules``: drawn from
    :func:`training_source`'s task, rejecting (and redrawing) those that still touch one."""
    task, rules = training_source(task, rules)
    if not rules:
        return task.sample(count, length, seed)
    kept: list[Sequences] = []
    have = 0
    for attempt in range(max_rounds):
        batch = task.sample(max(2 * count, 16), length, (*seed, attempt))
        batch = batch.select(~touches(task, batch, rules))
        kept.append(batch)
        have += len(batch)
        if have >= count:
            return type(batch).concatenate(kept).select(slice(0, count))
    raise ValueError(
        f"could not draw {count} training sequences avoiding the {len(rules)} held-out rules in {max_rounds} rounds; "
        "lower held_out_fraction"
    )


class DataSource(Protocol):
    """Training batches as a function of the step."""

    def batch(self, step: int) -> np.ndarray:
        """``[batch, pos]`` int64 tokens of training step ``step``."""
        ...


@dataclass(frozen=True)
class OnlineData:
    """Fresh sequences every step: batch ``step`` is sampled with seed ``(seed, step)``."""

    task: Task
    length: int
    batch_size: int
    seed: int
    held_out: frozenset[Rule] = frozenset()

    def batch(self, step: int) -> np.ndarray:
        task, rejected = self.source
        return sample_avoiding(task, self.batch_size, self.length, self.batch_seed(step), rejected).tokens

    @functools.cached_property
    def source(self) -> tuple[Task, frozenset[Rule]]:
        """:func:`training_source` of the task and the held-out rules (built once)."""
        return training_source(self.task, self.held_out)

    def batch_seed(self, step: int) -> tuple[int, int, int]:
        """The seed of the sequences of step ``step``."""
        return (self.seed, _DOMAIN_BATCH, step)

    @functools.cached_property
    def task_key(self) -> str:
        """The task as text: sources with the same one (and length and batch size) are drawn together."""
        return self.task.model_dump_json()


class FiniteData:
    """A fixed training set of ``size`` sequences; each epoch visits it in a fresh order.

    With ``batch_size >= size`` every step is a full-batch step on the whole set.
    """

    def __init__(
        self, task: Task, length: int, size: int, batch_size: int, seed: int, held_out: frozenset[Rule] = frozenset()
    ) -> None:
        self.sequences = sample_avoiding(task, size, length, (seed, _DOMAIN_SET), held_out)
        self.tokens = self.sequences.tokens  # [size, pos]
        self.batch_size = min(batch_size, size)
        self.seed = seed
        self.steps_per_epoch = size // self.batch_size

    def batch(self, step: int) -> np.ndarray:
        if self.batch_size == len(self.tokens):
            return self.tokens
        epoch, index = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng((self.seed, _DOMAIN_EPOCH, epoch)).permutation(len(self.tokens))
        return self.tokens[order[index * self.batch_size : (index + 1) * self.batch_size]]


def draw_batches(sources: Sequence[DataSource], step: int) -> list[np.ndarray]:
    """``[source.batch(step) for source in sources]`` (each ``[batch, pos]``), the same arrays; plain online
    sources of one task, length and batch size without held-out rules (an ensemble's members that differ in
    seeds) are drawn together by ``Task.sample_many``, which shares the sampler's work per position."""
    batches: list[np.ndarray | None] = [None] * len(sources)
    together: dict[tuple[str, int, int], list[int]] = {}
    for index, source in enumerate(sources):
        if type(source) is OnlineData and not source.held_out:
            together.setdefault((source.task_key, source.length, source.batch_size), []).append(index)
        else:
            batches[index] = source.batch(step)
    for indices in together.values():
        first = sources[indices[0]]
        drawn = first.task.sample_many(first.batch_size, first.length, [sources[i].batch_seed(step) for i in indices])
        for index, sample in zip(indices, drawn):
            batches[index] = sample.tokens
    return batches


DATA_MODES = {
    "online": lambda task, length, train, held_out: OnlineData(task, length, train.batch_size, train.data_seed, held_out),
    "finite": lambda task, length, train, held_out: FiniteData(
        task, length, train.train_size, train.batch_size, train.data_seed, held_out
    ),
}
"""``TrainConfig.mode`` → constructor ``(task, length, train_config, held_out) -> DataSource``."""


def make_data(task: Task, length: int, train, held_out: frozenset[Rule]) -> DataSource:
    """The data source a :class:`~nrecur.train.config.TrainConfig` asks for."""
    return DATA_MODES[train.mode](task, length, train, held_out)
