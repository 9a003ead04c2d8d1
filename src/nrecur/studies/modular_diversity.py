"""In-context modular arithmetic: at which task diversity does the model switch to the general algorithm?

He et al. train on ``n_tasks`` of the ``p²`` task vectors ``(a, b)`` of
``z = a·x + b·y mod p`` and find that with few vectors the model learns the
training set (a *switchboard* over the seen vectors), with many the general
algorithm that also works out of distribution. Here every ``n_tasks`` of the
grid trains ``modular-quick`` (one sweep); each run is then read at the end of
training against three references (its own evaluations):

* KL to the *in-distribution* observer, on sequences of the training vectors
  (``eval/kl``) — what a perfect switchboard reaches;
* KL to the *universal* observer (all ``p²`` vectors equally likely) on the same
  sequences (``universal/kl``) — what the general algorithm reaches;
* KL to the universal observer on sequences of *unseen* vectors
  (``out_dist/kl``);
* the accuracy at the ``z`` positions, the model's and each observer's on its
  own sequences: in distribution (``eval/z_acc`` against ``eval/bayes_z_acc``)
  and out of it (``out_dist/z_acc`` against ``out_dist/bayes_z_acc``).

How to read it: while ``eval/kl`` is far below ``universal/kl`` the model
relies on the training vectors, and its ID accuracy against the in-distribution
observer's says how well it fits them; the switch to the general algorithm
shows as ``out_dist/kl`` falling to ``universal/kl`` and the out-of-distribution
accuracy rising to the universal observer's. The ``strategy`` analysis of every
run (:mod:`nrecur.analysis.strategy`) says the same in one number: the weight
``w`` of the in-distribution observer in the mixture of the two observers
closest to the model, on sequences of training and of unseen vectors (1: a
switchboard, 0: the general algorithm), beside the run's initialization.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nrecur._io import atomic_write_text
from nrecur.analysis.figures.common import OKABE_ITO, plain_log_ticks, pyplot, save_figure
from nrecur.report.words import counted
from nrecur.runs import load_run
from nrecur.studies.rule_diversity import run_strategy
from nrecur.sweep import BackendOptions, load_sweep, run_sweep, spec_from_data, study_options

__all__ = ["ACCURACY", "SERIES", "ModularDiversityResult", "modular_diversity", "plot_modular_diversity"]

SERIES = {
    "eval/kl": "KL to the in-distribution observer, ID sequences",
    "universal/kl": "KL to the universal observer, ID sequences",
    "out_dist/kl": "KL to the universal observer, OOD sequences",
}
ACCURACY = {
    "eval/z_acc": "model, ID",
    "out_dist/z_acc": "model, OOD",
    "eval/bayes_z_acc": "in-distribution observer, ID",
    "out_dist/bayes_z_acc": "universal observer, OOD",
}
"""Accuracy at the ``z`` positions: the model's (blue) and each reference's on its own sequences (grey); ID solid, OOD dashed."""
STRATEGY = {
    "w_final/id": "model, training vectors",
    "w_final/ood": "model, unseen vectors",
    "w_final_random_init/id": "initialization, training vectors",
    "w_final_random_init/ood": "initialization, unseen vectors",
}
"""The strategy analysis's weight of the in-distribution observer at the end of training, and its control."""


@dataclass(frozen=True)
class ModularDiversityResult:
    """Per ``n_tasks``: the median over seeds of every series and accuracy, and the runs behind it."""

    rows: list[dict]
    options: dict

    def to_json(self) -> dict:
        return {"options": self.options, "rows": self.rows}


