"""Figures of the strategy analysis: the weight of the memorizing observer over training, and by position."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nrecur.analysis.figures.common import OKABE_ITO, plain_log_ticks, pyplot, save_figure

__all__ = ["draw"]

SPLIT_NAMES = {"id": "in-distribution", "ood": "out-of-distribution"}
COLOURS = {"id": OKABE_ITO[0], "ood": OKABE_ITO[3]}


def _steps(steps) -> np.ndarray:
    return np.maximum(np.asarray(steps, dtype=float), 1)  # step 0 drawn at 1 on the log axis


def _mark_steps(ax, result) -> None:
    for step, label, style in ((result.fit_step, "fit step", "--"), (result.generalization_step, "generalization step", ":")):
        if step is not None:
            ax.axvline(max(step, 1), color="#555555", ls=style, lw=1, label=label)


def draw(result, folder: Path) -> list[Path]:
    """``strategy.png``: w over training (both kinds of sequence), the KL to each observer with the threshold,
    the KL left unexplained; ``strategy_by_position.png``: w and the unexplained KL at each position at the last
    checkpoint, beside the initialization's."""
    plt = pyplot()
    steps = _steps(result.steps)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
    for split, name in SPLIT_NAMES.items():
        colour = COLOURS[split]
        axes[0].plot(steps, result.series(split, "w"), color=colour, marker="o", ms=4, label=f"{name} sequences")
        axes[0].axhline(getattr(result.random_init, split).w, color=colour, ls="--", lw=1)
        axes[2].plot(steps, result.series(split, "kl_unexplained"), color=colour, marker="o", ms=4, label=f"{name} sequences")
        axes[2].axhline(getattr(result.random_init, split).kl_unexplained, color=colour, ls="--", lw=1)
    axes[0].plot([], [], color="#777777", ls="--", lw=1, label="dashed: at initialization")
    axes[0].set_ylim(-0.03, 1.03)
    axes[0].set_ylabel("w: weight of O_mem (1 memorizes, 0 generalizes)")
    axes[0].set_title("strategy weight w over training", fontsize=11)
    curves = (
        ("id", "kl_mem", "KL(O_mem ‖ M), in-distribution", "-"),
        ("ood", "kl_gen", "KL(O_gen ‖ M), out-of-distribution", "-"),
        ("id", "kl_gen", "KL(O_gen ‖ M), in-distribution", ":"),
        ("ood", "kl_mem", "KL(O_mem ‖ M), out-of-distribution", ":"),
    )
    for split, name, label, style in curves:
        values = np.asarray(result.series(split, name), dtype=float)
        if np.isfinite(values).any():
            axes[1].plot(steps, np.maximum(values, 1e-6), color=COLOURS[split], ls=style, marker="o", ms=3, label=label)
    axes[1].axhline(result.kl_threshold, color="#000000", lw=0.8, label=f"threshold {result.kl_threshold:g}")
    axes[1].set_yscale("log")
    plain_log_ticks(axes[1].yaxis)
    axes[1].set_ylabel("nats/token")
    axes[1].set_title("KL to each observer", fontsize=11)
    axes[2].set_yscale("log")
    plain_log_ticks(axes[2].yaxis)
    axes[2].set_ylabel("min over w of KL(M ‖ mixture), nats/token")
    axes[2].set_title("KL that neither strategy explains", fontsize=11)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("training step (log)")
        _mark_steps(ax, result)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    fig.suptitle(f"Strategy over training (step {result.step}, {result.options.n_sequences} sequences of each kind)", fontsize=12)
    paths = save_figure(fig, folder, "strategy")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    last = result.checkpoints[-1]
    for split, name in SPLIT_NAMES.items():
        mine, control = getattr(last, split), getattr(result.random_init, split)
        positions = np.arange(len(mine.w_by_position))
        axes[0].plot(positions, mine.w_by_position, color=COLOURS[split], marker="o", ms=3, label=f"{name}, step {last.step}")
        axes[0].plot(positions, control.w_by_position, color=COLOURS[split], ls="--", lw=1, label=f"{name}, initialization")
        axes[1].plot(positions, np.maximum(np.asarray(mine.kl_unexplained_by_position, dtype=float), 1e-6), color=COLOURS[split], marker="o", ms=3, label=f"{name}, step {last.step}")
        axes[1].plot(positions, np.maximum(np.asarray(control.kl_unexplained_by_position, dtype=float), 1e-6), color=COLOURS[split], ls="--", lw=1, label=f"{name}, initialization")
    axes[0].set_ylim(-0.03, 1.03)
    axes[0].set_ylabel("w at this position")
    axes[0].set_title("strategy weight by position (gaps: observers agree)", fontsize=11)
    axes[1].set_yscale("log")
    plain_log_ticks(axes[1].yaxis)
    axes[1].set_ylabel("unexplained KL, nats/token")
    axes[1].set_title("KL that neither strategy explains, by position", fontsize=11)
    for ax in axes:
        ax.set_xlabel("position (prediction of the next token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    fig.suptitle(f"Strategy by position at step {last.step}", fontsize=12)
    return paths + save_figure(fig, folder, "strategy_by_position")
