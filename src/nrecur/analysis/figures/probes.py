"""Figures of the probes: each headline beside its controls, the scores at every hook, the linear probe's reading."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nrecur.analysis.figures.common import OKABE_ITO, legend_outside, pyplot, save_figure

__all__ = ["draw"]

CONTROLS = (("trained", "trained model", OKABE_ITO[0]), ("random_init", "its initialization", "#999999"), ("shuffled", "shuffled targets", "#DDDDDD"))
"""Column (:data:`~nrecur.analysis.probes.Column`), label and colour of the trained model's bar and its controls'."""


def draw(result, folder: Path) -> list[Path]:
    """``probes_headline``, ``probes_r2``, ``probes_scatter`` and ``probes_by_position``."""
    return _headline(result, folder) + _tables(result, folder) + _scatter(result, folder) + _by_position(result, folder)


def _headline(result, folder: Path) -> list[Path]:
    """Per kind of probe, each quantity's headline figure as a bar beside its controls' bars."""
    plt = pyplot()
    kinds = [
        ("r2_linear", "ridge probe, best hook: held-out R²"),
        ("r2_linear_concat", "ridge probe, all hooks concatenated: held-out R²"),
        ("r2_mlp", "MLP probe, best hook: held-out R²"),
        ("kl_softmax", "softmax probe, best hook: held-out KL (nats; lower is better)"),
    ]
    kinds = [(name, title) for name, title in kinds if result.at_read_hook(name, "trained")]
    columns = min(2, len(kinds))
    rows = -(-len(kinds) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.6 * columns, 3.6 * rows + 0.9), squeeze=False, layout="constrained")
    for ax in axes.ravel()[len(kinds) :]:
        ax.axis("off")
    for ax, (name, title) in zip(axes.ravel(), kinds):
        read = {column: result.at_read_hook(name, column) for column, _, _ in CONTROLS}
        quantities = [q for q in result.quantities if q in read["trained"]]
        x = np.arange(len(quantities))
        for offset, (column, label, colour) in zip((-0.27, 0.0, 0.27), CONTROLS):
            values = [read[column][q] for q in quantities]
            ax.bar(x + offset, values, width=0.27, color=colour, edgecolor="#555555", linewidth=0.5, label=label)
        ax.axhline(0, color="#555555", lw=0.8)
        ax.set_xticks(x, quantities, rotation=20, ha="right", fontsize=10)
        ax.set_title(title, fontsize=11)
        ax.tick_params(labelsize=10)
        ax.grid(axis="y", alpha=0.3)
        if name.startswith("r2"):
            ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.05)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=10, frameon=False)
    fig.suptitle("each probe on the trained model, beside the same probe on the run's initialization and on shuffled targets", fontsize=12)
    return save_figure(fig, folder, "probes_headline")


def _tables(result, folder: Path) -> list[Path]:
    """Held-out R² at every hook (rows) for every quantity (columns): each kind of probe (rows of panels) on the
    trained model, its initialization and shuffled targets (columns of panels)."""
    plt = pyplot()
    kinds = [(label, table) for label, table in (("ridge", result.r2_linear), ("MLP", result.r2_mlp), ("softmax", result.r2_softmax)) if table]
    columns = (("trained", "trained model"), ("random_init", "initialization"), ("shuffled", "shuffled targets"))
    fig, axes = plt.subplots(
        len(kinds), 3, figsize=(13, (0.4 * len(result.hooks) + 1.9) * len(kinds) + 0.6), squeeze=False, sharey=True, layout="constrained"
    )
    image = None
    for row, (kind, table) in zip(axes, kinds):
        quantities = [q for q in result.quantities if q in table.trained]
        for ax, (column, label) in zip(row, columns):
            values = getattr(table, column)
            grid = np.array([[values.get(q, {}).get(h, np.nan) for q in quantities] for h in result.hooks], dtype=float)
            image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set_xticks(range(len(quantities)), quantities, rotation=30, ha="right", fontsize=10)
            ax.set_yticks(range(len(result.hooks)), result.hooks, fontsize=10)
            ax.set_title(f"{kind} probe, {label}", fontsize=11)
            for (i, j), value in np.ndenumerate(grid):
                if not np.isnan(value):
                    text = f"{value:.2f}".replace("-0.00", "0.00")
                    ax.text(j, i, text, ha="center", va="center", color="white" if value < 0.6 else "black", fontsize=10)
    fig.colorbar(image, ax=axes, shrink=0.5, label="held-out R² (colours clipped to 0–1)")
    fig.suptitle("held-out R² of each probe at every hook point (blank: that probe is not fitted there)", fontsize=12)
    return save_figure(fig, folder, "probes_r2")


def _scatter(result, folder: Path) -> list[Path]:
    """The trained model's linear probe against the observer on held-out positions, per quantity."""
    plt = pyplot()
    columns = min(3, len(result.quantities))
    rows = -(-len(result.quantities) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.4 * rows + 0.5), squeeze=False, layout="constrained")
    for ax in axes.ravel()[len(result.quantities) :]:
        ax.axis("off")
    for ax, quantity in zip(axes.ravel(), result.quantities):
        data = result.scatter[quantity]
        hook = result.best_hook[quantity]
        ax.scatter(data.truth, data.linear, s=3, alpha=0.3, color=OKABE_ITO[0])
        ax.plot([0, 1], [0, 1], color="#999999", lw=1)
        ax.set_xlabel("observer (first component)", fontsize=10)
        ax.set_ylabel("ridge probe", fontsize=10)
        ax.tick_params(labelsize=10)
        ax.set_title(f"{quantity} @ {hook}\nR² {result.r2_linear.trained[quantity][hook]:.3f}", fontsize=10)
    fig.suptitle("the trained model's ridge probe at its best hook against the observer (held-out positions)", fontsize=12)
    return save_figure(fig, folder, "probes_scatter")


def _by_position(result, folder: Path) -> list[Path]:
    """Held-out R² of the trained model's ridge probe at its best hook, per position."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for colour, quantity in zip(OKABE_ITO * 2, result.quantities):
        ax.plot(result.r2_by_position[quantity], color=colour, label=quantity)
    ax.set_xlabel("position (having seen tokens 0..i)", fontsize=10)
    ax.set_ylabel("held-out R², ridge probe at the best hook", fontsize=10)
    ax.set_title("how readable each quantity is along the sequence (trained model)", fontsize=11)
    ax.set_ylim(-0.1, 1.02)
    ax.tick_params(labelsize=10)
    legend_outside(ax)
    ax.grid(alpha=0.3)
    return save_figure(fig, folder, "probes_by_position")