def modular_diversity(
    out: str | Path,
    n_tasks=(4, 8, 16, 32),
    preset: str = "modular-quick",
    seeds: int = 1,
    train: dict | None = None,
    model: dict | None = None,
    strategy_sequences: int = 256,
    options: BackendOptions = BackendOptions(),
    report=print,
) -> ModularDiversityResult:
    """Train ``preset`` at every ``n_tasks`` (one sweep in ``out/sweep``) and write ``out/modular_diversity.json``
    and the figure; see the module docstring. ``train`` and ``model``: fields that replace the preset's (a
    deeper model: ``model={"n_layers": 4}``); ``strategy_sequences``: sequences of each kind the strategy
    analysis of every run reads."""
    out = Path(out)
    metrics = sorted({*SERIES, *ACCURACY})
    spec = spec_from_data({
        "name": f"modular-diversity-{preset}" + "".join(f"-{name}-{value}" for name, value in (model or {}).items()), "preset": preset, "seeds": seeds,
        "base": {"model": model or {}, "train": {"time_budget": 0.0, **(train or {})}},
        "grid": {"task.n_tasks": [int(n) for n in n_tasks]}, "record": {"metrics": metrics},
    }, "modular-diversity")  # fmt: skip
    run_sweep(spec, out / "sweep", options=study_options(options), report=report)
    frame = load_sweep(out / "sweep")
    frame = frame[frame["status"] == "ok"].copy()
    for name in STRATEGY:
        frame[name] = np.nan
    for index, run_dir in frame["run_dir"].items():  # each run's strategy, written into its analysis/
        headline = (run_strategy(load_run(run_dir), strategy_sequences) or {}).get("headline", {})
        for name in STRATEGY:
            frame.loc[index, name] = np.nan if headline.get(name) is None else float(headline[name])
    rows = []
    for count, part in frame.groupby("task.n_tasks"):
        row = {"n_tasks": int(count), "runs": len(part), "steps": int(part["steps"].median())}
        for name in [*metrics, *STRATEGY]:
            values = pd.to_numeric(part[name], errors="coerce") if name in part else pd.Series(dtype=float)
            row[name] = float(values.median()) if values.notna().any() else None
        rows.append(row)
    spec_base = spec.base_config()
    run_options = {
        "preset": preset, "p": spec_base["task"]["p"], "seeds": seeds, "n_tasks": list(n_tasks), "steps": spec_base["train"]["steps"],
        "model": dict(model or {}),
    }  # fmt: skip
    result = ModularDiversityResult(rows=rows, options=run_options)
    atomic_write_text(out / "modular_diversity.json", json.dumps(result.to_json(), indent=1) + "\n")
    plot_modular_diversity(result, out)
    return result


def _series(result: ModularDiversityResult, name: str) -> np.ndarray:
    """One metric per ``n_tasks`` row, NaN where a row has none (matplotlib leaves a gap)."""
    return np.array([np.nan if row.get(name) is None else row[name] for row in result.rows], dtype=float)


def plot_modular_diversity(result: ModularDiversityResult, folder: str | Path, stem: str = "modular_diversity") -> list[Path]:
    """KL to the three references, the accuracy at ``z`` and the strategy weight ``w``, against the number of
    training task vectors."""
    from matplotlib.ticker import NullLocator

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8), layout="constrained")
    counts = np.array([row["n_tasks"] for row in result.rows])
    for colour, marker, size, (name, label) in zip(OKABE_ITO, ("o", "s", "^"), (9, 6, 6), SERIES.items()):
        values = _series(result, name)
        # markers of different shapes and sizes: the two ID curves can meet (as at n_tasks 48 of 49)
        axes[0].plot(counts, values, marker=marker, markersize=size, color=colour, label=label)
    for name, label in ACCURACY.items():
        values = _series(result, name)
        observer = "bayes_" in name
        # the model drawn over the references: where it matches one, its line stays in view
        axes[1].plot(
            counts, values, marker="s" if observer else "o", markersize=5 if observer else 6, ls="--" if name.startswith("out_dist/") else "-",
            color="#999999" if observer else OKABE_ITO[0], zorder=2 if observer else 3, label=label,
        )  # fmt: skip
    for name, label in STRATEGY.items():
        control = "_random_init" in name
        axes[2].plot(
            counts, _series(result, name), marker="s" if control else "o", markersize=5 if control else 6, ls="--" if name.endswith("/ood") else "-",
            color="#999999" if control else OKABE_ITO[0], label=label,
        )  # fmt: skip
    axes[2].set_ylim(-0.03, 1.03)
    axes[2].set_ylabel("w, weight of the ID observer")
    axes[2].set_title("strategy: 1 switchboard, 0 general algorithm", fontsize=10)
    p = result.options["p"]
    axes[0].set_yscale("log")
    plain_log_ticks(axes[0].yaxis)
    axes[0].set_ylabel("KL(observer ‖ model), nats/token")
    axes[1].set_ylabel("accuracy at the z positions")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].axhline(1 / p, color="#555555", lw=0.8, ls=":", label=f"chance, 1/p = {1 / p:.3f}")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.xaxis.set_minor_locator(NullLocator())  # x only: the y axis labels minor ticks where its KL range is under a decade
        ax.set_xlabel(f"training task vectors n_tasks (of p² = {p * p})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    seeds = result.options["seeds"]
    model = "".join(f", {name} {value}" for name, value in result.options.get("model", {}).items())  # fields set over the preset's
    fig.suptitle(
        f"{result.options['preset']}{model}: the switchboard or the general algorithm (end of training, "
        f"{'median over ' + counted(seeds, 'seed') if seeds != 1 else 'one seed'}, {result.options['steps']:,} steps)", fontsize=10,
    )  # fmt: skip
    return save_figure(fig, folder, stem)
