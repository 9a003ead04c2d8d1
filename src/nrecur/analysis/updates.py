"""Update after an event: how fast and how abruptly the model changes its mind (SPEC §5).

On stochastic n-recurrence two kinds of event disturb a rule: a *transition*
(the rule changes; the event is the first position of the new rule) and a
*noise token* (a fake token at a target position; the event is that position).
We sample sequences with their hidden truth, keep the events that have a full
``window`` of positions after them with no other transition inside it (and
whose rule before the event had held for at least ``settle`` positions), and
align them on the event. Offset ``k`` is position ``event + k``; the value
there is the *prediction* of that position's token, made having seen ``k``
tokens from the event on. At the target positions of the rule in force after
the event we read the probability of the old and of the new target, for the
model and for the exact observer, and KL(observer ‖ model) at every offset of
the window.

Per event, on the probability of the new target at target positions:

* the **in-context learning rate** is the first offset (tokens seen from the
  event on) at which it exceeds 0.5, searched over every target position of
  the rule after the event — up to the next transition or the end of the
  sequence, never only the window; "never" (NaN) means not while that rule
  held, is counted in the ``never`` share, and is taken as longer than any
  number of tokens by the medians;
* the **discreteness index** is the largest step between consecutive target
  positions in the direction of the total change, divided by the size of that
  total change (first to last target position of the window): 1 is a single
  jump, ``1/m`` an even ramp over ``m`` steps, above 1 an overshoot. It is NaN
  when the total change is smaller than ``min_change`` (nothing to measure).

For transitions the series starts at the first target position of the new rule
(offset 0 when the event itself is one). For a noise event, old and new target
are both the rule's true target ``t``, and we measure its *recovery*: the
series starts at the first target position *after* the noise token (offset
``n``), so the learning rate is the number of tokens from the noise token
(itself included) until P(t) at a target position exceeds 0.5 again (``n``
when the belief never dropped below 0.5), and the discreteness is that of the
rise from the first target position after the noise to the end of the window.

The model's own belief over the rule is read from its activations too
(:mod:`nrecur.analysis.decoded`): the best probe for the period and the target
marginals, fitted on separate sequences and decoded around the same events,
beside the observer's marginals.

Every figure stands beside its controls: the exact observer (``…_ceiling``: the
normative learning rate and discreteness) and the run's own initialization
(``…_random_init``: what a model that learned nothing gives, the same probes
fitted on it included). How to read it: the model matches the normative
learner when its curves lie on the observer's and its learning rates and
discreteness indices have the same distribution; a model that learns too
slowly has larger learning rates (perseverates), a model that jumps where the
observer shifts gradually has a larger discreteness index. Passing the
observer itself as the model reproduces the observer's values exactly
(:func:`event_updates`), which the tests check.

The events are found by :mod:`nrecur.analysis.events` and the curves and
per-event measures computed by :mod:`nrecur.analysis.event_curves`; this module
gathers them into the analysis and its result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydantic

from nrecur.analysis.contract import Analysis, Options, Result, initial_model, register
from nrecur.analysis.decoded import Decoded, Decoder, beliefs_around, decode_rule_beliefs
from nrecur.analysis.event_curves import (
    Curves, EventUpdates, aligned_curves, discreteness, event_updates, kl_by_offset, learning_rate, model_probs, never_last_median,
)  # fmt: skip
from nrecur.analysis.events import (
    EVENT_KINDS, Band, EventKind, Events, default_settle, default_window, find_events, sample_events, shortest_context,
)  # fmt: skip
from nrecur.analysis.probes import MLP_ROWS
from nrecur.tasks import NRecurrence

__all__ = [  # the events and their curves are re-exported from nrecur.analysis.events and .event_curves
    "Around", "Curves", "EventTable", "EventUpdates", "KindUpdates", "UpdatesOptions", "UpdatesResult", "aligned_curves", "compute",
    "default_settle", "default_window", "discreteness", "event_updates", "find_events", "kl_by_offset", "learning_rate", "model_probs",
    "never_last_median", "sample_events", "shortest_context",
]  # fmt: skip

# ---------------------------------------------------------------------------------------------------------- the result


class UpdatesOptions(Options):
    n_sequences: int = pydantic.Field(2048, ge=8)
    """Fresh sequences of the run's task whose events are measured."""
    window: int | None = pydantic.Field(None, ge=1)
    """Offsets drawn after each event: the curves, the KL by offset and the discreteness index (default
    min(4 × largest period, length // 2)); only events with a full window of one rule after them are kept. It
    never caps the learning rate, which is read up to the end of the rule."""
    settle: int | None = pydantic.Field(None, ge=0)
    """Positions the rule before an event must have held for the event to be kept (default: twice the largest
    period)."""
    min_change: float = pydantic.Field(0.1, ge=0, le=1)
    """Smallest total change of P(new target) over the window for which a discreteness index is given."""
    decode: bool = True
    """Also read the model's beliefs over period and target around the events by probes (and the
    initialization's, as their control)."""
    decode_sequences: int = pydantic.Field(1024, ge=8)
    """Other sequences the decoding probes are chosen and fitted on."""
    mlp_rows: int = pydantic.Field(MLP_ROWS, ge=1)
    """The most positions a decoding MLP probe is fitted on."""


