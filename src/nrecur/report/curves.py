"""Training curves of a run from its ``metrics.jsonl``: loss against the Bayes floor, KL, KL per position.

Every evaluation set a run logs (``eval``; ``train`` in finite mode;
``in_dist``/``out_dist`` with held-out rules; ``universal`` for modular
arithmetic) gets one colour in every figure: its model cross-entropy is a solid
line and its Bayes cross-entropy — the floor no model beats on that data — a
dotted one of the same colour. KL(observer ‖ model) goes on a log axis with the
run's threshold; the memorization and threshold steps are marked where the run
reached them. KL per position over training is a heatmap (step × position, log
colour scale). All axes in nats/token and optimizer steps.
"""

from __future__ import annotations

import math

import numpy as np

from nrecur.analysis.figures.common import OKABE_ITO, pyplot
from nrecur.report.embed import Budget, Image, figure_image
from nrecur.report.reading import RunRecord

__all__ = ["SET_LABELS", "eval_sets", "kl_sparkline", "training_figures"]

SET_LABELS = {
    "eval": "held-out sequences",
    "train": "training set",
    "in_dist": "in-distribution",
    "out_dist": "out-of-distribution",
    "universal": "vs the universal observer",
}
"""Evaluation set → its name in figures and tables (sets of other names show as they are)."""

KL_FLOOR = 1e-6
"""KL values below this are drawn at it on the log axis (a model can match the observer to rounding)."""


def eval_sets(line: dict) -> list[str]:
    """The evaluation sets of a metrics line (``eval`` first), by their ``SET/kl`` entries."""
    names = [key[: -len("/kl")] for key in line if key.endswith("/kl") and isinstance(line[key], (int, float))]
    return sorted(names, key=lambda name: (name != "eval", list(SET_LABELS).index(name) if name in SET_LABELS else 99, name))


def _colours(sets: list[str]) -> dict[str, str]:
    return {name: OKABE_ITO[i % len(OKABE_ITO)] for i, name in enumerate(sets)}


def _mark_steps(ax, record: RunRecord) -> None:
    """Dashed vertical lines at the memorization and threshold steps, named in the legend (text on the plot
    would collide with the curves or the legend)."""
    for step, label, style in ((record.memorization_step, "memorized", ":"), (record.threshold_step, "KL ≤ threshold", "--")):
        if step is not None:
            ax.axvline(step, color="#555555", ls=style, lw=1.0, label=f"{label} at step {step}")


def _legend_below(ax) -> None:
    """The legend under the axes, where it cannot hide a curve (the figure is saved with a tight box)."""
    ax.legend(fontsize=10, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)


def _loss_figure(record: RunRecord, sets: list[str], colours: dict[str, str]):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    steps, values = record.curve("train/loss")
    if steps:
        ax.plot(steps, values, color="#000000", lw=0.9, alpha=0.6, label="training loss (batches)")
    for name in sets:
        label = SET_LABELS.get(name, name)
        steps, values = record.curve(f"{name}/model_ce")
        ax.plot(steps, values, color=colours[name], lw=1.6, label=f"model, {label}")
        steps, values = record.curve(f"{name}/bayes_ce")
        ax.plot(steps, values, color=colours[name], lw=1.2, ls=":", label=f"Bayes floor, {label}")
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("loss against the Bayes floor", fontsize=10)
    ax.grid(alpha=0.3)
    _mark_steps(ax, record)
    _legend_below(ax)
    return fig


