"""The in-context learning rate across tasks and models: does the model update as fast as it should?

Stochastic n-recurrence runs over a grid of noise and transition rates
(``p_noise = p_transition = c/n`` for each ``c``), context lengths and model
widths, one sweep; then the ``updates`` analysis (:mod:`nrecur.analysis.updates`)
of every finished run aligns the model's predictions on the rule transitions
of fresh sequences and measures, per event, its *in-context learning rate*
(tokens after the transition until the new target's probability first exceeds
0.5, read to the end of the new rule; "never" — not before the rule ends —
counts as infinitely slow, and a median of "never" is drawn hollow on a row of
its own) and *discreteness index*, beside the exact observer's on the same
events (SPEC §5); each run's initialization gives the control beside them in
``icl_rate.json``.

How to read it: one point per run, the model's median against the observer's,
with the diagonal where they agree — points above it learn more slowly than
the normative learner; a second panel shows the median rate against context
length per width. The observer's rate depends only on the task; the model's
also on its size and context.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nrecur._io import atomic_write_text
from nrecur.analysis.figures.common import OKABE_ITO, pyplot, save_figure
from nrecur.analysis.driver import compute, write_result
from nrecur.analysis.updates import PREDICTORS, default_settle, shortest_context
from nrecur.runs import load_run
from nrecur.sweep import BackendOptions, load_sweep, run_sweep, spec_from_data, study_options
from nrecur.train.presets import STUDY_PRESET, get_preset

__all__ = ["NEVER", "IclRateResult", "icl_rate", "median_rate", "plot_icl_rate"]

MEASURES = ("learning_rate", "discreteness")
SUFFIX = {who: suffix for suffix, who in PREDICTORS}
"""Predictor (``model``, ``observer``, ``random_init``) → the suffix of its figures in the ``updates`` headline."""


@dataclass(frozen=True)
class IclRateResult:
    """Per run: its grid values, final KL, and the median rate and discreteness of the model, the observer and
    the run's initialization (the control)."""

    runs: list[dict]
    options: dict

    def to_json(self) -> dict:
        return {"options": self.options, "runs": self.runs}


def icl_rate(
    out: str | Path,
    preset: str = STUDY_PRESET,
    rates=(0.1, 0.2),
    lengths=(32, 48),
    widths=(32, 64),
    seeds: int = 1,
    train: dict | None = None,
    n_sequences: int = 1024,
    options: BackendOptions = BackendOptions(),
    report=print,
) -> IclRateResult:
    """Train the grid (``rates``: the ``c`` of ``p_noise = p_transition = c/n``) as one sweep in ``out/sweep``,
    run ``updates`` on every finished run (``n_sequences`` fresh sequences each, written into the run's
    ``analysis/``), and write ``out/icl_rate.json`` and the figure."""
    out = Path(out)
    task = get_preset(preset).variant("stochastic").task
    short = [int(n) for n in lengths if int(n) < shortest_context(task)]
    if short:
        raise ValueError(
            f"context lengths {short} leave no room for a transition event of the updates analysis (the rule must have held "
            f"{default_settle(task)} positions before it and a window of min(4 × largest period, length // 2) follow it); "
            f"give lengths >= {shortest_context(task)}"
        )
    rates_as_text = [f"{c:g}/n" for c in rates]
    spec = spec_from_data({
        "name": f"icl-rate-{preset}", "preset": preset, "variant": "stochastic", "seeds": seeds,
        "base": {"train": {"time_budget": 0.0, "log_checkpoints": 0, **(train or {})}},
        "zip": [{"task.p_noise": rates_as_text, "task.p_transition": rates_as_text}],
        "grid": {"model.n_ctx": [int(n) for n in lengths], "model.d_model": [int(d) for d in widths]},
    }, "icl-rate")  # fmt: skip
    run_sweep(spec, out / "sweep", options=study_options(options), report=report)
    frame = load_sweep(out / "sweep")
    runs = []
    for _, row in frame[frame["status"] == "ok"].iterrows():
        run = load_run(row["run_dir"])
        analysis_file = run.folder.analysis_dir / "updates.json"
        earlier = json.loads(analysis_file.read_text()) if analysis_file.exists() else {}
        if earlier.get("step") == run.step and "learning_rate_ceiling/transition" in earlier.get("headline", {}):
            headline = earlier["headline"]  # analysed before: a rerun reuses it
        else:
            result = compute(run, "updates", progress=False, n_sequences=n_sequences, decode=False)
            write_result(result, run.folder.analysis_dir, step=run.step)
            headline = result.headline
        entry = {
            "rate": str(row["task.p_noise"]), "n_ctx": int(row["model.n_ctx"]), "d_model": int(row["model.d_model"]), "seed": int(row["seed"]),
            "final_kl": float(row["final_kl"]), "steps": int(row["steps"]), "run_dir": str(row["run_dir"]),
            "n_events": headline.get("n_events/transition"),
        }  # fmt: skip
        for who in SUFFIX:
            entry[f"learning_rate_{who}"] = median_rate(headline, who)
            value = headline.get(f"discreteness{SUFFIX[who]}/transition")
            entry[f"discreteness_{who}"] = None if value is None or not np.isfinite(value) else float(value)
        runs.append(entry)
    run_options = {"preset": preset, "rates": rates_as_text, "lengths": list(lengths), "widths": list(widths), "seeds": seeds, "n_sequences": n_sequences}
    result = IclRateResult(runs=runs, options=run_options)
    atomic_write_text(out / "icl_rate.json", json.dumps(result.to_json(), indent=1) + "\n")
    plot_icl_rate(result, out)
    return result


