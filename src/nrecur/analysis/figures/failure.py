"""Figures of the failure analysis: perseveration, over-reaction and KL after events — the model beside the
observer (its ceiling) and the run's initialization (its control); and several runs side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nrecur.analysis.figures.common import OKABE_ITO, pyplot, save_figure
from nrecur.analysis.figures.updates import COLOURS, EVENT, KIND_COLOURS, LABELS, STYLES, band, kl_axis

__all__ = ["draw", "draw_comparison"]


def _perseveration(ax, scores: dict, never: int, colours: dict, styles: dict) -> None:
    for label, values in scores.items():
        values = np.asarray(values, dtype=float)
        ax.hist(np.where(np.isnan(values), never, values), bins=np.arange(-0.5, never + 1.5), histtype="step", linewidth=2,
                color=colours[label], linestyle=styles[label], label=label)  # fmt: skip
    ticks = [t for t in ax.get_xticks() if 0 <= t < never - 1]
    ax.set_xticks([*ticks, never], [f"{t:g}" for t in ticks] + ["never"], fontsize=10)
    ax.set_xlim(-1, never + 1)
    ax.set_xlabel("tokens after the transition until the top token is the new target", fontsize=10)
    ax.set_ylabel("transitions", fontsize=10)
    ax.set_title("perseveration (to the end of the new rule)", fontsize=11)
    ax.legend(fontsize=10)


def _overreaction(ax, scores: dict, colours: dict, styles: dict) -> None:
    for label, values in scores.items():
        values = np.asarray(values, dtype=float)
        ax.hist(values[~np.isnan(values)], bins=np.linspace(-1, 1, 41), histtype="step", linewidth=2, color=colours[label],
                linestyle=styles[label], label=label)  # fmt: skip
    ax.set_xlabel("P(t) before the noise token − P(t) at the next target position", fontsize=10)
    ax.set_ylabel("noise tokens", fontsize=10)
    ax.set_title("over-reaction to one noise token", fontsize=11)
    ax.legend(fontsize=10)


def draw(result, folder: Path) -> list[Path]:
    """``failure``: perseveration and over-reaction histograms, KL by offset after each kind of event."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14.5, 4.8), layout="constrained")
    who = ("observer", "model", "random_init")
    colours = {LABELS[w]: COLOURS[w] for w in who}
    styles = {LABELS[w]: STYLES[w] for w in who}
    never = result.length - 1
    _perseveration(axes[0], {LABELS[w]: getattr(result, w).perseveration for w in who}, never, colours, styles)
    _overreaction(axes[1], {LABELS[w]: getattr(result, w).overreaction for w in who}, colours, styles)
    ax = axes[2]
    for kind, trained, control in (
        ("transition", result.model.kl_transition, result.random_init.kl_transition),
        ("noise", result.model.kl_noise, result.random_init.kl_noise),
    ):
        band(ax, result.offsets, trained, KIND_COLOURS[kind], "-", f"model, after {EVENT[kind]}")
        band(ax, result.offsets, control, KIND_COLOURS[kind], ":", f"initialization, after {EVENT[kind]}", marker=None)
    kl_axis(ax)
    ax.set_title("distance from the observer by offset", fontsize=11)
    ax.legend(fontsize=10)
    task = result.scoring_task
    fig.suptitle(f"failure modes on p_noise = {task.p_noise}, p_transition = {task.p_transition} data "
                 f"({result.n_events['transition']} transitions, {result.n_events['noise']} noise tokens)", fontsize=12)  # fmt: skip
    return save_figure(fig, folder, "failure")


def draw_comparison(result, folder: Path) -> list[Path]:
    """``failure_comparison``: every run's perseveration and over-reaction beside the observer's, and each run's
    figures beside its initialization's."""
    plt = pyplot()
    names = list(result.models)
    colours = {name: OKABE_ITO[i % 6] for i, name in enumerate(names)} | {"observer": OKABE_ITO[7]}
    styles = {name: "-" for name in names} | {"observer": ":"}
    fig, axes = plt.subplots(1, 3, figsize=(14.5, 4.8), layout="constrained")
    scores = {**{name: result.models[name] for name in names}, "observer": result.observer}
    _perseveration(axes[0], {k: s.perseveration for k, s in scores.items()}, result.length - 1, colours, styles)
    _overreaction(axes[1], {k: s.overreaction for k, s in scores.items()}, colours, styles)
    ax = axes[2]
    x = np.arange(len(names))
    trained, init = result.summaries, result.summaries_random_init
    never = [trained[n].perseveration_never for n in names]
    never_init = [init[n].perseveration_never for n in names]
    gap = [trained[n].overreaction_gap for n in names]
    gap_init = [init[n].overreaction_gap for n in names]
    ax.bar(x - 0.3, never, width=0.2, color=OKABE_ITO[0], label="share never followed")
    ax.bar(x - 0.1, never_init, width=0.2, color=OKABE_ITO[0], alpha=0.35, hatch="//", label="the same, initialization")
    ax.bar(x + 0.1, gap, width=0.2, color=OKABE_ITO[1], label="mean |over-reaction − observer's|")
    ax.bar(x + 0.3, gap_init, width=0.2, color=OKABE_ITO[1], alpha=0.35, hatch="//", label="the same, initialization")
    ax.axhline(result.summary_ceiling.perseveration_never, color=OKABE_ITO[7], linestyle=":", label="observer: share never")
    ax.set_xticks(x, names, fontsize=10)
    ax.set_ylabel("share / probability", fontsize=10)
    ax.set_title("each run beside its initialization", fontsize=11)
    ax.legend(fontsize=10)
    fig.suptitle("failure modes of several runs on the same events", fontsize=12)
    return save_figure(fig, folder, "failure_comparison")