def _kl_figure(record: RunRecord, sets: list[str], colours: dict[str, str]):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for name in sets:
        steps, values = record.curve(f"{name}/kl")
        ax.plot(steps, np.maximum(values, KL_FLOOR), color=colours[name], lw=1.6, marker="o", ms=2.5,
                label=f"KL(observer ‖ model), {SET_LABELS.get(name, name)}")  # fmt: skip
    threshold = record.config.train.kl_threshold
    ax.axhline(threshold, color="#D55E00", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("KL (nats/token, log scale)")
    ax.set_title("distance to the exact observer", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    _mark_steps(ax, record)
    _legend_below(ax)
    return fig


def _position_figure(record: RunRecord):
    from matplotlib.colors import LogNorm

    rows = [(line["step"], line["eval/kl_per_position"]) for line in record.evaluations if isinstance(line.get("eval/kl_per_position"), list)]
    if not rows:
        return None
    width = max(len(values) for _, values in rows)
    matrix = np.full((len(rows), width), np.nan)
    for i, (_, values) in enumerate(rows):
        matrix[i, : len(values)] = [np.nan if v is None else v for v in values]
    steps = np.array([step for step, _ in rows], dtype=float)
    # Cell edges halfway between evaluations (the first and last cells as wide as their neighbours).
    gaps = np.diff(steps) if len(steps) > 1 else np.array([1.0])
    edges = np.concatenate([[steps[0] - gaps[0] / 2], steps[:-1] + gaps / 2, [steps[-1] + gaps[-1] / 2]])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10.4, 3.4), layout="constrained")
    finite = matrix[np.isfinite(matrix)]
    low = max(float(finite[finite > 0].min()) if (finite > 0).any() else KL_FLOOR, KL_FLOOR)
    high = max(float(finite.max()) if finite.size else 1.0, low * 10)
    mesh = ax.pcolormesh(edges, np.arange(width + 1) - 0.5, np.maximum(matrix, low).T, cmap="viridis", norm=LogNorm(low, high), shading="flat")
    fig.colorbar(mesh, ax=ax, label="KL (nats/token)", pad=0.01)
    ax.set_xlabel("training step")
    ax.set_ylabel("position i (predicting i+1)")
    ax.set_title("KL(observer ‖ model) per position over training, held-out sequences", fontsize=10)
    for step, style in ((record.memorization_step, ":"), (record.threshold_step, "--")):
        if step is not None:
            ax.axvline(step, color="#FFFFFF", ls=style, lw=1.0)
    return fig


def training_figures(record: RunRecord, budget: Budget) -> tuple[list[Image], str]:
    """The run's training figures, inlined, and a note on what could not be drawn ("" when all were)."""
    last = record.last
    if last is None:
        return [], "training has not evaluated yet: there are no curves to draw"
    sets = eval_sets(last)
    colours = _colours(sets)
    images = [
        figure_image(_loss_figure(record, sets, colours), "cross-entropy of the model (solid) and of the exact observer (dotted: "
                     "the floor) on the same sequences; the thin grey line is the mean training loss since the previous evaluation", budget),
        figure_image(_kl_figure(record, sets, colours), "mean KL(observer ‖ model) over all positions, log scale; the run counts as "
                     "converged once it is below the dashed threshold", budget),
    ]
    heatmap = _position_figure(record)
    note = ""
    if heatmap is None:
        note = "the metrics hold no per-position KL (eval/kl_per_position): no heatmap"
    else:
        images.append(figure_image(heatmap, "each column one evaluation, each row one position; dashed: the step KL reached its threshold", budget, fmt="png"))
    return images, note


def kl_sparkline(record: RunRecord, width: int = 120, height: int = 28) -> str:
    """A tiny inline SVG of eval KL over training on a log scale, with the threshold dashed ("" without data)."""
    steps, values = record.curve("eval/kl")
    if len(steps) < 2 or steps[-1] == steps[0]:
        return ""
    threshold = record.config.train.kl_threshold
    logs = [math.log10(max(v, KL_FLOOR)) for v in values]
    top, bottom = max(*logs, math.log10(threshold)), min(*logs, math.log10(threshold))
    span = (top - bottom) or 1.0

    def xy(step: float, log: float) -> str:
        x = 1 + (step - steps[0]) / (steps[-1] - steps[0]) * (width - 2)
        y = 1 + (top - log) / span * (height - 2)
        return f"{x:.1f},{y:.1f}"

    points = " ".join(xy(s, v) for s, v in zip(steps, logs))
    t = xy(steps[0], math.log10(threshold)).split(",")[1]
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="eval KL over training, log scale">'
        f'<line x1="0" y1="{t}" x2="{width}" y2="{t}" stroke="#D55E00" stroke-dasharray="3,2" stroke-width="1"/>'
        f'<polyline points="{points}" fill="none" stroke="#0072B2" stroke-width="1.5"/></svg>'
    )
