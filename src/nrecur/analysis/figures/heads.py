"""Figures of the head scores: every head's scores beside its initialization's, attention by offset, example patterns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nrecur.analysis.figures.common import pyplot, save_figure

__all__ = ["draw", "offset_ticks"]

MAX_WIDTH = 11.5
"""Inches: a figure at most this wide is shown at its native size in a 1,400-px report (120 dpi)."""


def draw(result, folder: Path) -> list[Path]:
    """``heads_scores`` (every score of every head, trained beside the initialization), and for n-recurrence
    ``heads_offsets`` (attention by relative offset per period) and ``heads_patterns`` (each period's best head
    on one sequence)."""
    paths = _draw_scores(result, folder)
    if result.periods:
        paths += _draw_offsets(result, folder)
        paths += _draw_patterns(result, folder)
    return paths


def _draw_scores(result, folder: Path) -> list[Path]:
    """Two matrices ``[head, score]`` (trained, initialization), a last row with what uniform attention scores."""
    plt = pyplot()
    columns = ["prev.\ntoken", "induc-\ntion", *(f"period\nn={n}" for n in result.periods)]
    uniform = [result.previous_token_baseline, result.induction_baseline, *result.period_baseline]
    rows = [*result.heads, "uniform"]
    models = [("trained model", result.trained), ("initialization (control)", result.random_init)]
    cell_w, cell_h = 0.7, 0.3
    panel_w, panel_h = cell_w * len(columns) + 0.9, cell_h * len(rows) + 1.3
    side_by_side = 2 * panel_w + 1.0 <= MAX_WIDTH
    shape = (1, 2) if side_by_side else (2, 1)
    size = (2 * panel_w + 1.0, panel_h + 0.6) if side_by_side else (panel_w + 1.0, 2 * panel_h + 0.6)
    fig, axes = plt.subplots(*shape, figsize=size, squeeze=False, layout="constrained")
    for index, (ax, (title, scores)) in enumerate(zip(axes.ravel(), models)):
        values = np.column_stack([scores.previous_token, scores.induction, *scores.period])  # [head, score]
        values = np.vstack([values, uniform])
        image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.axhline(len(result.heads) - 0.5, color="white", lw=2)
        ax.set_xticks(range(len(columns)), columns, fontsize=10)
        ax.xaxis.tick_top()
        labelled = index == 0 or not side_by_side  # side by side, the rows are the first panel's
        ax.set_yticks(range(len(rows)), rows if labelled else [""] * len(rows), fontsize=10)
        if labelled:
            ax.set_ylabel("head (layer.head)", fontsize=10)
        ax.set_title(title, fontsize=11)
        for (i, j), value in np.ndenumerate(values):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=10, color="white" if value < 0.6 else "black")
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
    bar.set_label("score: attention mass on the scored keys", fontsize=10)
    bar.ax.tick_params(labelsize=10)
    fig.suptitle("head scores of every head, trained and at initialization; last row: uniform attention", fontsize=12)
    return save_figure(fig, folder, "heads_scores")


def offset_ticks(n: int, length: int, most: int = 6) -> tuple[list[int], list[int]]:
    """Offsets ``n - 1, 2n - 1, …`` below ``length`` (where a period-``n`` head looks) and the at most ``most`` of
    them that carry a label, evenly spaced and never adjacent when there are more than ``most``."""
    ticks = list(range(n - 1, length, n))
    every = max(1, -(-len(ticks) // most))
    return ticks, ticks[::every]


def _draw_offsets(result, folder: Path) -> list[Path]:
    plt = pyplot()
    periods = result.periods
    length = len(result.offsets[0][0])
    columns = min(len(periods), 2 if length > 24 else 3)
    rows = -(-len(periods) // columns)
    panel_w = min((MAX_WIDTH - 1.2) / columns, 1.0 + 0.16 * length)  # the colour bar takes the rest
    panel_h = 0.24 * len(result.heads) + 1.1
    fig, axes = plt.subplots(rows, columns, figsize=(panel_w * columns + 1.2, panel_h * rows + 0.8), squeeze=False, layout="constrained")
    top = max(float(np.max(values)) for values in result.offsets)
    for ax in axes.ravel()[len(periods) :]:
        ax.axis("off")
    for index, (ax, n, values) in enumerate(zip(axes.ravel(), periods, result.offsets)):
        image = ax.imshow(np.asarray(values, float), vmin=0, vmax=top, cmap="viridis", aspect="auto")
        ticks, labelled = offset_ticks(n, length)
        ax.set_xticks(labelled, [str(t) for t in labelled], fontsize=10)
        ax.set_xticks(ticks, minor=True)
        ax.tick_params(axis="x", which="minor", length=3)
        ax.set_title(f"period-{n} sequences", fontsize=11)
        ax.set_xlabel(f"offset i − j (ticks at {n - 1}, {2 * n - 1}, … )", fontsize=10)
        first_column = index % columns == 0
        ax.set_yticks(range(len(result.heads)), result.heads if first_column else [""] * len(result.heads), fontsize=10)
        if first_column:
            ax.set_ylabel("head", fontsize=10)
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
    bar.set_label("mean attention from query i to key j", fontsize=10)
    bar.ax.tick_params(labelsize=10)
    fig.suptitle(
        "attention by relative offset on sequences of each period (trained model): a head that follows the period\n"
        "looks at offsets n−1, 2n−1, … in the period-n panel; one with the same pattern in every panel attends by position",
        fontsize=12,
    )
    return save_figure(fig, folder, "heads_offsets")


def _draw_patterns(result, folder: Path) -> list[Path]:
    plt = pyplot()
    examples = result.examples
    columns = min(len(examples), 4)
    rows = -(-len(examples) // columns)
    panel = min(3.0, (MAX_WIDTH - 0.5) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(panel * columns + 0.5, (panel + 0.6) * rows + 0.4), squeeze=False, layout="constrained")
    for ax in axes.ravel()[len(examples) :]:
        ax.axis("off")
    for index, (ax, example) in enumerate(zip(axes.ravel(), examples)):
        ax.imshow(np.asarray(example.pattern, float), vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"head {example.head}, a period-{example.period}\nsequence (target {example.target})", fontsize=10)
        ax.set_xlabel("key position", fontsize=10)
        ax.tick_params(labelsize=10)
        if index % columns == 0:
            ax.set_ylabel("query position", fontsize=10)
    fig.suptitle("attention pattern of each period's best head on one sequence of that period", fontsize=12)
    return save_figure(fig, folder, "heads_patterns")
