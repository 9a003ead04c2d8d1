"""Figures of a sweep: any metric as a heatmap over two varied fields, small multiples over a third.

Each cell shows the median of the metric over the trials that share the
cell's values (the seeds, and any varied field not on an axis — the title
says which), written in the cell with the interquartile range of those trials
beneath it (``IQR a–b``) and how many of them have a value (``n=k``); failed
or unfinished trials have no value and are left out (``n`` says so, and how many failed). With a
facet field, one panel per value of it, sharing one colour scale. Metrics that
span more than a factor of 20 and are positive (KL, step counts) use a log
colour scale. Steps to the KL threshold are missing where it was never
reached: such a cell reads ``not reached``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nrecur.analysis.figures.common import pyplot, save_figure
from nrecur.sweep.store import SweepDir


@dataclass(frozen=True)
class CellStats:
    """The trials of one heatmap cell."""

    median: float
    q25: float
    q75: float
    n: int
    """Trials with a value."""
    total: int
    """Trials in the cell."""
    failed: int = 0
    """Trials of the cell that failed (NaN loss, an error)."""


def cell_table(frame, metric: str, x: str, y: str, facet: str | None = None) -> dict[tuple, CellStats]:
    """``(facet value, y value, x value) → CellStats`` over the rows of ``frame`` (facet value None without a facet)."""
    cells: dict[tuple, CellStats] = {}
    keys = [facet, y, x] if facet else [y, x]
    for key, rows in frame.groupby(keys, sort=True, dropna=False):
        key = key if facet else (None, *key)
        values = rows[metric].astype("float64").to_numpy()
        finite = values[np.isfinite(values)]
        if len(finite):
            q25, median, q75 = np.percentile(finite, [25, 50, 75])
        else:
            q25 = median = q75 = math.nan
        failed = int((rows["status"] == "failed").sum()) if "status" in rows else 0
        cells[tuple(key)] = CellStats(float(median), float(q25), float(q75), len(finite), len(values), failed)
    return cells


def _check_columns(frame, metric: str, axes: dict[str, str | None]) -> None:
    numeric = [c for c in frame.columns if frame[c].dtype.kind in "fiu" or str(frame[c].dtype) == "Int64"]
    if metric not in frame.columns:
        raise ValueError(f"--metric {metric!r} is not a column of the table; numeric columns: {', '.join(numeric)}")
    if metric not in numeric:
        raise ValueError(f"--metric {metric!r} is not numeric; numeric columns: {', '.join(numeric)}")
    varied = [c for c in frame.columns if c.split(".")[0] in ("task", "model", "train", "init_from")] + ["seed"]
    for option, name in axes.items():
        if name is not None and name not in frame.columns:
            raise ValueError(f"--{option} {name!r} is not a varied field of the sweep; they are {', '.join(varied)}")
    chosen = [name for name in axes.values() if name is not None]
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"--x, --y and --facet must be different fields, got {', '.join(chosen)}")


def _format(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.3g}"


def plot_metric(
    sweep_dir: str | os.PathLike,
    metric: str,
    x: str,
    y: str,
    facet: str | None = None,
    out: str | os.PathLike | None = None,
) -> list[Path]:
    """Draw ``metric`` over ``x`` and ``y`` (and panels over ``facet``); write PNG and SVG; return their paths.

    Default folder: ``SWEEP/plots``, file ``METRIC__by__X__Y[__FACET]``.
    """
    sweep = SweepDir(sweep_dir)
    frame = sweep.table()
    _check_columns(frame, metric, {"x": x, "y": y, "facet": facet})
    cells = cell_table(frame, metric, x, y, facet)
    xs = sorted(frame[x].unique(), key=_order)
    ys = sorted(frame[y].unique(), key=_order)
    facets = sorted(frame[facet].unique(), key=_order) if facet else [None]
    medians = np.array([c.median for c in cells.values()])
    finite = medians[np.isfinite(medians)]
    plt = pyplot()
    from matplotlib.colors import LogNorm, Normalize

    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 20:
        norm = LogNorm(vmin=finite.min(), vmax=finite.max())
    else:
        norm = Normalize(vmin=finite.min() if len(finite) else 0, vmax=finite.max() if len(finite) else 1)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    width = max(3.2, 1.4 * len(xs) + 1.4)  # room for the cells' three lines of 9-pt text
    fig, panels = plt.subplots(
        1, len(facets), figsize=(width * len(facets) + 1.0, max(2.6, 0.95 * len(ys) + 1.6)), squeeze=False, layout="constrained"
    )
    image = None
    for panel, value in zip(panels[0], facets):
        grid = np.full((len(ys), len(xs)), np.nan)
        for i, yv in enumerate(ys):
            for j, xv in enumerate(xs):
                stats = cells.get((value, yv, xv))
                if stats is None:
                    continue
                grid[i, j] = stats.median
                text = _cell_text(stats, metric)
                shade = norm(stats.median) if math.isfinite(stats.median) else 1.0
                colour = "white" if math.isfinite(stats.median) and shade < 0.55 else "black"
                panel.text(j, i, text, ha="center", va="center", fontsize=9, color=colour)
        image = panel.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto", origin="lower")
        panel.set_xticks(range(len(xs)), [_label(v) for v in xs])
        panel.set_yticks(range(len(ys)), [_label(v) for v in ys])
        panel.set_xlabel(x)
        panel.set_ylabel(y)
        if facet:
            panel.set_title(f"{facet} = {_label(value)}", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=panels[0].tolist(), label=f"{metric} (median)", shrink=0.9)
    stored = sweep.read_trials().get("name") or sweep.path.name
    over = pooled_fields(frame, [name for name in (x, y, facet) if name])
    what = f"median over {', '.join(over)} (IQR beneath; n: trials with a value)" if over else "one trial per cell"
    fig.suptitle(f"{stored}: {metric}, {what}", fontsize=10)
    stem = "__".join(part.replace("/", "-") for part in (metric, "by", x, y, *([facet] if facet else [])))
    return save_figure(fig, Path(out) if out is not None else sweep.plots_dir, stem)


def pooled_fields(frame, axes: list[str]) -> list[str]:
    """Varied fields (and ``seed``) that take more than one value inside some cell of ``axes``: the median pools them."""
    candidates = [c for c in frame.columns if c.split(".")[0] in ("task", "model", "train", "init_from") or c == "seed"]
    return [c for c in candidates if c not in axes and (frame.groupby(axes, dropna=False)[c].nunique(dropna=False) > 1).any()]


def _cell_text(stats: CellStats, metric: str) -> str:
    count = f"n={stats.n}/{stats.total}" + (f", {stats.failed} failed" if stats.failed else "")
    if stats.n == 0:
        if stats.failed == stats.total:
            return f"failed\n{count}"
        return f"not reached\n{count}" if metric.endswith("to_threshold") else f"no value\n{count}"
    if stats.n == 1:
        return f"{_format(stats.median)}\n{count}"
    return f"{_format(stats.median)}\nIQR {_format(stats.q25)}–{_format(stats.q75)}\n{count}"


def _order(value):
    """Numbers by value, then everything else by its text."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _label(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:g}"
    return str(value)
