"""The interface every generative process implements: one ``Task``, many kinds.

A task is a frozen config (``Config``) with a ``kind`` discriminator, so a run's
``config.json`` rebuilds any of them. What the rest of nrecur asks of a task:

* ``vocab_size`` and, where sequences have a natural end, ``max_length``;
* ``sample(batch_size, length, seed)`` → a :class:`Sequences`: tokens
  ``[batch, pos]`` plus the hidden truth as named ``[batch, pos]`` (or
  ``[batch]``) arrays;
* ``posterior(tokens)`` → the exact observer: at least ``predictive
  [batch, pos, vocab]``, ``log_loss [batch, pos - 1]``, ``log_likelihood``
  and ``impossible``, plus the task's own beliefs;
* ``truth(sample)`` → what evaluation groups KL and accuracy by
  (:class:`Truth`);
* ``evaluation_views()`` → which sequences are scored against which observer
  (one view for most tasks; in- and out-of-distribution for modular
  arithmetic);
* optionally ``rules()`` / ``rule_index(sample)``: the finite set of hidden
  rules, so that training can hold some of them out, ``in_distribution(held_out)``:
  the task under its prior restricted to the others (what such a run trains on),
  and ``held_out_observer(held_out)``: the observer of a run trained without them.

Tasks never import their observers (the module graph runs tasks → observer):
an observer module registers itself for a task class with
:func:`register_observer`, and ``task.posterior`` looks it up. Importing
``nrecur`` imports every observer.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Hashable, Sequence, TypeVar

import numpy as np

from nrecur._config import Config
from nrecur._io import atomic_write, remove_stale_temporaries
from nrecur._memory import available_memory, format_bytes

__all__ = [
    "EvalView",
    "OBSERVERS",
    "Sequences",
    "Strata",
    "Task",
    "Truth",
    "check_seed",
    "check_sizes",
    "register_observer",
    "task_from_data",
]

S = TypeVar("S", bound="Sequences")


@dataclass(frozen=True)
class Sequences:
    """Sampled sequences and their hidden truth. Every field is an array whose first axis is ``batch``."""

    tokens: np.ndarray
    """``[batch, pos]`` observed tokens (int64)."""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    def __len__(self) -> int:
        return len(self.tokens)

    def select(self: S, index: Any, positions: slice | None = None) -> S:
        """The sequences ``index`` (a mask, slice or index array over ``batch``); ``positions`` cuts
        every ``[batch, pos]`` field along ``pos`` too (per-sequence fields are kept whole)."""
        values = {}
        for name in self.field_names():
            array = getattr(self, name)[index]
            if positions is not None and array.ndim >= 2:
                array = array[:, positions]
            values[name] = array
        return type(self)(**values)

    @classmethod
    def concatenate(cls: type[S], parts: Sequence[S]) -> S:
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in cls.field_names()})

    def save(self, path: str | os.PathLike, extra: dict[str, str] | None = None) -> None:
        """Write every field to a ``.npz`` file, atomically (a temporary file, then a rename).

        ``extra`` strings are stored too (plain unicode arrays: loadable with ``allow_pickle=False``),
        e.g. ``{"task": task.model_dump_json()}``; :meth:`load` ignores them.
        """
        arrays = {name: getattr(self, name) for name in self.field_names()}
        arrays.update({key: np.array(value, dtype=np.str_) for key, value in (extra or {}).items()})
        # A write killed halfway leaves a temporary; the next write to this folder removes those.
        # Only files of this kind (``.NAME.npz.XXXX.tmp``, and ``tmpXXXX.npz.tmp`` of older versions).
        remove_stale_temporaries(Path(path).absolute().parent, recursive=False, patterns=(".*.npz.*.tmp", "tmp*.npz.tmp"))
        atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays))

    @classmethod
    def load(cls: type[S], path: str | os.PathLike) -> S:
        with np.load(path) as data:
            return cls(**{name: data[name] for name in cls.field_names()})


@dataclass(frozen=True)
class Strata:
    """A hidden-truth label per prediction position, for KL and accuracy by stratum."""

    labels: np.ndarray
    """``[batch, pos]`` int: the stratum of prediction position i (the hidden truth the kind groups by: the
    rule in force at position i for n-recurrence, the state at i for HMMs, the slot of token i+1 for modular)."""
    values: tuple[int, ...]
    """The label values, in reporting order."""
    names: tuple[str, ...]
    """Short metric names of the values, e.g. ``n2`` or ``sA`` (metrics ``kl_n2``, ``acc_n2``)."""
    title: str
    """What the label is, in words (``period``, ``state``, ``next token``)."""


@dataclass(frozen=True)
class Truth:
    """What evaluation needs from the hidden truth of a batch."""

    accuracy_name: str
    """Metric name of the accuracy, e.g. ``target_acc``."""
    accuracy_mask: np.ndarray
    """``[batch, pos - 1]`` bool: prediction positions whose next token is scored for accuracy."""
    accuracy_title: str
    """The positions in words, e.g. ``at target positions``."""
    strata: Strata | None = None


@dataclass(frozen=True)
class EvalView:
    """One evaluation set: sequences from ``split`` scored against the observer called with ``observer``."""

    name: str
    """Set name; metrics are ``{name}/kl`` etc. ``eval`` is the one the KL threshold is measured on."""
    split: str | None = None
    """Keyword ``split`` of ``sample`` (None: the task's default sequences)."""
    observer: tuple[tuple[str, Any], ...] = ()
    """Keyword arguments of ``posterior`` (e.g. ``(("prior", "universal"),)``)."""
    description: str = "fresh sequences against the exact observer"


#: Observer functions by task class: ``fn(task, tokens, **kwargs) -> posterior``.
OBSERVERS: dict[type, Callable[..., Any]] = {}


def register_observer(task_class: type) -> Callable[[Callable], Callable]:
    """Decorator for an observer module: ``@register_observer(NRecurrence)``."""

    def decorate(fn: Callable) -> Callable:
        OBSERVERS[task_class] = fn
        return fn

    return decorate


def observer_of(task: object) -> Callable[..., Any]:
    for cls in type(task).__mro__:
        if cls in OBSERVERS:
            return OBSERVERS[cls]
    raise LookupError(
        f"no observer is registered for {type(task).__name__}; import nrecur.observer first (nrecur.{type(task).__name__}, "
        "training and the analyses do)"
    )


class Task(Config):
    """Base of every task config. Subclasses add a ``kind: Literal[...]`` field and their parameters."""

    KINDS: ClassVar[dict[str, type["Task"]]] = {}
    """Every task kind, by name (filled by subclasses that set ``kind``)."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.model_fields.get("kind")
        if field is not None and isinstance(field.default, str):
            Task.KINDS[field.default] = cls
            # n-recurrence, the project's main task, first; the others in the order they are defined.
            Task.KINDS = dict(sorted(Task.KINDS.items(), key=lambda item: item[0] != "nrecurrence"))

    # --- what every kind provides

    @property
    def max_length(self) -> int | None:
        """The longest sequence the task defines (None: any length)."""
        return None

    def check_length(self, length: int) -> None:
        """Complain about a context length: an error past ``max_length``; a kind may also warn."""
        if self.max_length is not None and length > self.max_length:
            raise ValueError(
                f"{self.kind} sequences have at most {self.max_length} tokens; a length of {length} was asked for "
                "(ask for a shorter length or context, or give the task longer sequences)"
            )

    def sample(self, batch_size: int, length: int, seed: int | Sequence[int] = 0) -> Sequences:
        raise NotImplementedError

    def sample_many(self, batch_size: int, length: int, seeds: Sequence[int | Sequence[int]]) -> list[Sequences]:
        """``[self.sample(batch_size, length, seed) for seed in seeds]``; a kind may draw them faster together
        (the same arrays)."""
        return [self.sample(batch_size, length, seed) for seed in seeds]

    def posterior(self, tokens, **kwargs: Any):
        """The exact Bayes observer on ``tokens [batch, pos]``; see the observer module of this kind."""
        return observer_of(self)(self, tokens, **kwargs)

    def truth(self, sample: Sequences) -> Truth:
        """Accuracy positions and strata of a sample of this task (see :class:`Truth`)."""
        raise NotImplementedError

    def evaluation_views(self) -> tuple[EvalView, ...]:
        """The evaluation sets of a run on this task: by default fresh sequences, one observer."""
        return (EvalView("eval"),)

    def rules(self) -> tuple[Hashable, ...] | None:
        """The hidden rules with positive prior that training can hold out (None: not supported)."""
        return None

    def rule_index(self, sample: Sequences) -> np.ndarray:
        """``[batch, pos]`` index into :meth:`rules` of the rule in force at each position."""
        raise NotImplementedError(f"{self.kind} has no rules to hold out")

    def in_distribution(self, held_out: frozenset) -> "Task":
        """This task under its prior restricted to the rules not in ``held_out``: the process a run that holds
        them out trains on. Raises ValueError when the kind has no prior over rules to restrict, or the
        restricted one is not a valid prior (the message says why)."""
        raise ValueError(f"task kind {self.kind!r} has no prior over rules to restrict")

    def held_out_observer(self, held_out: frozenset) -> tuple[tuple[str, Any], ...] | None:
        """Keyword arguments of ``posterior`` for the *in-distribution* observer of a run trained without the
        rules ``held_out`` (the prior restricted to its training rules), or None when the kind has none.
        Raises ValueError when that prior is not a valid one (the message says why)."""
        return None

    def describe(self) -> str:
        """The task in words, for tables and reports."""
        changed = {k: v for k, v in self.model_dump().items() if k != "kind" and v != type(self).model_fields[k].default}
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in changed.items())})"


def task_from_data(value: Any) -> "Task":
    """A task config from a task or from its JSON data, by its ``kind`` (every kind in :attr:`Task.KINDS`,
    user-defined ones included). Data without ``kind`` — run folders written before kinds existed — is
    n-recurrence."""
    if isinstance(value, Task):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"a task is a task config or a mapping with a 'kind', got {type(value).__name__}")
    kind = value.get("kind", "nrecurrence")
    if kind not in Task.KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, Task.KINDS))}; got {kind!r}")
    return Task.KINDS[kind].model_validate(value)


def check_seed(seed: Any) -> None:
    """Seeds are non-negative integers or sequences of them (NumPy's SeedSequence entropy)."""
    items = seed if isinstance(seed, (tuple, list)) else [seed]
    if not items or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in items):
        raise ValueError(f"seed must be an integer >= 0 or a tuple of them, got {seed!r}")


#: Refuse to allocate sampled arrays beyond this many tokens per call (tens of GB with the hidden truth).
MAX_SAMPLE_TOKENS = 1_000_000_000
#: Peak bytes per sampled token, hidden truth and the sampler's temporaries included (n-recurrence
#: measures about 42, the HMM and modular kinds about 33).
SAMPLE_BYTES_PER_TOKEN = 48


def check_sizes(batch_size: Any, length: Any) -> None:
    """``batch_size`` and ``length`` are integers >= 1 whose product fits in memory (estimated
    before anything is allocated, against the memory available now)."""
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 1:
        raise ValueError(f"length must be an integer >= 1, got {length!r}")
    tokens = int(batch_size) * int(length)
    needed = tokens * SAMPLE_BYTES_PER_TOKEN
    available = available_memory()
    if tokens > MAX_SAMPLE_TOKENS or (available is not None and needed > available):
        limit = (
            f"more than one call may sample ({MAX_SAMPLE_TOKENS:,} tokens)"
            if tokens > MAX_SAMPLE_TOKENS
            else f"more than the {format_bytes(available)} of memory available"
        )
        raise ValueError(
            f"batch_size x length = {tokens:,} tokens would need about {format_bytes(needed)} of memory "
            f"({SAMPLE_BYTES_PER_TOKEN} bytes per token with the hidden truth), {limit}; sample in smaller batches"
        )
