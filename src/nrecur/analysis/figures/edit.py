"""Figures of belief editing: the hold of each method beside its controls, every site, and the hold per rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nrecur.analysis.edit import reads_tokens
from nrecur.analysis.figures.common import OKABE_ITO, pyplot, save_figure

__all__ = ["draw", "draw_by_rule", "draw_hold", "draw_sites"]

METHOD_COLOURS = {"patch": OKABE_ITO[0], "steer": OKABE_ITO[1], "rank_one": OKABE_ITO[2], "subspace": OKABE_ITO[5]}
CONTROL_COLOURS = {"no edit": "#999999", "ceiling": OKABE_ITO[7], "initialization": OKABE_ITO[4]}


def _site(name: str) -> str:
    """``patch[context]@blocks.1.hook_resid_pre`` → ``patch 0..p, L1 resid_pre``."""
    method, _, hook = name.partition("@")
    method = method.replace("[context]", " 0..p").replace("[position]", " p")
    if method.startswith("rank_one"):
        return f"rank-one weight edit, {hook.replace('blocks.', 'L').replace('.hook_mlp_out', ' MLP')} (acts after p too)"
    where = "embeddings" if hook == "blocks.0.hook_resid_pre" else hook.replace("blocks.", "L").replace(".hook_", " ")
    return f"{method}, {where}"


def _method_label(score) -> str:
    label = _site(score.name)
    if score.method == "subspace" and reads_tokens(score.hook):  # the tokens as the first attention reads them
        label += " (token rewrite, like the ceiling)"
    return label + (f" α={score.alpha:g}" if score.method == "steer" else "")


def _read_ticks(result) -> list[str]:
    counted = result.hold_positions_by_read
    return ["p\nedited"] + [f"p+{k}·n*\n{counted[k]:,}" for k in range(1, len(counted))]


def draw(result, folder: Path) -> list[Path]:
    return draw_hold(result, folder) + draw_sites(result, folder) + draw_by_rule(result, folder)


def draw_hold(result, folder: Path) -> list[Path]:
    """Left: the held-out hold rate of the best site of each method beside its random edit, no edit, the ceiling
    and the chosen edit on the initialization. Right: the share with t* most likely at p and at each next target
    position of (n*, t*) (all problems, counted or not)."""
    plt = pyplot()
    height = max(5.6, 0.32 * (2 * len(result.best_by_method) + 3) + 2.5)  # one row per bar
    fig, axes = plt.subplots(1, 2, figsize=(14, height), layout="constrained", gridspec_kw={"width_ratios": [1.3, 1]})
    ax = axes[0]
    best = [result.method(name) for name in dict.fromkeys(result.best_by_method.values())]
    bars = []
    for score in best:
        colour = METHOD_COLOURS.get(score.method, OKABE_ITO[3])
        bars.append((_method_label(score) + (" (hold_rate)" if score.name == result.chosen else ""), score.hold_rate, colour, None))
        bars.append(("random edit of that budget", score.hold_rate_random, colour, "//"))
    bars += [
        ("no edit", result.no_edit.hold_rate, CONTROL_COLOURS["no edit"], None),
        ("ceiling: the context's tokens rewritten", result.ceiling.hold_rate, CONTROL_COLOURS["ceiling"], None),
        ("the chosen edit on the run's initialization", result.hold_rate_random_init, CONTROL_COLOURS["initialization"], None),
    ]
    y = np.arange(len(bars))[::-1]
    for row, (label, value, colour, hatch) in zip(y, bars):
        value = 0.0 if value is None or not np.isfinite(value) else value
        ax.barh(row, value, color="white" if hatch else colour, edgecolor=colour, hatch=hatch, lw=1.5)
        ax.text(value + 0.01, row, f"{value:.2f}", va="center", fontsize=10)
    ax.set_yticks(y, [label for label, *_ in bars], fontsize=10)
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("hold rate: share of counted positions with t* most likely", fontsize=10)
    ax.set_title(f"does the edit hold after p?\n({result.hold_positions} counted positions, held out)", fontsize=11)
    ax.grid(axis="x", alpha=0.3)

    ax = axes[1]
    ticks = np.arange(len(result.no_edit.success))
    for score in best:
        colour = METHOD_COLOURS.get(score.method, OKABE_ITO[3])
        name = _method_label(score) if score.method == "subspace" else score.method.replace("rank_one", "rank-one")
        style = "--" if score.method == "subspace" and ".hook_resid_" in score.hook else "-"  # two subspace edits: the residual one dashed
        ax.plot(ticks, score.success, marker="o", ls=style, color=colour, lw=2, label=name + (" (automatic at p)" if score.success_at_p_automatic else ""))
    ax.plot(ticks, result.no_edit.success, marker="x", ls="--", color=CONTROL_COLOURS["no edit"], label="no edit")
    ax.plot(ticks, result.ceiling.success, marker="s", ls=":", color=CONTROL_COLOURS["ceiling"], label="ceiling (tokens rewritten)")
    ax.set_xticks(ticks, _read_ticks(result), fontsize=10)
    ax.set_ylim(-0.02, 1.05)
    ax.set_ylabel("share with t* most likely", fontsize=10)
    ax.set_xlabel("next target position of (n*, t*)\n(under each: positions counted)", fontsize=10)
    ax.set_title("success at p and at the following\ntarget positions (all problems)", fontsize=11)
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=10, loc="outside lower right", ncols=3)  # below the figure: an axis-anchored legend wider than its axis collapses the layout
    fig.suptitle(
        f"editing the belief to a rule (n*, t*) at positions 0..p = {result.position} of {result.length}: "
        f"{result.held_out_problems} held-out problems, step {result.step}",
        fontsize=12,
    )
    return save_figure(fig, folder, "edit_hold")


def draw_sites(result, folder: Path) -> list[Path]:
    """Every site of every method: held-out hold rate (left) and the mean KL(O* ‖ model) from p on (right)."""
    plt = pyplot()
    methods = list(result.methods)
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.38 * len(methods) + 2.8), layout="constrained", gridspec_kw={"width_ratios": [1, 1]})
    ax = axes[0]
    y = np.arange(len(methods))[::-1]
    for row, score in zip(y, methods):
        colour = METHOD_COLOURS.get(score.method, OKABE_ITO[3])
        value = score.hold_rate if np.isfinite(score.hold_rate) else 0.0
        ax.barh(row, value, color=colour, alpha=1.0 if score.name in result.best_by_method.values() else 0.45)
        ax.text(value + 0.01, row, f"{value:.2f}", va="center", fontsize=10)
    for label, value, style in (("no edit", result.no_edit.hold_rate, "--"), ("ceiling", result.ceiling.hold_rate, ":")):
        ax.axvline(value, color=CONTROL_COLOURS[label], ls=style, lw=1.5, label=f"{label} {value:.2f}")
    ax.set_yticks(y, [_method_label(s) for s in methods], fontsize=10)
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("hold rate (held out)", fontsize=10)
    ax.set_title("hold rate of every site\n(solid: each method's best on the selection problems)", fontsize=11)
    ax.legend(fontsize=10, loc="lower right")
    ax.grid(axis="x", alpha=0.3)

    ax = axes[1]
    p = result.position
    positions = np.arange(p, p + len(result.no_edit.kl))
    for score in methods:
        if score.name in result.best_by_method.values():
            ax.plot(positions, score.kl, color=METHOD_COLOURS.get(score.method, OKABE_ITO[3]), lw=2, label=_method_label(score))
    ax.plot(positions, result.no_edit.kl, color=CONTROL_COLOURS["no edit"], ls="--", label="no edit")
    ax.plot(positions, result.ceiling.kl, color=CONTROL_COLOURS["ceiling"], ls=":", label="ceiling")
    ax.set_yscale("log")
    ax.set_xlabel("position (edits act on 0..p or on p)", fontsize=10)
    ax.set_ylabel("mean KL(O* ‖ model), nats", fontsize=10)
    ax.set_title("distance to the observer of a sequence\nthat followed (n*, t*) all along", fontsize=11)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=10, loc="outside lower right", ncols=3)  # below the figure: an axis-anchored legend wider than its axis collapses the layout
    ax.grid(alpha=0.3)
    return save_figure(fig, folder, "edit_sites")


def draw_by_rule(result, folder: Path) -> list[Path]:
    """The chosen edit's held-out hold rate for every rule ``(n*, t*)``; blank where no position counts."""
    plt = pyplot()
    table = np.asarray(result.by_rule, dtype=float)
    fig, ax = plt.subplots(figsize=(0.7 * table.shape[1] + 3.2, 0.6 * len(result.periods) + 2.0), layout="constrained")
    image = ax.imshow(table, cmap="cividis", vmin=0, vmax=1, aspect="auto")
    for (row, column), value in np.ndenumerate(table):
        text = f"{value:.2f}" if np.isfinite(value) else "–"
        ax.text(column, row, text, ha="center", va="center", fontsize=10, color="black" if np.isfinite(value) and value > 0.5 else "white" if np.isfinite(value) else "grey")
    ax.set_yticks(range(len(result.periods)), [str(n) for n in result.periods], fontsize=10)
    ax.set_xticks(range(table.shape[1]))
    ax.set_ylabel("n*", fontsize=10)
    ax.set_xlabel("t*", fontsize=10)
    ax.set_title(f"hold rate of {_site(result.chosen)} per rule\n(–: the tokens since p reveal the rule at every read)", fontsize=11)
    fig.colorbar(image, ax=ax, label="hold rate")
    return save_figure(fig, folder, "edit_by_rule")
