"""A grokking phase diagram: training-set size × weight decay, each cell classified by how it learned.

Finite mode (a fixed training set, many epochs) on a preset's deterministic
task: every cell of the grid ``train_size × weight_decay`` trains from ``seeds``
seeds, with log-spaced checkpoints, until the held-out KL reaches the threshold
or the step budget ends. Each trial is one of (from its memorization step and
its threshold step, the first evaluation with KL ≤ the threshold, both from the
run's own evaluations):

* ``grokked``: memorized the training set first, generalized later — the
  *delay* is ``threshold step − memorization step``;
* ``generalized``: reached the threshold with no memorization phase before it
  (never memorized, or both at the same evaluation);
* ``memorized``: memorized, never generalized within the budget;
* ``neither``.

A cell's class is its most common trial class (ties go to the order above);
its delay the median over its grokked trials. The progress measures
(:mod:`nrecur.analysis.progress`) of one grokked trial show what changed inside
it between memorization and generalization.

How to read it: the class heatmap is the phase diagram; the delay heatmap says
how long generalization lagged memorization where it did. If no cell groks,
the JSON and the figure say so, with the budget tried.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nrecur._io import atomic_write_text
from nrecur.analysis import compute, write_result
from nrecur.analysis.figures.common import OKABE_ITO, plain_log_ticks, pyplot, save_figure
from nrecur.report.words import counted
from nrecur.runs import load_run
from nrecur.sweep import BackendOptions, load_sweep, run_sweep, spec_from_data
from nrecur.train.presets import STUDY_PRESET

__all__ = ["CLASSES", "GrokkingResult", "classify", "figure_title", "grokking_diagram", "plot_grokking"]

CLASSES = ("grokked", "generalized", "memorized", "neither")
"""Trial classes, in the order ties between them are broken."""
COLOURS = {"grokked": OKABE_ITO[2], "generalized": OKABE_ITO[0], "memorized": OKABE_ITO[1], "neither": "#BBBBBB"}


def classify(memorization_step: int | None, threshold_step: int | None) -> str:
    """The class of one trial from its memorization and threshold steps (None: never)."""
    if threshold_step is None:
        return "neither" if memorization_step is None else "memorized"
    if memorization_step is not None and memorization_step < threshold_step:
        return "grokked"
    return "generalized"


def _step(value) -> int | None:
    return None if pd.isna(value) else int(value)


@dataclass(frozen=True)
class GrokkingResult:
    """The phase diagram: one entry per cell, and the trials behind it."""

    sizes: list[int]
    decays: list[float]
    cells: list[dict]
    """Per cell: train_size, weight_decay, class, class counts, median delay, median final KL, trials."""
    trials: list[dict]
    """Per trial: train_size, weight_decay, seed, class, memorization and threshold steps, delay, final KL, run folder."""
    options: dict

    def to_json(self) -> dict:
        return {"options": self.options, "sizes": self.sizes, "decays": self.decays, "cells": self.cells, "trials": self.trials}

    def cell(self, size: int, decay: float) -> dict:
        return next(c for c in self.cells if c["train_size"] == size and c["weight_decay"] == decay)


def summarize(frame: pd.DataFrame, sizes: list[int], decays: list[float], options: dict) -> GrokkingResult:
    """Classify every trial of the sweep table ``frame`` and every cell."""
    trials = []
    for _, row in frame.iterrows():
        memorized, reached = _step(row["memorization_step"]), _step(row["steps_to_threshold"])
        kind = classify(memorized, reached) if row["status"] == "ok" else "neither"
        trials.append({
            "train_size": int(row["train.train_size"]), "weight_decay": float(row["train.weight_decay"]), "seed": int(row["seed"]),
            "class": kind, "memorization_step": memorized, "threshold_step": reached,
            "delay": reached - memorized if kind == "grokked" else None, "final_kl": None if pd.isna(row["final_kl"]) else float(row["final_kl"]),
            "status": row["status"], "run_dir": str(row["run_dir"]),
        })  # fmt: skip
    cells = []
    for size in sizes:
        for decay in decays:
            mine = [t for t in trials if t["train_size"] == size and t["weight_decay"] == decay]
            counts = Counter(t["class"] for t in mine)
            kind = max(CLASSES, key=lambda c: (counts[c], -CLASSES.index(c))) if mine else "neither"
            delays = [t["delay"] for t in mine if t["delay"] is not None]
            kls = [t["final_kl"] for t in mine if t["final_kl"] is not None]
            cells.append({
                "train_size": size, "weight_decay": decay, "class": kind, "counts": {c: counts[c] for c in CLASSES},
                "median_delay": float(np.median(delays)) if delays else None,
                "median_final_kl": float(np.median(kls)) if kls else None, "trials": len(mine),
            })  # fmt: skip
    return GrokkingResult(sizes=sizes, decays=decays, cells=cells, trials=trials, options=options)


def grokking_diagram(
    out: str | Path,
    preset: str = STUDY_PRESET,
    sizes=(256, 512, 1024, 2048),
    decays=(0.0, 0.1, 0.3, 1.0),
    seeds: int = 2,
    train: dict | None = None,
    runner: str = "one-by-one",
    progress_sequences: int = 256,
    options: BackendOptions | None = None,
    report=print,
) -> GrokkingResult:
    """Train the grid as one resumable sweep in ``out/sweep`` (``runner``: how same-shape trials train, see
    :data:`nrecur.sweep.GROUP_RUNNERS`; ``ensemble`` trains them together with torch.func, 10× faster on a GPU
    but slower than one process per trial on a 2-core CPU at the preset's batch of 64 — benchmarks/bench_ensemble.py), classify it, write ``out/grokking.json`` and the heatmaps, and the
    progress measures of the grokked trial with the longest delay (``out/progress/``)."""
    out = Path(out)
    sizes, decays = sorted(int(s) for s in sizes), sorted(float(d) for d in decays)
    base = {"train": {"mode": "finite", "stop_at_threshold": True, "time_budget": 0.0, "log_checkpoints": 10, **(train or {})}}
    spec = spec_from_data({
        "name": f"grokking-{preset}", "preset": preset, "base": base, "seeds": seeds,
        "grid": {"train.train_size": sizes, "train.weight_decay": decays},
    }, "grokking")  # fmt: skip
    run_sweep(spec, out / "sweep", options=dataclasses.replace(options or BackendOptions(), runner=runner), report=report)
    base_train = spec.base_config()["train"]
    run_options = {
        "preset": preset, "seeds": seeds, "step_budget": base_train["steps"], "kl_threshold": base_train["kl_threshold"],
        "memorization_threshold": base_train["memorization_threshold"], "batch_size": base_train["batch_size"],
        "lr": base_train["lr"], "schedule": base_train["schedule"], "runner": runner,
    }  # fmt: skip
    result = summarize(load_sweep(out / "sweep"), sizes, decays, run_options)
    grokked = [t for t in result.trials if t["class"] == "grokked"]
    if grokked:
        chosen = max(grokked, key=lambda t: t["delay"])
        run = load_run(chosen["run_dir"])
        if len(run.checkpoint_steps) >= 2:
            write_result(compute(run, "progress", progress=False, n_sequences=progress_sequences), out / "progress")
            result.options["progress_of"] = {key: chosen[key] for key in ("train_size", "weight_decay", "seed", "delay", "run_dir")}
    atomic_write_text(out / "grokking.json", json.dumps(result.to_json(), indent=1) + "\n")
    plot_grokking(result, out)
    return result


def plot_grokking(result: GrokkingResult, folder: str | Path, stem: str = "grokking") -> list[Path]:
    """Left: each cell's class (with its trials' class counts); middle: the median delay where cells grokked;
    right: the median final evaluation KL (log colour), which shows how far from generalizing the others ended."""
    from matplotlib.colors import ListedColormap, LogNorm
    from matplotlib.patches import Patch

    plt = pyplot()
    rows, columns = len(result.decays), len(result.sizes)
    kinds = np.zeros((rows, columns), dtype=int)
    delay, final_kl = np.full((rows, columns), np.nan), np.full((rows, columns), np.nan)
    for cell in result.cells:
        r, c = result.decays.index(cell["weight_decay"]), result.sizes.index(cell["train_size"])
        kinds[r, c] = CLASSES.index(cell["class"])
        if cell["median_delay"] is not None:
            delay[r, c] = cell["median_delay"]
        if cell.get("median_final_kl") is not None:
            final_kl[r, c] = cell["median_final_kl"]
    o = result.options
    fig, axes = plt.subplots(1, 3, figsize=(3 * (1.1 * columns + 2.3), 0.8 * rows + 2.2), layout="constrained")
    axes[0].imshow(kinds, cmap=ListedColormap([COLOURS[c] for c in CLASSES]), vmin=-0.5, vmax=len(CLASSES) - 0.5, aspect="auto", origin="lower")
    for cell in result.cells:
        r, c = result.decays.index(cell["weight_decay"]), result.sizes.index(cell["train_size"])
        text = "\n".join(f"{k} {n}" for k, n in cell["counts"].items() if n)
        axes[0].text(c, r, text, ha="center", va="center", fontsize=7)
    axes[0].legend(handles=[Patch(color=COLOURS[c], label=c) for c in CLASSES], fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    axes[0].set_title("how each cell learned (majority over seeds)", fontsize=9)
    if np.isfinite(delay).any():
        _annotated_heatmap(fig, axes[1], delay, "{:.0f}", "threshold step − memorization step (median)", "cividis")
    else:
        axes[1].imshow(np.zeros_like(delay), cmap=ListedColormap(["white"]), aspect="auto", origin="lower")
        axes[1].text((columns - 1) / 2, (rows - 1) / 2, f"no cell grokked\nwithin {o['step_budget']:,} steps", ha="center", va="center", fontsize=10)
    axes[1].set_title("grokking delay, training steps", fontsize=9)
    if np.isfinite(final_kl).any():
        norm = LogNorm(vmin=max(np.nanmin(final_kl), 1e-4), vmax=max(np.nanmax(final_kl), 2 * o["kl_threshold"]))
        _annotated_heatmap(fig, axes[2], final_kl, "{:.3g}", "final evaluation KL, nats/token (median)", "cividis", norm)
    axes[2].set_title(f"where training ended (threshold {o['kl_threshold']})", fontsize=9)
    for ax in axes:
        ax.set_xticks(range(columns), [str(s) for s in result.sizes])
        ax.set_yticks(range(rows), [f"{d:g}" for d in result.decays])
        ax.set_xlabel("training-set size (sequences)")
        ax.set_ylabel("weight decay")
    fig.suptitle(figure_title(o), fontsize=10)
    return save_figure(fig, folder, stem)


def figure_title(options: dict) -> str:
    """The phase diagram's title from a study's options: task, recipe, threshold, budget and seeds."""
    o = options
    return (
        f"{o['preset']}, finite mode, lr {o['lr']:g} ({o['schedule']} schedule): KL ≤ {o['kl_threshold']} within "
        f"{o['step_budget']:,} steps, {counted(o['seeds'], 'seed')} per cell"
    )


def _annotated_heatmap(fig, ax, values: np.ndarray, fmt: str, label: str, cmap: str, norm=None) -> None:
    """``values`` as a heatmap with each finite cell's value written on it, in a colour readable on its shade."""
    from matplotlib.colors import LogNorm

    image = ax.imshow(values, cmap=cmap, norm=norm, aspect="auto", origin="lower")
    for (r, c), value in np.ndenumerate(values):
        if np.isfinite(value):
            shade = image.norm(value)
            ax.text(c, r, fmt.format(value), ha="center", va="center", fontsize=8, color="white" if shade < 0.5 else "black")
    bar = fig.colorbar(image, ax=ax, label=label)
    if isinstance(norm, LogNorm):
        plain_log_ticks(bar.ax.yaxis)