@dataclass(frozen=True)
class Around:
    """One predictor around the events of one kind: curves by offset over the window, per event its
    learning rate and discreteness index."""

    p_old: Band
    """P(old target) at target positions of the new rule (noise: P(true target))."""
    p_new: Band
    """P(new target) there."""
    kl: Band
    """KL(observer ‖ this predictor) at every offset (nats; 0 for the observer)."""
    learning_rate: tuple[float, ...]
    """Per event: tokens from the event until P(new target) at a target position first exceeds 0.5, while the
    rule after the event held (NaN: never)."""
    discreteness: tuple[float, ...]
    """Per event: the discreteness index over the window (NaN: too little change to measure)."""


@dataclass(frozen=True)
class EventTable:
    """The events of one kind, one entry per event."""

    sequence: tuple[int, ...]
    position: tuple[int, ...]
    old_target: tuple[int, ...]
    new_target: tuple[int, ...]
    period: tuple[int, ...]
    horizon: tuple[int, ...]
    """Offsets the rule after the event held (to the next transition or the sequence's end)."""
    cut_by_transition: tuple[bool, ...]
    """A later transition, not the sequence's end, ended the rule."""

    @classmethod
    def of(cls, events: Events) -> "EventTable":
        ints = lambda values: tuple(int(v) for v in values)  # noqa: E731
        return cls(
            sequence=ints(events.sequence), position=ints(events.position), old_target=ints(events.old_target),
            new_target=ints(events.new_target), period=ints(events.period), horizon=ints(events.horizon),
            cut_by_transition=tuple(bool(v) for v in events.cut_by_transition),
        )  # fmt: skip


@dataclass(frozen=True)
class KindUpdates:
    """The model, the observer (the ceiling) and the run's initialization (the control) around the events of
    one kind, and the beliefs decoded around them."""

    kind: str
    offsets: tuple[int, ...]
    """The window's offsets, ``0 .. window - 1``."""
    first_offset: int
    """The first offset of each event's series (transition 0; noise 1: the noise token's own prediction is not
    part of it)."""
    events: EventTable
    model: Around
    observer: Around
    random_init: Around
    decoded: Decoded | None = None

    @property
    def n_events(self) -> int:
        return len(self.events.position)


@dataclass(frozen=True)
class UpdatesResult(Result):
    """Event-aligned updates of one run's model, beside the observer's and its initialization's."""

    headline: dict[str, float]
    options: UpdatesOptions
    step: int
    length: int
    window: int
    """The window used (``options.window`` or its default)."""
    settle: int
    transition: KindUpdates
    noise: KindUpdates
    decoders: dict[str, Decoder]
    """quantity (``period``, ``target``) → the probe that reads it from the trained model (empty without
    ``decode``)."""
    decoders_random_init: dict[str, Decoder]
    """The same from the run's initialization."""

    def kind(self, kind: EventKind) -> KindUpdates:
        """The updates around events of ``kind``."""
        return {"transition": self.transition, "noise": self.noise}[kind]


PREDICTORS = (("", "model"), ("_ceiling", "observer"), ("_random_init", "random_init"))
"""(headline suffix, :class:`KindUpdates` field) of each predictor: the model, its ceiling, its control."""


def headline_of(kinds: dict[str, KindUpdates], decoders: dict[str, Decoder], decoders_random_init: dict[str, Decoder]) -> dict[str, float]:
    """The headline: per event kind the median learning rate (``never`` as longer than any), the share of
    "never", the median discreteness and the mean KL, each for the model, the observer (``_ceiling``) and the
    initialization (``_random_init``); the events counted; the decoded beliefs' error and R² beside the
    initialization's."""
    headline: dict[str, float] = {}
    for kind, updates in kinds.items():
        for measure in ("learning_rate", "never", "discreteness"):
            for suffix, who in PREDICTORS:
                around: Around = getattr(updates, who)
                rates = np.asarray(around.learning_rate, dtype=np.float64)
                if measure == "learning_rate":
                    value = never_last_median(rates)
                elif measure == "never":
                    value = float(np.mean(np.isnan(rates))) if len(rates) else float("nan")
                else:
                    values = np.asarray(around.discreteness, dtype=np.float64)
                    value = float(np.nanmedian(values)) if np.any(~np.isnan(values)) else float("nan")
                headline[f"{measure}{suffix}/{kind}"] = value
        for suffix, who in PREDICTORS[::2]:
            counts = np.asarray(getattr(updates, who).kl.count, dtype=np.float64)
            means = np.nan_to_num(np.asarray(getattr(updates, who).kl.mean, dtype=np.float64))
            headline[f"kl{suffix}/{kind}"] = float((means * counts).sum() / counts.sum()) if counts.sum() else float("nan")
        headline[f"n_events/{kind}"] = float(updates.n_events)
    for kind, updates in kinds.items():
        if updates.decoded is not None:
            headline[f"decoded_error/{kind}"] = updates.decoded.model.error_target_new
            headline[f"decoded_error_random_init/{kind}"] = updates.decoded.random_init.error_target_new
    for quantity, decoder in decoders.items():
        headline[f"decoded_r2/{quantity}"] = decoder.r2
        headline[f"decoded_r2_random_init/{quantity}"] = decoders_random_init[quantity].r2
    return headline


