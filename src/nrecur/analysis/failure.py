"""Failure modes: a model scored on data it was not trained on (by default the deterministic model on stochastic data).

We sample sequences of a *scoring task* — by default the run's own task made
stochastic (``p_noise = p_transition = 0.2/n``) when it is deterministic, else
its own task — find the same events as :mod:`nrecur.analysis.updates` (rule
transitions and noise tokens with a full window after them, see there), and
measure two failures, each against the exact observer of the scoring task:

* **perseveration** (per transition): the number of tokens after the
  transition (offset of the first position of the new rule = 0) until the
  predictor's most likely token at a target position of the new rule is the
  new target, searched while the new rule holds — up to the next transition or
  the end of the sequence, never only the window; "never" (NaN) is shown as a
  share and counted as longer than any number of tokens by the median;
* **over-reaction** (per noise token): the probability of the true target ``t``
  moved off it by one fake token: P(t) predicted at the noise position (before
  seeing it) minus P(t) at the next target position (offset ``n``). The
  observer's value is the normative shift; a larger one is over-reaction, a
  smaller (or negative) one under-reaction.

Headline: ``perseveration`` is the median over transitions, ``perseveration_never``
the share of "never"; ``overreaction`` the mean over noise events and
``overreaction_gap`` the mean over noise events of |model − observer| (a mean
alone can hide a model that is usually unmoved and sometimes thrown off
entirely); ``kl/<kind>`` the mean KL(observer ‖ model) over the window after
each kind of event. Each beside the observer's (``…_ceiling``) and the run's
initialization's (``…_random_init``: a model that learned nothing). How to read
it: a deterministic model that has never seen a transition tends to keep
predicting the old target (perseveration far above the observer's, many
"never"), and one noise token may throw it off more than it should
(over-reaction above the observer's), or not at all — as the initialization,
which follows nothing, is not moved either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pydantic

from nrecur.analysis.contract import Analysis, Options, Result, initial_model, register
from nrecur.analysis.event_curves import EventUpdates, event_updates, model_probs, never_last_median
from nrecur.analysis.events import EVENT_KINDS, Band, default_settle, default_window, sample_events
from nrecur.tasks import NRecurrence
from nrecur.tasks.sampler import Batch

__all__ = [
    "FailureComparison",
    "FailureOptions",
    "FailureResult",
    "Scores",
    "Summary",
    "compare_failure",
    "compute",
    "overreaction",
    "perseveration",
    "scores_of",
    "scoring_task",
    "summary",
]

STOCHASTIC = "0.2/n"


def scoring_task(task: NRecurrence) -> NRecurrence:
    """The default task to score on: ``task`` itself when stochastic, else it with ``p_noise = p_transition = 0.2/n``."""
    if task.is_deterministic:
        return task.model_copy(update={"p_noise": STOCHASTIC, "p_transition": STOCHASTIC})
    return task


def perseveration(top_is_new: np.ndarray) -> np.ndarray:
    """``top_is_new [event, offset]`` → ``[event]``: first offset where the most likely token at a target
    position is the new target; NaN when never."""
    found = top_is_new.any(1)
    return np.where(found, top_is_new.argmax(1), np.nan).astype(np.float64)


def overreaction(p_true: np.ndarray) -> np.ndarray:
    """``p_true [event, offset]`` of noise events (NaN off target positions; offset 0 is the noise token, a
    target position) → ``[event]``: P(t) at offset 0 minus P(t) at the next target position (NaN if none)."""
    out = np.full(len(p_true), np.nan)
    for index, row in enumerate(p_true):
        later = np.nonzero(~np.isnan(row[1:]))[0]
        if len(later):
            out[index] = row[0] - row[1 + later[0]]
    return out


class FailureOptions(Options):
    n_sequences: int = pydantic.Field(2048, ge=8)
    """Fresh sequences of the scoring task whose events are scored."""
    task: NRecurrence | None = None
    """The task to score on (same vocabulary as the model; default: the run's task, made stochastic with
    p_noise = p_transition = 0.2/n when it is deterministic)."""
    window: int | None = pydantic.Field(None, ge=1)
    """Offsets after each event of the KL curves (default min(4 × largest period, length // 2)); only events
    with a full window of one rule after them are kept. It never caps perseveration."""
    settle: int | None = pydantic.Field(None, ge=0)
    """Positions the rule before an event must have held (default: twice the largest period)."""


@dataclass(frozen=True)
class Scores:
    """One predictor's failures on the events: per event, and KL by offset."""

    perseveration: tuple[float, ...]
    """Per transition: tokens until the most likely token at a target position is the new target (NaN: never
    while the new rule held)."""
    overreaction: tuple[float, ...]
    """Per noise token: P(t) before it minus P(t) at the next target position (NaN: no later target position)."""
    kl_transition: Band
    """KL(observer ‖ this predictor) by offset after a transition (0 for the observer)."""
    kl_noise: Band
    """The same after a noise token."""


def scores_of(by_kind: dict[str, EventUpdates], who: str) -> Scores:
    """``who``'s (``model`` or ``observer``) scores from :func:`nrecur.analysis.event_curves.event_updates`."""
    curves = {kind: getattr(by_kind[kind], who) for kind in EVENT_KINDS}
    kl = {kind: by_kind[kind].kl if who == "model" else np.zeros_like(by_kind[kind].kl) for kind in EVENT_KINDS}
    return Scores(
        perseveration=tuple(float(v) for v in perseveration(curves["transition"].top_is_new_to_end)),
        overreaction=tuple(float(v) for v in overreaction(curves["noise"].p_new)),
        kl_transition=Band.of(kl["transition"]),
        kl_noise=Band.of(kl["noise"]),
    )


def _mean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")


def _weighted(band: Band) -> float:
    counts = np.asarray(band.count, dtype=np.float64)
    return float((np.nan_to_num(np.asarray(band.mean, dtype=np.float64)) * counts).sum() / counts.sum()) if counts.sum() else float("nan")


@dataclass(frozen=True)
class Summary:
    """One predictor's failure figures on the events (:func:`summary`)."""

    perseveration: float
    """Median perseveration (tokens; never counted as longer than any)."""
    perseveration_never: float
    """Share of transitions whose new target never became the top token while the new rule held."""
    overreaction: float
    """Mean over-reaction to one noise token."""
    overreaction_gap: float
    """Mean |over-reaction − the observer's| (0 for the observer)."""
    kl_transition: float
    """Mean KL(observer ‖ predictor) after a transition, over the window (0 for the observer)."""
    kl_noise: float
    """The same after a noise token."""

    def named(self, suffix: str = "", run: str | None = None, ceiling: bool = False) -> dict[str, float]:
        """The headline's names of these figures: ``perseveration<suffix>``, ``kl<suffix>/noise``, each with
        ``/<run>`` after it when ``run`` is given; ``ceiling``: without the gap and KL (the observer's are 0)."""
        figures = {
            "perseveration": self.perseveration,
            "perseveration_never": self.perseveration_never,
            "overreaction": self.overreaction,
            "overreaction_gap": self.overreaction_gap,
            "kl/transition": self.kl_transition,
            "kl/noise": self.kl_noise,
        }
        if ceiling:
            figures = {k: v for k, v in figures.items() if not k.startswith(("overreaction_gap", "kl"))}
        out = {}
        for key, value in figures.items():
            stem, slash, tail = key.partition("/")
            out[f"{stem}{suffix}{slash}{tail}" + (f"/{run}" if run is not None else "")] = value
        return out


def summary(scores: Scores, observer: Scores) -> Summary:
    """``scores``' figures: median perseveration (never as longer than any), its share of never, mean
    over-reaction, mean |over-reaction − the observer's|, mean KL after each kind of event."""
    rates = np.asarray(scores.perseveration, dtype=np.float64)
    gap = np.abs(np.asarray(scores.overreaction, dtype=np.float64) - np.asarray(observer.overreaction, dtype=np.float64))
    return Summary(
        perseveration=never_last_median(rates),
        perseveration_never=float(np.mean(np.isnan(rates))) if len(rates) else float("nan"),
        overreaction=_mean(scores.overreaction),
        overreaction_gap=_mean(gap),
        kl_transition=_weighted(scores.kl_transition),
        kl_noise=_weighted(scores.kl_noise),
    )


@dataclass(frozen=True)
class FailureResult(Result):
    """Perseveration and over-reaction of one run's model, beside the observer's and its initialization's."""

    headline: dict[str, float]
    options: FailureOptions
    step: int
    scoring_task: NRecurrence
    """The task scored on."""
    length: int
    window: int
    settle: int
    offsets: tuple[int, ...]
    n_events: dict[str, int]
    """Event kind → events scored."""
    target_changed: tuple[bool, ...]
    """Per transition: the new rule's target differs from the old one's."""
    model: Scores
    observer: Scores
    random_init: Scores


def _applies(run) -> str | None:
    if not isinstance(run.task, NRecurrence):
        return f"needs an n-recurrence task, not {run.task.kind}"
    return None


def _scored_task(task: NRecurrence, vocab_sizes: dict[str, int]) -> NRecurrence:
    if task.is_deterministic:
        raise ValueError("the scoring task is deterministic: there are no transitions or noise tokens to score")
    for name, vocab in vocab_sizes.items():
        if vocab != task.vocab_size:
            raise ValueError(f"the scoring task has vocab_size {task.vocab_size} but {name} has {vocab}")
    return task


def _events(task: NRecurrence, options: FailureOptions, length: int) -> tuple[Batch, np.ndarray, int, int]:
    window = default_window(task, length) if options.window is None else options.window
    settle = default_settle(task) if options.settle is None else options.settle
    batch, post = sample_events(task, options.n_sequences, length, options.seed)
    return batch, np.asarray(post.predictive, dtype=np.float64), window, settle


def compute(run, options: FailureOptions) -> FailureResult:
    """Score ``run.model`` and the run's initialization on ``options.task`` (default :func:`scoring_task` of the
    run's task); see the module docstring."""
    reason = _applies(run)
    if reason is not None:
        raise ValueError(f"failure does not apply: {reason}")
    task = _scored_task(scoring_task(run.task) if options.task is None else options.task, {"the model": run.config.model.vocab_size})
    length = run.config.length
    batch, observer, window, settle = _events(task, options, length)
    trained = event_updates(model_probs(run.model, batch.tokens), observer, batch, window, settle)
    control = event_updates(model_probs(initial_model(run), batch.tokens), observer, batch, window, settle)
    model, ceiling, init = scores_of(trained, "model"), scores_of(trained, "observer"), scores_of(control, "model")
    named = {
        "": summary(model, ceiling).named(),
        "_ceiling": summary(ceiling, ceiling).named("_ceiling", ceiling=True),
        "_random_init": summary(init, ceiling).named("_random_init"),
    }
    headline = {}
    for name in named[""]:  # each figure, then its controls
        stem, slash, tail = name.partition("/")
        for suffix, figures in named.items():
            key = f"{stem}{suffix}{slash}{tail}"
            if key in figures:
                headline[key] = figures[key]
    headline.update({f"n_events/{kind}": float(len(trained[kind].events)) for kind in EVENT_KINDS})
    return FailureResult(
        headline=headline,
        options=options,
        step=run.step,
        scoring_task=task,
        length=length,
        window=window,
        settle=settle,
        offsets=tuple(range(window)),
        n_events={kind: len(trained[kind].events) for kind in EVENT_KINDS},
        target_changed=tuple(bool(v) for v in trained["transition"].events.target_changed),
        model=model,
        observer=ceiling,
        random_init=init,
    )


FAILURE = register(
    Analysis(
        name="failure",
        description="perseveration after transitions and over-reaction to noise on stochastic data, beside the "
        "observer's (ceiling) and the run's initialization's (control)",
        options=FailureOptions,
        result=FailureResult,
        compute=compute,
        applies=_applies,
        figures="nrecur.analysis.figures.failure:draw",
    )
)


# ---------------------------------------------------------------------------------------------------------- side by side


@dataclass(frozen=True)
class FailureComparison(Result):
    """Several runs' models scored on the same events (e.g. deterministic, fine-tuned, from scratch), each beside
    its own initialization, and the observer once. Drawn by :func:`nrecur.analysis.figures.failure.draw_comparison`."""

    name: ClassVar[str] = "failure_comparison"

    headline: dict[str, float]
    """``<figure>/<run name>`` and ``<figure>_random_init/<run name>`` for every figure of :func:`summary`
    (``kl/noise`` as ``kl/noise/<run name>``), the observer once as ``<figure>_ceiling``."""
    options: FailureOptions
    scoring_task: NRecurrence
    length: int
    """The shortest context of the runs: the sequences' length."""
    window: int
    settle: int
    offsets: tuple[int, ...]
    runs: dict[str, str]
    """Run name → its folder."""
    observer: Scores
    models: dict[str, Scores]
    random_inits: dict[str, Scores]
    """Run name → the scores of its initialization."""
    summaries: dict[str, Summary]
    """Run name → its model's figures (the headline's ``<figure>/<run name>``)."""
    summaries_random_init: dict[str, Summary]
    """Run name → its initialization's figures."""
    summary_ceiling: Summary
    """The observer's figures."""


def compare_failure(runs: dict | list, **options) -> FailureComparison:
    """Score every run of ``{name: Run}`` (or a list of runs, named by their folders) and its initialization on
    the same sequences of ``task`` (an option; default :func:`scoring_task` of the first run's task); the
    shortest context of the runs is the sequence length. ``options`` are :class:`FailureOptions`'."""
    if isinstance(runs, (list, tuple)):
        runs = {run.path.name: run for run in runs}
    if not runs:
        raise ValueError("compare_failure needs at least one run")
    opts: FailureOptions = FAILURE.make_options(options)
    first = next(iter(runs.values()))
    task = scoring_task(first.task) if opts.task is None else opts.task
    task = _scored_task(task, {f"run {name!r}": run.config.model.vocab_size for name, run in runs.items()})
    length = min(run.config.length for run in runs.values())
    batch, observer, window, settle = _events(task, opts, length)
    models, inits = {}, {}
    ceiling = None
    for name, run in runs.items():
        trained = event_updates(model_probs(run.model, batch.tokens), observer, batch, window, settle)
        control = event_updates(model_probs(initial_model(run), batch.tokens), observer, batch, window, settle)
        ceiling = scores_of(trained, "observer")
        models[name], inits[name] = scores_of(trained, "model"), scores_of(control, "model")
    summaries = {name: summary(models[name], ceiling) for name in runs}
    summaries_init = {name: summary(inits[name], ceiling) for name in runs}
    summary_ceiling = summary(ceiling, ceiling)
    headline = summary_ceiling.named("_ceiling")
    for name in runs:
        headline.update(summaries[name].named(run=name) | summaries_init[name].named("_random_init", run=name))
    return FailureComparison(
        headline=headline,
        options=opts,
        scoring_task=task,
        length=length,
        window=window,
        settle=settle,
        offsets=tuple(range(window)),
        runs={name: str(run.path) for name, run in runs.items()},
        observer=ceiling,
        models=models,
        random_inits=inits,
        summaries=summaries,
        summaries_random_init=summaries_init,
        summary_ceiling=summary_ceiling,
    )
