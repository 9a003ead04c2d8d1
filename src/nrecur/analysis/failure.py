"""Failure modes: a model scored on data it was not trained on (by default the deterministic model on stochastic data).

We sample sequences of a *scoring task* — by default the run's own task made
stochastic (``p_noise = p_transition = 0.2/n``) when it is deterministic, else
its own task — find the same events as :mod:`nrecur.analysis.updates` (rule
transitions and noise tokens with a full window after them, see there), and
measure two failures, each against the exact observer of the scoring task:

* **perseveration** (per transition): the number of tokens after the
  transition (offset of the first position of the new rule = 0) until the
  predictor's most likely token at a target position of the new rule is the
  new target; "never" within the window is NaN, shown as a share and counted
  as longer than any window by the median;
* **over-reaction** (per noise token): the probability of the true target ``t``
  moved off it by one fake token: P(t) predicted at the noise position (before
  seeing it) minus P(t) at the next target position (offset ``n``). The
  observer's value is the normative shift; a larger one is over-reaction, a
  smaller (or negative) one under-reaction.

Headline: ``perseveration_model`` / ``perseveration_observer`` are medians over
transitions; ``overreaction_model`` / ``overreaction_observer`` are means over
noise events; ``overreaction_gap`` is the mean over noise events of
|model − observer| (a mean alone can hide a model that is usually unmoved and
sometimes thrown off entirely); plus never-shares, event counts and the mean KL(observer ‖ model)
after each kind of event. How to read it: a deterministic model that has never
seen a transition tends to keep predicting the old target (perseveration far
above the observer's, many "never"), and one noise token may throw it off more
than it should (over-reaction above the observer's), or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nrecur.analysis.base import pyplot, save_figure
from nrecur.analysis.legacy import register_analysis
from nrecur.analysis.updates import (
    EVENT_KINDS,
    MODEL_COLOUR,
    NOISE_COLOUR,
    OBSERVER_COLOUR,
    EventUpdates,
    default_settle,
    default_window,
    event_updates,
    mean_band,
    model_probs,
    never_last_median,
    sample_events,
)
from nrecur.tasks import NRecurrence
from nrecur.tasks.sampler import Batch

__all__ = ["FailureComparison", "FailureResult", "compare_failure", "failure", "failure_from_probs", "overreaction", "perseveration", "scoring_task"]

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


@dataclass(frozen=True)
class FailureResult:
    """Perseveration and over-reaction of one run's model against the observer."""

    name: str
    headline: dict[str, float]
    options: dict
    data: dict = field(repr=False)

    def to_json(self) -> dict:
        return {"options": self.options, **self.data}

    def plot(self, folder: Path) -> list[Path]:
        return plot_failure(self.data, folder, self.name)


def failure_from_probs(
    model: np.ndarray, observer: np.ndarray, batch: Batch, window: int, settle: int = 0
) -> tuple[dict[str, float], dict]:
    """``(headline, data)`` from the model's and the observer's predictive ``[batch, pos, vocab]`` on ``batch``."""
    by_kind: dict[str, EventUpdates] = event_updates(model, observer, batch, window, settle)
    transitions, noise = by_kind["transition"], by_kind["noise"]
    data: dict = {"offsets": list(range(window))}
    headline: dict[str, float] = {}
    for who in ("model", "observer"):
        values = perseveration(getattr(transitions, who).top_is_new)
        data[f"perseveration_{who}"] = values
        headline[f"perseveration_{who}"] = never_last_median(values)
        headline[f"perseveration_never_{who}"] = float(np.mean(np.isnan(values))) if len(values) else float("nan")
    for who in ("model", "observer"):
        values = overreaction(getattr(noise, who).p_new)
        data[f"overreaction_{who}"] = values
        headline[f"overreaction_{who}"] = float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")
    # A mean can hide a bimodal model (often unmoved, sometimes thrown off entirely): the per-event gap cannot.
    gap = np.abs(data["overreaction_model"] - data["overreaction_observer"])
    headline["overreaction_gap"] = float(np.nanmean(gap)) if np.any(~np.isnan(gap)) else float("nan")
    for kind in EVENT_KINDS:
        mean, half, count = mean_band(by_kind[kind].kl)
        data[f"kl/{kind}"] = {"mean": mean, "ci95": half, "count": count}
        headline[f"kl/{kind}"] = float(np.mean(by_kind[kind].kl)) if by_kind[kind].kl.size else float("nan")
        headline[f"n_events/{kind}"] = float(len(by_kind[kind].events))
    data["target_changed"] = transitions.events.target_changed
    return headline, data


