"""Figure of the static prior: true, static and behavioural priors over targets and periods, trained and at initialization."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nrecur.analysis.figures.common import OKABE_ITO, pyplot, save_figure

__all__ = ["draw"]


def _label(kind: str, name: str, estimate, validated: dict[str, bool]) -> str:
    corr = f"r={estimate.corr:.2f}" if math.isfinite(estimate.corr) else "r undefined"
    checked = " (failed its hand-built check)" if kind == "static" and not validated.get(name, True) else ""
    return f"{kind} {name}{checked}: {corr}, KL={estimate.kl:.3f}"


def _panel(ax, labels: list[str], truth: list[float], estimates, what: str, validated, title: str) -> None:
    """Grouped bars: the true prior, then every static and behavioural estimate of ``what``, labelled with its score."""
    series = [("true prior", truth, "#999999", None)]
    colours = iter(OKABE_ITO)
    for kind in ("static", "behavioural"):
        for name, estimate in estimates.of(kind, what).items():
            series.append((_label(kind, name, estimate, validated), estimate.values, next(colours), "//" if kind == "behavioural" else None))
    width = 0.85 / len(series)
    x = np.arange(len(labels))
    for index, (label, values, colour, hatch) in enumerate(series):
        ax.bar(x + (index - (len(series) - 1) / 2) * width, values, width, color=colour, label=label, hatch=hatch, edgecolor="white" if index else None)
    ax.set_xticks(x, labels, fontsize=10)
    ax.tick_params(axis="y", labelsize=10)
    ax.set_ylabel("probability", fontsize=10)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=10, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def draw(result, folder: Path) -> list[Path]:
    """The true prior beside every static estimate (weights only) and the behavioural ones (hatched), over targets
    and over periods, for the trained model (top) and the run's initialization (bottom, the control)."""
    plt = pyplot()
    targets = [str(v) for v in range(len(result.true_target))]
    periods = [str(n) for n in result.periods]
    fig, axes = plt.subplots(4, 1, figsize=(11.5, 15), layout="constrained")
    panels = [
        (what, which, estimates, labels, truth)
        for what, labels, truth in (("target", targets, result.true_target), ("period", periods, result.true_period))
        for which, estimates in (("trained", result.trained), ("initialization (control)", result.random_init))
    ]
    for ax, (what, which, estimates, labels, truth) in zip(axes, panels):
        _panel(ax, labels, truth, estimates, what, result.validated, f"prior over {what}s, {which}: true, static (weights only), behavioural (hatched)")
        ax.set_xlabel(what, fontsize=10)
    fig.suptitle("the model's prior read from its weights and from its first predictions, against the task's prior", fontsize=12)
    return save_figure(fig, folder, "prior")
