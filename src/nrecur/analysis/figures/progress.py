"""Figures of the progress measures: one run's measures over its checkpoints, and several runs side by side."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from nrecur.analysis.figures.common import OKABE_ITO, legend_outside, plain_log_ticks, pyplot, save_figure

__all__ = ["draw", "draw_side_by_side"]

LOSSES = (("loss", "full model"), ("loss_restricted", "restricted: period heads only"), ("loss_excluded", "excluded: period heads ablated"))
"""Measures drawn in the loss panel, and their labels."""


def _steps(result) -> np.ndarray:
    return np.maximum(np.asarray(result.steps, dtype=float), 1)  # step 0 drawn at 1 on the log axis


def _losses(ax, result, legend: bool) -> None:
    steps = _steps(result)
    for colour, (name, label) in zip(OKABE_ITO, LOSSES):
        ax.plot(steps, result.series(name), color=colour, marker="o", ms=4, label=label)
        ax.axhline(getattr(result.random_init, name), color=colour, ls="--", lw=1)
    ax.axhline(result.loss_bayes, color="#000000", ls=":", lw=1.2, label="observer (Bayes)")
    ax.plot([], [], color="#777777", ls="--", lw=1, label="dashed: the same at initialization")
    if legend:
        legend_outside(ax)


def _scores(ax, result, legend: bool) -> None:
    steps = _steps(result)
    for index, (colour, n) in enumerate(zip(OKABE_ITO * 2, result.periods)):
        ax.plot(steps, [m.period_score[index] for m in result.checkpoints], color=colour, marker="o", ms=4, label=f"best period score, n={n}")
        ax.axhline(result.period_baseline[index], color=colour, ls=":", lw=1)
    for style, quantity in zip(("--", "-."), sorted(result.random_init.probe_r2)):
        ax.plot(steps, [m.probe_r2[quantity] for m in result.checkpoints], style, color="#000000", lw=1.2, label=f"probe R², {quantity}")
    ax.set_ylim(-0.05, 1.02)
    if legend:
        legend_outside(ax)


def _marks(ax, result) -> None:
    """The run's memorization and threshold steps, and where an intervention was active (shaded)."""
    last = _steps(result)[-1]
    for start, end in dict.fromkeys(result.intervention_steps):
        ax.axvspan(max(start, 1), end if end is not None else last, color="#999999", alpha=0.15, lw=0)
    for step, text in ((result.memorization_step, "memorized"), (result.threshold_step, "KL ≤ threshold")):
        if step is not None:
            ax.axvline(max(step, 1), color="#555555", ls="--", lw=0.8)
            ax.annotate(text, (max(step, 1), 0.02), xycoords=("data", "axes fraction"), fontsize=10, rotation=90, va="bottom", ha="right")


def _llc(ax, result) -> None:
    """The LLC at every checkpoint with its spread over chains, at initialization (dashed), and the run's held-out
    KL on a second axis."""
    steps = _steps(result)
    means = np.array([e.mean for e in result.llc])
    spread = np.array([e.std for e in result.llc])
    ax.errorbar(steps, means, yerr=spread, color="#009E73", marker="o", ms=4, capsize=3, label="LLC (± sd over chains)")
    if result.llc_random_init is not None:
        ax.axhline(result.llc_random_init.mean, color="#009E73", ls="--", lw=1, label="LLC at initialization")
    ax.set_ylabel("local learning coefficient λ̂", fontsize=10)
    if "eval/kl" in result.logged:
        twin = ax.twinx()
        curve = result.logged["eval/kl"]
        twin.plot(np.maximum(curve["step"], 1), curve["value"], color="#D55E00", lw=1.2, label="held-out KL (the run's log)")
        twin.set_yscale("log")
        plain_log_ticks(twin.yaxis)
        twin.set_ylabel("KL(observer ‖ model), nats/token (log)", fontsize=10)
        twin.tick_params(labelsize=10)
        handles = [*ax.get_legend_handles_labels()[0], *twin.get_legend_handles_labels()[0]]
        ax.legend(handles, [h.get_label() for h in handles], fontsize=10)
    else:
        ax.legend(fontsize=10)
    ax.set_title("local learning coefficient (SGLD) beside the held-out KL", fontsize=11)


def _strategy(ax, result) -> None:
    """The strategy weight w over training (from the run's strategy result), or a note that there is none."""
    if not result.strategy_weight:
        ax.text(0.5, 0.5, "no strategy result for this checkpoint\n(nrecur analyze RUN --what strategy, then progress)", ha="center", va="center",
                transform=ax.transAxes, fontsize=10)  # fmt: skip
        ax.set_title("strategy weight w", fontsize=11)
        return
    for colour, (split, label) in zip(("#0072B2", "#E69F00"), (("id", "in-distribution"), ("ood", "out-of-distribution"))):
        curve = result.strategy_weight[split]
        ax.plot(np.maximum(curve["step"], 1), curve["value"], color=colour, marker="o", ms=4, label=label)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("w (1: memorizing observer, 0: general)", fontsize=10)
    ax.set_title("strategy weight w (the strategy analysis)", fontsize=11)
    ax.legend(fontsize=10)