def plot_failure(data: dict, folder: Path, stem: str) -> list[Path]:
    plt = pyplot()

    window = len(data["offsets"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    for who, colour in (("observer", OBSERVER_COLOUR), ("model", MODEL_COLOUR)):
        values = np.asarray(data[f"perseveration_{who}"], float)
        ax.hist(np.where(np.isnan(values), window, values), bins=np.arange(-0.5, window + 1.5), color=colour, alpha=0.5, label=who)
    ax.set_xlabel(f"perseveration (tokens after the transition; bin {window} = never)")
    ax.set_ylabel("transitions")
    ax.set_title("perseveration")
    ax.legend(fontsize=8)
    ax = axes[1]
    for who, colour in (("observer", OBSERVER_COLOUR), ("model", MODEL_COLOUR)):
        values = np.asarray(data[f"overreaction_{who}"], float)
        ax.hist(values[~np.isnan(values)], bins=np.linspace(-1, 1, 41), color=colour, alpha=0.5, label=who)
    ax.set_xlabel("over-reaction (P(t) before the noise − at the next target position)")
    ax.set_ylabel("noise events")
    ax.set_title("over-reaction to one noise token")
    ax.legend(fontsize=8)
    ax = axes[2]
    offsets = np.asarray(data["offsets"])
    for kind, colour in zip(EVENT_KINDS, (MODEL_COLOUR, NOISE_COLOUR)):
        mean, half = np.asarray(data[f"kl/{kind}"]["mean"], float), np.asarray(data[f"kl/{kind}"]["ci95"], float)
        good = ~np.isnan(mean)
        ax.plot(offsets[good], mean[good], color=colour, marker="o", markersize=3, label=f"after a {kind}")
        ax.fill_between(offsets[good], (mean - half)[good], (mean + half)[good], color=colour, alpha=0.2)
    ax.set_xlabel("offset from the event (tokens)")
    ax.set_ylabel("KL(observer ‖ model) (nats)")
    ax.set_title("KL by offset")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, folder, stem)


def _applies(run) -> str | None:
    if not isinstance(run.task, NRecurrence):
        return f"needs an n-recurrence task, not {run.task.kind}"
    return None


@register_analysis(
    "failure",
    applies=_applies,
    description="perseveration after transitions and over-reaction to noise on stochastic data, model vs observer",
)
def failure(
    run,
    task: NRecurrence | None = None,
    n_sequences: int = 2048,
    seed: int = 0,
    window: int | None = None,
    settle: int | None = None,
) -> FailureResult:
    """Score ``run.model`` on ``task`` (default :func:`scoring_task` of the run's task; same vocabulary).

    ``window`` defaults to ``min(4 × largest period, length // 2)`` and ``settle`` to twice the largest
    period, as in :func:`nrecur.analysis.updates.updates`.
    """
    reason = _applies(run)
    if reason is not None:
        raise ValueError(f"failure does not apply: {reason}")
    task = scoring_task(run.task) if task is None else task
    if task.vocab_size != run.config.model.vocab_size:
        raise ValueError(f"the scoring task has vocab_size {task.vocab_size} but the model has {run.config.model.vocab_size}")
    if task.is_deterministic:
        raise ValueError("the scoring task is deterministic: there are no transitions or noise tokens to score")
    length = run.config.length
    window = default_window(task, length) if window is None else window
    settle = default_settle(task) if settle is None else settle
    batch, post = sample_events(task, n_sequences, length, seed)
    observer = np.asarray(post.predictive, dtype=np.float64)
    headline, data = failure_from_probs(model_probs(run.model, batch.tokens), observer, batch, window, settle)
    options = {
        "task": task.model_dump(mode="json"),
        "n_sequences": n_sequences,
        "seed": seed,
        "window": window,
        "settle": settle,
        "length": length,
    }
    return FailureResult(name="failure", headline=headline, options=options, data=data)


# ---------------------------------------------------------------------------------------------------------- side by side


@dataclass(frozen=True)
class FailureComparison:
    """Several runs' models scored on the same events (e.g. deterministic, fine-tuned, from scratch)."""

    name: str
    headline: dict[str, float]
    """``<measure>/<run name>`` for every headline figure of :func:`failure`, observer once as ``<measure>/observer``."""
    options: dict
    data: dict = field(repr=False)
    """Per run name: the data of :func:`failure_from_probs`."""

    def to_json(self) -> dict:
        return {"options": self.options, "runs": self.data}

    def plot(self, folder: Path) -> list[Path]:
        plt = pyplot()

        colours = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#F0E442")
        names = list(self.data)
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for ax, kind in zip(axes[:2], EVENT_KINDS):
            for index, name in enumerate(names):
                curve = self.data[name][f"kl/{kind}"]
                mean, half = np.asarray(curve["mean"], float), np.asarray(curve["ci95"], float)
                offsets = np.asarray(self.data[name]["offsets"])
                colour = colours[index % len(colours)]
                ax.plot(offsets, mean, color=colour, marker="o", markersize=3, label=name)
                ax.fill_between(offsets, mean - half, mean + half, color=colour, alpha=0.2)
            ax.set_xlabel("offset from the event (tokens)")
            ax.set_ylabel("KL(observer ‖ model) (nats)")
            ax.set_title(f"KL after a {kind}")
            ax.legend(fontsize=8)
        ax = axes[2]
        labels = [*names, "observer"]
        persev = [self.headline[f"perseveration/{name}"] for name in labels]
        over = [self.headline[f"overreaction/{name}"] for name in labels]
        x = np.arange(len(labels))
        window = self.options["window"]
        ax.bar(x - 0.2, np.minimum(persev, window) / window, width=0.4, color="#0072B2", label="perseveration / window")
        ax.bar(x + 0.2, over, width=0.4, color="#E69F00", label="over-reaction (P moved off t)")
        ax.set_xticks(x, labels, rotation=20)
        ax.set_ylabel("share of the window / probability")
        ax.set_title("medians of perseveration, means of over-reaction")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return save_figure(fig, folder, self.name)


def compare_failure(
    runs: dict | list,
    task: NRecurrence | None = None,
    n_sequences: int = 2048,
    seed: int = 0,
    window: int | None = None,
    settle: int | None = None,
) -> FailureComparison:
    """Score every run of ``{name: Run}`` (or a list of runs, named by their folders) on the same sequences of
    ``task`` (default :func:`scoring_task` of the first run's task); the shortest context of the runs is the
    sequence length."""
    if isinstance(runs, (list, tuple)):
        runs = {run.path.name: run for run in runs}
    if not runs:
        raise ValueError("compare_failure needs at least one run")
    first = next(iter(runs.values()))
    task = scoring_task(first.task) if task is None else task
    if task.is_deterministic:
        raise ValueError("the scoring task is deterministic: there are no transitions or noise tokens to score")
    for name, run in runs.items():
        if run.config.model.vocab_size != task.vocab_size:
            raise ValueError(f"run {name!r} has vocab_size {run.config.model.vocab_size}, the task {task.vocab_size}")
    length = min(run.config.length for run in runs.values())
    window = default_window(task, length) if window is None else window
    settle = default_settle(task) if settle is None else settle
    batch, post = sample_events(task, n_sequences, length, seed)
    observer = np.asarray(post.predictive, dtype=np.float64)
    headline: dict[str, float] = {}
    data = {}
    for name, run in runs.items():
        run_headline, data[name] = failure_from_probs(model_probs(run.model, batch.tokens), observer, batch, window, settle)
        for key, value in run_headline.items():
            if key.endswith("_observer"):
                headline[f"{key.removesuffix('_observer')}/observer"] = value
            elif key.endswith("_model"):
                headline[f"{key.removesuffix('_model')}/{name}"] = value
            else:
                headline[f"{key}/{name}"] = value
    options = {"task": task.model_dump(mode="json"), "n_sequences": n_sequences, "seed": seed, "window": window,
               "settle": settle, "length": length, "runs": {name: str(run.path) for name, run in runs.items()}}  # fmt: skip
    return FailureComparison(name="failure_comparison", headline=headline, options=options, data=data)
