"""Figures of the causal-variable search: IIA against rank per hook, the best cells beside their controls,
and the geometry of the *what* and *when* subspaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nrecur.analysis.figures.common import OKABE_ITO, pyplot, save_figure

__all__ = ["draw", "draw_best", "draw_hooks", "draw_subspaces"]

VARIABLES = ("what", "when", "both")
GREY = "#888888"


def draw(result, folder: Path) -> list[Path]:
    """IIA per hook, the best cells with their controls, and the subspaces' angles and dimensions."""
    return draw_hooks(result, folder) + draw_best(result, folder) + draw_subspaces(result, folder)


def _ranks(result) -> list[int]:
    return list(result.options.ranks)[: len(result.trained.cells[0].iia["what"])]


def _short(hook: str) -> str:
    parts = hook.split(".")
    return f"L{parts[1]} {parts[2].removeprefix('hook_').replace('_', ' ')}"


def draw_hooks(result, folder: Path) -> list[Path]:
    """Rows: position sets; columns: variables. Each hook's IIA against rank on the trained model (solid) and
    its initialization (dashed), the unintervened floor in grey."""
    plt = pyplot()
    ranks = _ranks(result)
    position_sets = list(dict.fromkeys(cell.positions for cell in result.trained.cells))
    hooks = list(dict.fromkeys(cell.hook for cell in result.trained.cells))
    fig, axes = plt.subplots(len(position_sets), 3, figsize=(10.8, 3.3 * len(position_sets)), sharey=True, squeeze=False, layout="constrained")
    for row, positions in enumerate(position_sets):
        for column, variable in enumerate(VARIABLES):
            ax = axes[row, column]
            for found, style in ((result.trained, "-"), (result.random_init, "--")):
                for cell in found.cells:
                    if cell.positions == positions:
                        colour = OKABE_ITO[hooks.index(cell.hook) % len(OKABE_ITO)]
                        label = _short(cell.hook) if style == "-" else None
                        ax.plot(ranks, cell.iia[variable], style, color=colour, marker="o", markersize=3, label=label)
            ax.axhline(result.trained.iia_no_edit[variable], color=GREY, linewidth=1)
            ax.set_xscale("log", base=2)
            ax.set_xticks(ranks, [str(k) for k in ranks])
            ax.set_ylim(0, 1.02)
            ax.set_title(f"{variable}, {'predicting position' if positions == 'last' else 'all positions'}", fontsize=10)
            if row == len(position_sets) - 1:
                ax.set_xlabel("rank k")
            if column == 0:
                ax.set_ylabel("IIA (held out)")
    axes[0, -1].legend(fontsize=9, loc="upper left", title="trained (dashed: init)", title_fontsize=9)
    fig.suptitle("Interchange-intervention accuracy per hook and rank (grey: no intervention)")
    return save_figure(fig, folder, "causal_hooks")


def draw_best(result, folder: Path) -> list[Path]:
    """Per variable, IIA against rank at its best cell beside the controls of the same call."""
    plt = pyplot()
    ranks = _ranks(result)
    fig, axes = plt.subplots(1, 3, figsize=(10.8, 3.6), sharey=True, layout="constrained")
    for ax, variable in zip(axes, VARIABLES):
        best = result.best[variable]
        cell = result.trained.cells[best.cell]
        init_cell = result.random_init.cells[result.best_random_init[variable].cell]
        ax.plot(ranks, cell.iia[variable], "-o", color=OKABE_ITO[0], label="trained")
        ax.plot(ranks, init_cell.iia[variable], "--o", color=OKABE_ITO[1], label="initialization")
        ax.plot(ranks, cell.iia_random[variable], ":o", color=OKABE_ITO[2], label="random subspace")
        if variable in cell.iia_other_labels:
            ax.plot(ranks, cell.iia_other_labels[variable], "-.o", color=OKABE_ITO[3], label="other variable's labels")
        ax.axhline(result.trained.iia_no_edit[variable], color=GREY, linewidth=1, label="no intervention")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks, [str(k) for k in ranks])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("rank k")
        ax.set_title(f"{variable}: {_short(best.hook)}, {best.positions}", fontsize=10)
    axes[0].set_ylabel("IIA (held out)")
    axes[0].legend(fontsize=9, loc="upper left")  # the first panel has every line (both has no other variable)
    fig.suptitle("Best cell of each variable beside its controls")
    return save_figure(fig, folder, "causal_best")


def draw_subspaces(result, folder: Path) -> list[Path]:
    """Left: principal angles between the *what* and *when* subspaces at the shared cell, beside random
    subspaces of the same dimensions (the expected overlap as an angle). Right: the dimension each variable
    needs, their sum, and the state counts of a factored and a joint code."""
    plt = pyplot()
    head = result.headline
    cell = result.trained.cells[result.shared_cell]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.8, 3.6), layout="constrained")
    angles = np.asarray(cell.angles, dtype=float)
    left.bar(np.arange(1, len(angles) + 1), angles, color=OKABE_ITO[0], label="what vs when")
    random_angle = float(np.degrees(np.arccos(np.sqrt(head["subspace_overlap_random"]))))
    left.axhline(random_angle, color=GREY, linestyle="--", label="random subspaces (mean cos²)")
    left.axhline(90, color="black", linewidth=0.8)
    left.set_ylim(0, 95)
    left.set_xlabel("principal angle index")
    left.set_ylabel("angle (degrees)")
    left.set_title(f"{_short(cell.hook)}, {cell.positions}: dims what {cell.dims['what']}, when {cell.dims['when']}", fontsize=10)
    left.legend(fontsize=9, loc="lower right")
    names = ["what", "when", "what + when", "both"]
    values = [head["dim_what"], head["dim_when"], head["dim_what"] + head["dim_when"], head["dim_both"]]
    controls = [head["dim_what_random_init"], head["dim_when_random_init"], head["dim_what_random_init"] + head["dim_when_random_init"], head["dim_both_random_init"]]
    x = np.arange(len(names))
    right.bar(x - 0.2, values, 0.4, color=OKABE_ITO[0], label="trained")
    right.bar(x + 0.2, controls, 0.4, color=OKABE_ITO[1], label="initialization")
    right.set_xticks(x, names)
    right.set_ylabel("rank reaching the best IIA")
    right.set_title(f"states: factored {head['dim_factored_states']:.0f}, joint {head['dim_joint_states']:.0f} dimensions", fontsize=10)
    right.legend(fontsize=9)
    fig.suptitle("What and when: subspace angles and dimensions")
    return save_figure(fig, folder, "causal_subspaces")