def draw(result, folder: Path) -> list[Path]:
    """``progress``: the losses with the period heads kept and ablated, the logged curves, the period scores and
    probe R², and the weight norms, over the checkpoints; each beside its value at initialization. With the LLC
    estimated, a third row: the LLC beside the held-out KL, and the strategy weight where the run has it."""
    plt = pyplot()
    rows = 3 if result.llc else 2
    fig, axes = plt.subplots(rows, 2, figsize=(11, 4 * rows), sharex=True, layout="constrained")
    ax = axes[0, 0]
    _losses(ax, result, legend=True)
    ax.set_ylabel("cross-entropy (nats/token)", fontsize=10)
    heads = ", ".join(result.period_heads)
    ax.set_title(textwrap.fill(f"loss on fresh sequences; period heads {heads}", 55), fontsize=11)
    ax = axes[0, 1]
    for name, style, colour in (("train/loss", "-", "#CC79A7"), ("eval/model_ce", "-", "#0072B2"), ("eval/kl", "-", "#D55E00")):
        if name in result.logged:
            curve = result.logged[name]
            ax.plot(np.maximum(curve["step"], 1), curve["value"], style, color=colour, lw=1.2, label=name)
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.set_ylabel("nats/token (log)", fontsize=10)
    ax.set_title("the run's own log: training loss, held-out loss, held-out KL(observer ‖ model)", fontsize=11)
    ax.legend(fontsize=10)
    ax = axes[1, 0]
    _scores(ax, result, legend=True)
    ax.set_ylabel("score / R²", fontsize=10)
    ax.set_title("best head's period score (dotted: uniform attention) and probe R²", fontsize=11)
    ax = axes[1, 1]
    steps = _steps(result)
    for colour, name, label in (("#D55E00", "weight_norm_sq", "all parameters"), ("#0072B2", "decayed_norm_sq", "decayed: matrices, embeddings")):
        ax.plot(steps, result.series(name), color=colour, marker="o", ms=4, label=label)
        ax.axhline(getattr(result.random_init, name), color=colour, ls="--", lw=1)
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.set_ylabel("squared weight norm (log)", fontsize=10)
    ax.set_title("weight norm (dashed: at initialization)", fontsize=11)
    ax.legend(fontsize=10)
    if result.llc:
        _llc(axes[2, 0], result)
        _strategy(axes[2, 1], result)
    for ax in axes.ravel():
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=10)
        _marks(ax, result)
    for ax in axes[-1]:
        ax.set_xlabel("training step (log)", fontsize=10)
    return save_figure(fig, folder, "progress")


def draw_side_by_side(results: dict, folder: str | Path, stem: str = "progress_side_by_side") -> list[Path]:
    """Progress of several runs in columns (label → :class:`~nrecur.analysis.progress.ProgressResult`), rows on
    shared axes: the losses against the observer, the held-out KL from each run's log, and the best period scores
    with the probe R². Steps where an intervention was active are shaded."""
    plt = pyplot()
    columns = len(results)
    width = min(11.5, 3.6 * columns + 1)
    fig, axes = plt.subplots(3, columns, figsize=(width, 10), sharex=True, sharey="row", squeeze=False, layout="constrained")
    for column, (label, result) in enumerate(results.items()):
        _losses(axes[0, column], result, legend=False)
        seen = "measured with them where active" if result.measured_with_interventions else "the bare model measured"
        described = f"{', '.join(result.interventions)} ({seen})" if result.interventions else "no intervention"
        axes[0, column].set_title(f"{label}\n" + textwrap.fill(described, 40), fontsize=10)
        ax = axes[1, column]
        if "eval/kl" in result.logged:
            curve = result.logged["eval/kl"]
            ax.plot(np.maximum(curve["step"], 1), curve["value"], color="#0072B2", label="held-out KL (the run's log)")
        ax.set_yscale("log")
        _scores(axes[2, column], result, legend=False)
        axes[2, column].set_xlabel("training step (log)", fontsize=10)
        for ax in axes[:, column]:
            ax.set_xscale("log")
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=10)
            _marks(ax, result)
    axes[0, 0].set_ylabel("cross-entropy (nats/token)", fontsize=10)
    axes[1, 0].set_ylabel("KL(observer ‖ model), nats/token", fontsize=10)
    axes[2, 0].set_ylabel("best head's period score / R²", fontsize=10)
    handles = {}
    for ax in axes[[0, 1, 2], -1]:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
    handles["intervention active"] = plt.Rectangle((0, 0), 1, 1, color="#999999", alpha=0.3)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=3, fontsize=10)
    return save_figure(fig, folder, stem)