NEVER = "never"
"""A median learning rate of "never": at least half of the events' new target stayed at or below 0.5 until
the rule ended (the median counts "never" as slower than any number of tokens). ``None`` means no median at
all (no events)."""


def median_rate(headline: dict, who: str) -> float | str | None:
    """The ``updates`` headline's median learning rate of ``who`` (``model``, ``observer`` or ``random_init``)
    after transitions: tokens, :data:`NEVER`, or None without events. A headline read back from JSON holds
    None for an infinite median; its share of "never" events (at least half) tells the two apart."""
    value = headline.get(f"learning_rate{SUFFIX[who]}/transition")
    if value is not None and np.isfinite(value):
        return float(value)
    never = headline.get(f"never{SUFFIX[who]}/transition")
    return NEVER if value == np.inf or (never is not None and never >= 0.5) else None


def plot_icl_rate(result: IclRateResult, folder: str | Path, stem: str = "icl_rate") -> list[Path]:
    """Model against observer (learning rate, discreteness), and the model's rate against context length.

    A median learning rate of "never" (the new target not above 0.5 before the rule ended in at least half of
    the events) is drawn as a hollow marker on a row of its own above the finite values, so no run goes missing."""
    plt = pyplot()
    frame = pd.DataFrame(result.runs)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    if frame.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "no finished run", ha="center", va="center", transform=ax.transAxes)
        return save_figure(fig, folder, stem)
    for who in ("model", "observer"):  # "never" is slower than any number of tokens; no median at all is left out
        frame[f"learning_rate_{who}"] = frame[f"learning_rate_{who}"].replace(NEVER, np.inf).astype(float)
        frame[f"discreteness_{who}"] = frame[f"discreteness_{who}"].astype(float)
    finite_rates = frame[["learning_rate_model", "learning_rate_observer"]].to_numpy()
    finite_rates = finite_rates[np.isfinite(finite_rates)]
    never = (finite_rates.max() if finite_rates.size else 0.0) + 1.0
    rates = sorted(frame["rate"].unique())
    widths = sorted(frame["d_model"].unique())
    markers = "os^Dv"

    def draw(ax, x, y, i, j, **style):
        """Finite points filled; a "never" (inf) on either axis hollow on the ``never`` row or column; NaN left out."""
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        keep = ~(np.isnan(x) | np.isnan(y))
        x, y = x[keep], y[keep]
        colour, marker = OKABE_ITO[i % len(OKABE_ITO)], markers[j % len(markers)]
        late = np.isinf(x) | np.isinf(y)
        ax.scatter(x[~late], y[~late], color=colour, marker=marker, s=30, **style)
        if late.any():
            ax.scatter(np.where(np.isinf(x), never, x)[late], np.where(np.isinf(y), never, y)[late], facecolors="none", edgecolors=colour, marker=marker, s=40)

    for ax, measure, unit in zip(axes[:2], MEASURES, ("tokens after the transition", "0: gradual, 1: a jump")):
        for i, rate in enumerate(rates):
            for j, width in enumerate(widths):
                part = frame[(frame["rate"] == rate) & (frame["d_model"] == width)]
                draw(ax, part[f"{measure}_observer"], part[f"{measure}_model"], i, j, label=f"p = {rate}, d_model {width}")
        values = frame[[f"{measure}_observer", f"{measure}_model"]].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        low, high = (values.min(), values.max()) if values.size else (0.0, 1.0)
        ax.plot([low, high], [low, high], color="#999999", ls=":", lw=1)
        ax.set_xlabel(f"observer's median {measure.replace('_', ' ')} ({unit})")
        ax.set_ylabel(f"model's median {measure.replace('_', ' ')}")
        ax.set_title(f"{measure.replace('_', ' ')} after a transition: model vs observer", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    ax = axes[2]
    lengths = sorted(frame["n_ctx"].unique())
    dodge = 0.012 * (max(lengths) - min(lengths) or 1)  # the widths side by side, not on top of each other
    for i, rate in enumerate(rates):
        for j, width in enumerate(widths):
            part = frame[(frame["rate"] == rate) & (frame["d_model"] == width)].groupby("n_ctx")
            model = part["learning_rate_model"].median()  # "never" counts as infinitely slow, not as missing
            observer = part["learning_rate_observer"].median()
            x = model.index.to_numpy(dtype=float) + (j - (len(widths) - 1) / 2) * dodge
            colour = OKABE_ITO[i % len(OKABE_ITO)]
            ax.plot(x, np.where(np.isfinite(model.values), model.values, never), color=colour, lw=1, alpha=0.6)
            draw(ax, x, model.values, i, j, label=f"model, p = {rate}, d_model {width}")
            ax.plot(observer.index, observer.values, ls=":", color=colour, lw=1)
    ax.set_xticks(lengths)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("median learning rate (tokens)")
    ax.set_title("learning rate against context length (dotted: observer)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    label = {"fontsize": 7, "color": "#555555"}
    if np.isinf(frame["learning_rate_model"]).any():
        for ax in (axes[0], axes[2]):
            ax.axhline(never, color="#999999", lw=0.6)
            ax.text(0.01, never, " never (hollow)", transform=ax.get_yaxis_transform(), va="bottom", **label)
    if np.isinf(frame["learning_rate_observer"]).any():
        axes[0].axvline(never, color="#999999", lw=0.6)
        axes[0].text(never, 0.01, " observer: never (hollow)", transform=axes[0].get_xaxis_transform(), rotation=90, va="bottom", **label)
    return save_figure(fig, folder, stem)
