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
model and for the exact observer, and KL(observer ‖ model) at every offset.

Per event, on the probability of the new target at target positions:

* the **in-context learning rate** is the first offset (tokens seen from the
  event on) at which it exceeds 0.5; "never" within the window is NaN, counted
  in the ``never_*`` share, and taken as longer than any window by the medians;
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

The model's own belief over the rule is read from its activations too (:mod:`nrecur.analysis.decoded`): the
best probe of the probes analysis (ridge at every hook, concatenated included,
or the MLP at the best hook; chosen by held-out R²) for the period and the
target marginals is fitted on separate sequences and decoded around the same
events, beside the observer's marginals: P(new target), P(old target) and
P(new period) having seen ``k`` tokens from the event on.

How to read it: the model matches the normative learner when its curves lie on
the observer's and its learning rates and discreteness indices have the same
distribution; a model that learns too slowly has larger learning rates
(perseverates), a model that jumps where the observer shifts gradually has a
larger discreteness index. Passing the observer itself as the model reproduces
the observer's values exactly (``event_updates``), which the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nrecur.analysis.base import pyplot, save_figure
from nrecur.analysis.events import EVENT_KINDS, MODEL_COLOUR, NOISE_COLOUR, OBSERVER_COLOUR, EventKind, Events, mean_band, window_index
from nrecur.analysis.legacy import register_analysis
from nrecur.analysis.probes import MLP_ROWS
from nrecur.tasks import NRecurrence
from nrecur.tasks.sampler import Batch
from nrecur.train.evaluate import model_log_probs

__all__ = [
    "EVENT_KINDS",
    "RUN_DESCRIPTORS",
    "UpdatesAcross",
    "Curves",
    "EventUpdates",
    "Events",
    "UpdatesResult",
    "aligned_curves",
    "discreteness",
    "event_updates",
    "find_events",
    "kl_by_offset",
    "mean_band",
    "learning_rate",
    "never_last_median",
    "updates",
    "updates_across_runs",
    "window_index",
]

# ---------------------------------------------------------------------------------------------------------- events


def _rule_start(transition_after: np.ndarray) -> np.ndarray:
    """``[batch, pos]``: first position of the rule in force at each position."""
    batch, length = transition_after.shape
    starts = np.zeros((batch, length), dtype=np.int64)
    starts[:, 1:] = np.where(transition_after[:, :-1], np.arange(1, length), 0)
    return np.maximum.accumulate(starts, axis=1)