def _around(curves: Curves, kl: np.ndarray) -> Around:
    return Around(
        p_old=Band.of(curves.p_old),
        p_new=Band.of(curves.p_new),
        kl=Band.of(kl),
        learning_rate=tuple(float(v) for v in curves.learning_rate),
        discreteness=tuple(float(v) for v in curves.discreteness),
    )


# ---------------------------------------------------------------------------------------------------------- the analysis


def _stochastic_reason(run) -> str | None:
    task = run.task
    if not isinstance(task, NRecurrence):
        return f"needs an n-recurrence task, not {task.kind}"
    if task.is_deterministic:
        return "the run's task is deterministic (p_noise = p_transition = 0): there are no events to align on"
    return None


def compute(run, options: UpdatesOptions) -> UpdatesResult:
    """Event-aligned updates of ``run.model`` beside the exact observer's and the run's initialization's, on
    fresh sequences of its task; see the module docstring."""
    reason = _stochastic_reason(run)
    if reason is not None:
        raise ValueError(f"updates does not apply: {reason}")
    task: NRecurrence = run.task
    length = run.config.length
    window = default_window(task, length) if options.window is None else options.window
    settle = default_settle(task) if options.settle is None else options.settle
    batch, post = sample_events(task, options.n_sequences, length, options.seed)
    init = initial_model(run)
    trained = event_updates(model_probs(run.model, batch.tokens), post.predictive, batch, window, settle, options.min_change)
    control = event_updates(model_probs(init, batch.tokens), post.predictive, batch, window, settle, options.min_change)
    decoded: dict[str, Decoded | None] = dict.fromkeys(EVENT_KINDS)
    decoders: dict[str, Decoder] = {}
    decoders_random_init: dict[str, Decoder] = {}
    if options.decode:
        common = (task, length, batch.tokens, options.decode_sequences, options.seed)
        beliefs, decoders = decode_rule_beliefs(run.model, *common, mlp_rows=options.mlp_rows)
        beliefs_init, decoders_random_init = decode_rule_beliefs(init, *common, mlp_rows=options.mlp_rows)
        observer = {"period": np.asarray(post.period, dtype=np.float64), "target": np.asarray(post.target, dtype=np.float64)}
        for kind in EVENT_KINDS:
            events = trained[kind].events
            decoded[kind] = Decoded(
                model=beliefs_around(task, beliefs, observer, events),
                random_init=beliefs_around(task, beliefs_init, observer, events),
                observer=beliefs_around(task, observer, observer, events),
            )
    kinds = {
        kind: KindUpdates(
            kind=kind,
            offsets=tuple(range(window)),
            first_offset=trained[kind].events.first_offset,
            events=EventTable.of(trained[kind].events),
            model=_around(trained[kind].model, trained[kind].kl),
            observer=_around(trained[kind].observer, np.zeros_like(trained[kind].kl)),
            random_init=_around(control[kind].model, control[kind].kl),
            decoded=decoded[kind],
        )
        for kind in EVENT_KINDS
    }
    return UpdatesResult(
        headline=headline_of(kinds, decoders, decoders_random_init),
        options=options,
        step=run.step,
        length=length,
        window=window,
        settle=settle,
        transition=kinds["transition"],
        noise=kinds["noise"],
        decoders=decoders,
        decoders_random_init=decoders_random_init,
    )


UPDATES = register(
    Analysis(
        name="updates",
        description="event-aligned updates after transitions and noise: in-context learning rate and discreteness, "
        "beside the observer's (ceiling) and the run's initialization's (control)",
        options=UpdatesOptions,
        result=UpdatesResult,
        compute=compute,
        applies=_stochastic_reason,
        figures="nrecur.analysis.figures.updates:draw",
    )
)