def find_events(batch: Batch, kind: EventKind, window: int, settle: int = 0) -> Events:
    """The events of ``kind`` in ``batch`` with a full window after them.

    Kept: ``1 <= position`` and ``position + window <= length``; no transition after any of the
    positions ``position .. position + window - 2`` (so the whole window follows one rule); the rule in
    force before the event (for noise: at it) began at least ``settle`` positions before the event.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    transition_after = np.asarray(batch.transition_after, dtype=bool)
    length = transition_after.shape[1]
    if kind == "transition":
        candidate = np.zeros_like(transition_after)
        candidate[:, 1:] = transition_after[:, :-1]
    elif kind == "noise":
        candidate = np.asarray(batch.is_fake, dtype=bool).copy()
        candidate[:, 0] = False
    else:
        raise ValueError(f"unknown event kind {kind!r}; expected one of {EVENT_KINDS}")
    sequence, position = np.nonzero(candidate)
    keep = position + window <= length
    sequence, position = sequence[keep], position[keep]
    # No transition inside the window: transition_after[e .. e + window - 2] all False.
    cumulative = np.concatenate([np.zeros((len(transition_after), 1), np.int64), np.cumsum(transition_after, 1)], 1)
    inside = cumulative[sequence, position + window - 1] - cumulative[sequence, position]
    keep = inside == 0
    before = position - 1 if kind == "transition" else position
    keep &= position - _rule_start(transition_after)[sequence, before] >= settle
    sequence, position = sequence[keep], position[keep]
    target = np.asarray(batch.target)
    old = target[sequence, position - 1] if kind == "transition" else target[sequence, position]
    return Events(
        kind=kind,
        sequence=sequence,
        position=position,
        old_target=old,
        new_target=target[sequence, position],
        period=np.asarray(batch.period)[sequence, position],
        window=window,
    )


# ---------------------------------------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class Curves:
    """One predictor (model or observer) around events: arrays ``[event, offset]`` and ``[event]``."""

    p_old: np.ndarray
    """``[event, offset]``: probability of the old target at target positions of the new rule, NaN elsewhere."""
    p_new: np.ndarray
    """``[event, offset]``: probability of the new target there, NaN elsewhere."""
    top_is_new: np.ndarray
    """``[event, offset]``: the most likely token is the new target (False off target positions)."""
    learning_rate: np.ndarray
    """``[event]``: first offset (>= the kind's first offset) where ``p_new > 0.5``; NaN when never."""
    discreteness: np.ndarray
    """``[event]``: the discreteness index of ``p_new`` (NaN when its total change is below ``min_change``)."""


def aligned_curves(probs: np.ndarray, events: Events, is_target_position: np.ndarray, min_change: float) -> Curves:
    """``probs [batch, pos, vocab]`` (index i predicts token i+1) aligned on ``events``."""
    rows, columns = window_index(events)
    predicted = probs[rows, columns - 1]  # [event, offset, vocab]: the prediction of position e + k
    at_target = np.asarray(is_target_position, dtype=bool)[rows, columns]  # [event, offset]
    events_index = np.arange(len(events))[:, None]
    p_old = np.where(at_target, predicted[events_index, np.arange(events.window), events.old_target[:, None]], np.nan)
    p_new = np.where(at_target, predicted[events_index, np.arange(events.window), events.new_target[:, None]], np.nan)
    top_is_new = at_target & (predicted.argmax(-1) == events.new_target[:, None])
    return Curves(
        p_old=p_old,
        p_new=p_new,
        top_is_new=top_is_new,
        learning_rate=learning_rate(p_new, events.first_offset),
        discreteness=discreteness(p_new, events.first_offset, min_change),
    )


def learning_rate(p: np.ndarray, first_offset: int = 0, threshold: float = 0.5) -> np.ndarray:
    """``p [event, offset]`` (NaN off target positions) → ``[event]``: first offset >= ``first_offset`` with
    ``p > threshold``, NaN when there is none."""
    above = np.nan_to_num(p, nan=-np.inf) > threshold
    above[:, :first_offset] = False
    found = above.any(1)
    return np.where(found, above.argmax(1), np.nan).astype(np.float64)


def discreteness(p: np.ndarray, first_offset: int = 0, min_change: float = 0.1) -> np.ndarray:
    """``p [event, offset]`` (NaN off target positions) → ``[event]``: largest step between consecutive
    values (from ``first_offset`` on), in the direction of the total change, over ``|total change|``;
    NaN when fewer than two values or ``|total change| < min_change``."""
    out = np.full(len(p), np.nan)
    for index, row in enumerate(p[:, first_offset:]):
        values = row[~np.isnan(row)]
        if len(values) < 2:
            continue
        total = values[-1] - values[0]
        if abs(total) < min_change:
            continue
        out[index] = (np.diff(values) * np.sign(total)).max() / abs(total)
    return out


def kl_by_offset(observer: np.ndarray, model: np.ndarray, events: Events) -> np.ndarray:
    """``[event, offset]``: KL(observer ‖ model) of the predictions of positions ``event + offset`` (nats)."""
    rows, columns = window_index(events)
    p = observer[rows, columns - 1]  # [event, offset, vocab]
    q = model[rows, columns - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return terms.sum(-1)


def never_last_median(values: np.ndarray) -> float:
    """Median with NaN ("never") counted as longer than any value (inf when more than half are never)."""
    if len(values) == 0:
        return float("nan")
    return float(np.median(np.where(np.isnan(values), np.inf, values)))


@dataclass(frozen=True)
class EventUpdates:
    """Model and observer around the events of one kind."""

    events: Events
    model: Curves
    observer: Curves
    kl: np.ndarray
    """``[event, offset]``: KL(observer ‖ model) in nats."""


def event_updates(
    model_probs: np.ndarray,
    observer_predictive: np.ndarray,
    batch: Batch,
    window: int,
    settle: int = 0,
    min_change: float = 0.1,
) -> dict[EventKind, EventUpdates]:
    """The core computation, one entry per event kind.

    ``model_probs [batch, pos, vocab]`` and ``observer_predictive [batch, pos, vocab]`` are predictive
    distributions (index i is P(x[i+1] | x[0..i])) on ``batch.tokens``; any predictor may stand in
    for the model, the observer itself included (then every curve and index equals the observer's).
    """
    model_probs = np.asarray(model_probs, dtype=np.float64)
    observer_predictive = np.asarray(observer_predictive, dtype=np.float64)
    out = {}
    for kind in EVENT_KINDS:
        events = find_events(batch, kind, window, settle)
        out[kind] = EventUpdates(
            events=events,
            model=aligned_curves(model_probs, events, batch.is_target_position, min_change),
            observer=aligned_curves(observer_predictive, events, batch.is_target_position, min_change),
            kl=kl_by_offset(observer_predictive, model_probs, events),
        )
    return out


# ---------------------------------------------------------------------------------------------------------- the analysis


def _stochastic_reason(run) -> str | None:
    task = run.task
    if not isinstance(task, NRecurrence):
        return f"needs an n-recurrence task, not {task.kind}"
    if task.is_deterministic:
        return "the run's task is deterministic (p_noise = p_transition = 0): there are no events to align on"
    return None


def default_window(task: NRecurrence, length: int) -> int:
    """``min(4 × largest period, length // 2)``: several target positions, and room for events in the context."""
    return max(1, min(4 * task.max_period, length // 2))


def default_settle(task: NRecurrence) -> int:
    """Twice the largest period: the positions the rule before an event must have held."""
    return 2 * task.max_period


def shortest_context(task: NRecurrence) -> int:
    """The shortest context with room for an event under the default window and settle: an event is kept
    only at positions ``settle ≤ p ≤ length − window``, so ``n`` needs ``2M + min(4M, n // 2) ≤ n`` (``M``
    the largest period). For ``n < 8M`` that is ``2M ≤ ⌈n / 2⌉``, first true at ``n = 4M − 1``."""
    return 4 * task.max_period - 1


def model_probs(model, tokens: np.ndarray) -> np.ndarray:
    """``tokens [batch, pos]`` → the model's ``[batch, pos, vocab]`` float64 probabilities."""
    return model_log_probs(model, torch.as_tensor(np.asarray(tokens), dtype=torch.long)).exp().numpy()


def _summary(kind_updates: EventUpdates) -> dict:
    """Curves by offset and per-event values of one kind, for JSON and figures."""
    data = {"n_events": len(kind_updates.events), "offsets": list(range(kind_updates.events.window))}
    for who in ("model", "observer"):
        curves: Curves = getattr(kind_updates, who)
        for name in ("p_old", "p_new"):
            mean, half, count = mean_band(getattr(curves, name))
            data[f"{name}_{who}"] = {"mean": mean, "ci95": half, "count": count}
        data[f"learning_rate_{who}"] = curves.learning_rate
        data[f"discreteness_{who}"] = curves.discreteness
    mean, half, count = mean_band(kind_updates.kl)
    data["kl"] = {"mean": mean, "ci95": half, "count": count}
    events = kind_updates.events
    data["events"] = {
        "sequence": events.sequence,
        "position": events.position,
        "old_target": events.old_target,
        "new_target": events.new_target,
        "period": events.period,
    }
    return data


def _headline(by_kind: dict[EventKind, EventUpdates]) -> dict[str, float]:
    headline: dict[str, float] = {}
    for kind, kind_updates in by_kind.items():
        for who in ("model", "observer"):
            curves: Curves = getattr(kind_updates, who)
            headline[f"learning_rate_{who}/{kind}"] = never_last_median(curves.learning_rate)
            headline[f"discreteness_{who}/{kind}"] = (
                float(np.nanmedian(curves.discreteness)) if np.any(~np.isnan(curves.discreteness)) else float("nan")
            )
            headline[f"never_{who}/{kind}"] = float(np.mean(np.isnan(curves.learning_rate))) if len(curves.learning_rate) else float("nan")
        headline[f"kl/{kind}"] = float(np.mean(kind_updates.kl)) if kind_updates.kl.size else float("nan")
        headline[f"n_events/{kind}"] = float(len(kind_updates.events))
    return headline


@dataclass(frozen=True)
class UpdatesResult:
    """Event-aligned updates of one run's model against the observer."""

    name: str
    headline: dict[str, float]
    options: dict
    by_kind: dict[str, dict] = field(repr=False)
    """Per event kind: curves by offset (mean and 95 % interval over events), per-event values."""

    def to_json(self) -> dict:
        return {"options": self.options, "by_kind": self.by_kind}

    def plot(self, folder: Path) -> list[Path]:
        return plot_updates(self.by_kind, folder, self.name, self.options.get("decoders"))


def plot_updates(by_kind: dict[str, dict], folder: Path, stem: str, decoders: dict[str, dict] | None = None) -> list[Path]:
    """Event-aligned curves, KL by offset, and histograms of learning rate and discreteness."""
    plt = pyplot()

    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, kind in zip(axes[:2], EVENT_KINDS):
        data = by_kind[kind]
        offsets = np.asarray(data["offsets"])
        names = ("p_old", "p_new") if kind == "transition" else ("p_new",)
        for name in names:
            for who, colour in (("observer", OBSERVER_COLOUR), ("model", MODEL_COLOUR)):
                curve = data[f"{name}_{who}"]
                mean, half = np.asarray(curve["mean"], float), np.asarray(curve["ci95"], float)
                good = ~np.isnan(mean)
                style = "--" if name == "p_old" else "-"
                label = f"{who}: {'old' if name == 'p_old' else 'new'} target" if kind == "transition" else f"{who}: true target"
                ax.plot(offsets[good], mean[good], style, color=colour, marker="o", markersize=3, label=label)
                ax.fill_between(offsets[good], (mean - half)[good], (mean + half)[good], color=colour, alpha=0.2)
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(f"after a {kind} ({data['n_events']} events)")
        ax.set_xlabel("offset from the event (tokens)")
        ax.set_ylabel("P(target) at target positions")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
    ax = axes[2]
    for kind, colour in zip(EVENT_KINDS, (MODEL_COLOUR, NOISE_COLOUR)):
        data = by_kind[kind]
        mean, half = np.asarray(data["kl"]["mean"], float), np.asarray(data["kl"]["ci95"], float)
        offsets = np.asarray(data["offsets"])
        good = ~np.isnan(mean)
        ax.plot(offsets[good], mean[good], color=colour, marker="o", markersize=3, label=f"after a {kind}")
        ax.fill_between(offsets[good], (mean - half)[good], (mean + half)[good], color=colour, alpha=0.2)
    ax.set_xlabel("offset from the event (tokens)")
    ax.set_ylabel("KL(observer ‖ model) (nats)")
    ax.set_title("KL by offset (all positions)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths += save_figure(fig, folder, f"{stem}_curves")

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for row, kind in enumerate(EVENT_KINDS):
        data = by_kind[kind]
        window = len(data["offsets"])
        for column, (metric, unit, bins) in enumerate(
            (("learning_rate", "tokens after the event", np.arange(-0.5, window + 1.5)), ("discreteness", "index", np.linspace(0, 1.5, 31)))
        ):
            ax = axes[row, column]
            for who, colour in (("observer", OBSERVER_COLOUR), ("model", MODEL_COLOUR)):
                values = np.asarray(data[f"{metric}_{who}"], float)
                if metric == "learning_rate":  # "never" drawn in the last bin
                    values = np.where(np.isnan(values), window, values)
                else:
                    values = np.clip(values[~np.isnan(values)], 0, 1.5)
                ax.hist(values, bins=bins, color=colour, alpha=0.5, label=who)
            label = f"{'learning rate' if metric == 'learning_rate' else 'discreteness'} ({unit})"
            label += f"; bin {window} = never" if metric == "learning_rate" else "; clipped at 1.5"
            ax.set_xlabel(label)
            ax.set_ylabel("events")
            ax.set_title(f"{kind}: {metric.replace('_', ' ')}")
            ax.legend(fontsize=8)
    fig.tight_layout()
    paths += save_figure(fig, folder, f"{stem}_histograms")
    if decoders and all("decoded" in by_kind[kind] for kind in EVENT_KINDS):
        from nrecur.analysis.decoded import plot_decoded

        paths += plot_decoded(by_kind, decoders, folder, f"{stem}_decoded")
    return paths


def sample_events(task: NRecurrence, n_sequences: int, length: int, seed: int) -> tuple[Batch, object]:
    """A batch of ``task`` and its observer's posterior on it (``.predictive [batch, pos, vocab]``, marginals)."""
    batch = task.sample(n_sequences, length, seed)
    return batch, task.posterior(batch.tokens)


@register_analysis(
    "updates",
    applies=_stochastic_reason,
    description="event-aligned updates after transitions and noise: in-context learning rate and discreteness, model vs observer",
)
def updates(
    run,
    n_sequences: int = 2048,
    seed: int = 0,
    window: int | None = None,
    settle: int | None = None,
    min_change: float = 0.1,
    decode: bool = True,
    decode_sequences: int = 1024,
    mlp_rows: int = MLP_ROWS,
) -> UpdatesResult:
    """Event-aligned updates of ``run.model`` against the exact observer on fresh sequences of its task.

    ``window`` defaults to ``min(4 × largest period, length // 2)``, ``settle`` (positions the rule before
    the event must have held) to twice the largest period. With ``decode``, the model's beliefs over period
    and target are also read by probes (fitted on ``decode_sequences`` other sequences, an MLP probe on at most
    ``mlp_rows`` of their positions) around the events.
    """
    reason = _stochastic_reason(run)
    if reason is not None:
        raise ValueError(f"updates does not apply: {reason}")
    task: NRecurrence = run.task
    length = run.config.length
    window = default_window(task, length) if window is None else window
    settle = default_settle(task) if settle is None else settle
    batch, post = sample_events(task, n_sequences, length, seed)
    by_kind = event_updates(model_probs(run.model, batch.tokens), post.predictive, batch, window, settle, min_change)
    options = {"n_sequences": n_sequences, "seed": seed, "window": window, "settle": settle, "min_change": min_change, "length": length}
    headline, summaries = _headline(by_kind), {kind: _summary(value) for kind, value in by_kind.items()}
    if decode:
        from nrecur.analysis.decoded import decode_rule_beliefs, decoded_summary

        decoded, chosen = decode_rule_beliefs(run.model, task, length, batch.tokens, decode_sequences, seed, mlp_rows=mlp_rows)
        options.update(decode_sequences=decode_sequences, mlp_rows=mlp_rows)
        for kind, kind_updates in by_kind.items():
            summaries[kind]["decoded"] = decoded_summary(task, decoded, post, kind_updates.events)
            headline[f"decoded_error/{kind}"] = summaries[kind]["decoded"]["error_target_new"]
        options["decoders"] = {quantity: {"hook": c.hook, "kind": c.kind, "r2": c.r2} for quantity, c in chosen.items()}
        headline.update({f"decoded_r2/{quantity}": c.r2 for quantity, c in chosen.items()})
    return UpdatesResult(name="updates", headline=headline, options=options, by_kind=summaries)


# ---------------------------------------------------------------------------------------------------------- across runs

#: What :func:`updates_across_runs` can put on the x axis, read off a run.
RUN_DESCRIPTORS = {
    "length": lambda run: float(run.config.length),
    "n_params": lambda run: float(sum(p.numel() for p in run.model.parameters())),
    "n_layers": lambda run: float(run.config.model.n_layers),
    "d_model": lambda run: float(run.config.model.d_model),
    "p_noise": lambda run: float(np.mean(run.task.noise_by_period)),
    "p_transition": lambda run: float(np.mean(run.task.transition_by_period)),
}


@dataclass(frozen=True)
class UpdatesAcross:
    """:func:`updates` over several runs, against one run property (``x``)."""

    name: str
    headline: dict[str, float]
    """``<updates headline name>@<run name>`` for every run."""
    x: str
    runs: dict[str, dict] = field(repr=False)
    """Per run name: ``x`` (its value), ``path``, ``headline`` (of :func:`updates`)."""

    def to_json(self) -> dict:
        return {"x": self.x, "runs": self.runs}

    def plot(self, folder: Path) -> list[Path]:
        plt = pyplot()

        names = sorted(self.runs, key=lambda name: self.runs[name]["x"])
        xs = np.array([self.runs[name]["x"] for name in names])
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, kind in zip(axes, EVENT_KINDS):
            for who, colour, marker in (("observer", OBSERVER_COLOUR, "s"), ("model", MODEL_COLOUR, "o")):
                ys = np.array([self.runs[name]["headline"][f"learning_rate_{who}/{kind}"] for name in names], float)
                ys[np.isinf(ys)] = np.nan  # more than half "never": no median to draw
                ax.plot(xs, ys, marker=marker, color=colour, label=who)
            for x, name in zip(xs, names):
                ax.annotate(name, (x, 0), textcoords="offset points", xytext=(0, 4), fontsize=7, rotation=30)
            ax.set_xlabel(self.x)
            ax.set_ylabel("median learning rate (tokens after the event)")
            ax.set_title(f"after a {kind}")
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=8)
        fig.tight_layout()
        return save_figure(fig, folder, self.name)


def updates_across_runs(runs: dict, x: str = "length", **options) -> UpdatesAcross:
    """:func:`updates` on every run of ``{name: Run}`` (same ``options``), with each run's ``x`` (one of
    :data:`RUN_DESCRIPTORS`: context length, model size, noise and transition rates) for the plot of the
    median learning rate against it — how context length and model size change it."""
    if x not in RUN_DESCRIPTORS:
        raise ValueError(f"unknown x {x!r}; choose one of {sorted(RUN_DESCRIPTORS)}")
    headline: dict[str, float] = {}
    data = {}
    for name, run in runs.items():
        result = updates(run, **options)
        data[name] = {"x": RUN_DESCRIPTORS[x](run), "path": str(run.path), "headline": result.headline}
        headline.update({f"{key}@{name}": value for key, value in result.headline.items()})
    return UpdatesAcross(name=f"updates_by_{x}", headline=headline, x=x, runs=data)
