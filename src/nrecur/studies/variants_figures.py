"""The variants study's figures, drawn from ``variants.json`` alone (:func:`plot_variants`).

* ``variants_difficulty``: per variant and kind, the Bayes floor, the final KL and the steps to the KL
  threshold, each seed a point (hollow at the right edge: not reached), the default's mean as a line.
* ``variants_dynamics_KIND``: per variant, its KL and loss curves beside the default's (grey), and the
  period heads' margin over uniform attention at every checkpoint (they *form* where it crosses the margin).
* ``variants_verdicts``: every measure of every variant against the default — the gap in units of the seed
  spread, ▲/▼ where it exceeds it.
* ``variants_algorithm_KIND``: the main algorithm measures per seed, the default's range shaded and the
  first control (the initialization, shuffled targets or the observer) as a grey cross.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nrecur.analysis.figures.common import OKABE_ITO, pyplot, save_figure

__all__ = ["ALGORITHM_PANELS", "plot_variants"]

ALGORITHM_PANELS = (
    "heads.period_score", "heads.previous_token", "heads.induction", "period_heads_step",
    "probes.r2_linear/period", "probes.r2_mlp/period", "probes.r2_linear/target", "probes.r2_mlp/target",
    "probes.r2_linear/countdown", "probes.r2_mlp/countdown", "patching.moved_best/resid", "patching.moved_best/attn_out",
    "patching.moved_best/mlp_out", "patching.moved_best/head", "progress.restricted_gap", "progress.excluded_gap",
    "updates.learning_rate/transition", "updates.discreteness/transition", "updates.learning_rate/noise", "failure.overreaction",
    "prior.static_target_kl", "prior.behavioural_target_kl", "prior.static_period_kl", "prior.behavioural_period_kl",
)  # fmt: skip
"""The measures the algorithm figure draws (those a kind has no value of are left out)."""

KIND_MARKERS = {"stochastic": "o", "deterministic": "s"}


def plot_variants(data: dict, folder: str | Path) -> list[Path]:
    """Every figure of the study (see the module docstring); returns the paths written."""
    runs = data.get("runs", [])
    if not runs:
        return []
    paths = plot_difficulty(data, folder)
    for kind in dict.fromkeys(r["kind"] for r in runs):
        paths += plot_dynamics(data, kind, folder)
        paths += plot_algorithm(data, kind, folder)
    return paths + plot_verdicts(data, folder)


def _variants(runs: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["variant"] for r in runs))


def plot_difficulty(data: dict, folder) -> list[Path]:
    plt = pyplot()
    runs = data["runs"]
    variants = _variants(runs)
    kinds = list(dict.fromkeys(r["kind"] for r in runs))
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.45 * len(variants) + 2.2), layout="constrained", sharey=True)
    panels = (("bayes_floor", "Bayes floor (nats/token)"), ("final_kl", "final KL(observer ‖ model) (nats/token)"), ("steps_to_threshold", "steps to the KL threshold"))
    for ax, (name, title) in zip(axes, panels):
        finite = [r[name] for r in runs if r.get(name) is not None]
        edge = (max(finite) if finite else 1.0) * 1.08
        for k, kind in enumerate(kinds):
            colour = OKABE_ITO[k]
            default = [r[name] for r in runs if r["kind"] == kind and r["variant"] == "default" and r.get(name) is not None]
            if default:
                ax.axvline(float(np.mean(default)), color=colour, lw=0.8, ls=":")
            for i, variant in enumerate(variants):
                mine = [r for r in runs if r["kind"] == kind and r["variant"] == variant]
                y = i + (k - (len(kinds) - 1) / 2) * 0.22
                reached = [r[name] for r in mine if r.get(name) is not None]
                ax.scatter(reached, [y] * len(reached), color=colour, marker=KIND_MARKERS.get(kind, "o"), s=28, label=kind if i == 0 else None)
                missing = len(mine) - len(reached)
                if missing and name == "steps_to_threshold":
                    ax.scatter([edge] * missing, [y] * missing, facecolors="none", edgecolors=colour, marker=KIND_MARKERS.get(kind, "o"), s=34)
        if name == "steps_to_threshold":
            ax.axvline(edge, color="#999999", lw=0.6)
            ax.text(edge, 1.0, "not reached", transform=ax.get_xaxis_transform(), ha="right", va="bottom", fontsize=8, color="#555555")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_yticks(range(len(variants)), variants)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Difficulty per variant: each seed a point, the default's mean dotted (hollow: threshold not reached within the budget)", fontsize=10)
    return save_figure(fig, folder, "variants_difficulty")


def plot_dynamics(data: dict, kind: str, folder) -> list[Path]:
    plt = pyplot()
    curves = [c for c in data.get("curves", []) if c["kind"] == kind]
    periods = [c for c in data.get("period_curves", []) if c["kind"] == kind]
    variants = [v for v in _variants([r for r in data["runs"] if r["kind"] == kind]) if v != "default"]
    if not variants:
        return []
    fig, axes = plt.subplots(len(variants), 3, figsize=(14, 2.4 * len(variants) + 0.8), layout="constrained", squeeze=False)
    threshold = next((r["kl_threshold"] for r in data["runs"] if r["kind"] == kind), None)
    for row, variant in zip(axes, variants):
        for who, colour, width in (("default", "#999999", 1.0), (variant, OKABE_ITO[0], 1.4)):
            for seed in sorted({c["seed"] for c in curves if c["variant"] == who}):
                mine = [c for c in curves if c["variant"] == who and c["seed"] == seed]
                steps = [c["step"] for c in mine]
                label = f"{who}, seed {seed}"
                row[0].plot(steps, [c["kl"] for c in mine], color=colour, lw=width, label=label)
                row[1].plot(steps, [c["loss"] for c in mine], color=colour, lw=width, label=label)
                if seed == 0 or who == "default":
                    row[1].plot(steps, [c["bayes"] for c in mine], color=colour, lw=0.8, ls="--")
                points = [p for p in periods if p["variant"] == who and p["seed"] == seed]
                row[2].plot([max(p["step"], 1) for p in points], [np.nan if p["period_margin"] is None else p["period_margin"] for p in points], color=colour, lw=width, marker=".")
        margin = next((p["margin"] for p in periods), None)
        if margin is not None:
            row[2].axhline(margin, color="black", lw=0.6, ls=":")
        if threshold is not None:
            row[0].axhline(threshold, color="black", lw=0.6, ls=":")
        row[0].set_yscale("log")
        row[2].set_xscale("log")
        row[0].set_ylabel(variant, fontsize=9)
        for ax in row:
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7, loc="upper right")
    axes[0, 0].set_title("KL(observer ‖ model)\n(dotted: threshold)", fontsize=9)
    axes[0, 1].set_title("eval loss\n(dashed: the observer's, the Bayes floor)", fontsize=9)
    axes[0, 2].set_title("period heads: min over n of best score − uniform\n(dotted: the margin; log steps)", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    fig.suptitle(f"Training dynamics, {kind} task: each variant (blue) beside the default (grey), every seed", fontsize=10)
    return save_figure(fig, folder, f"variants_dynamics_{kind}")


def plot_algorithm(data: dict, kind: str, folder) -> list[Path]:
    plt = pyplot()
    runs = [r for r in data["runs"] if r["kind"] == kind]
    labels = {row["measure"]: row["label"] for row in data.get("comparisons", [])}
    panels = [m for m in ALGORITHM_PANELS if any(r.get(m) is not None for r in runs)]
    if not panels:
        return []
    variants = _variants(runs)
    columns = 4
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(16, 2.9 * rows + 0.6), layout="constrained", squeeze=False)
    for ax, measure in zip(axes.flat, panels):
        default = [r[measure] for r in runs if r["variant"] == "default" and r.get(measure) is not None]
        if default:
            ax.axhspan(min(default), max(default), color="#dddddd", zorder=0)
        control_key = next((key for key in runs[0] if key.startswith(measure + "|")), None)
        for i, variant in enumerate(variants):
            mine = [r for r in runs if r["variant"] == variant]
            values = [r[measure] for r in mine if r.get(measure) is not None]
            ax.scatter([i] * len(values), values, color="black" if variant == "default" else OKABE_ITO[0], s=22, zorder=3)
            if control_key is not None:
                shown = [r[control_key] for r in mine if r.get(control_key) is not None]
                ax.scatter([i + 0.2] * len(shown), shown, color="#888888", marker="x", s=20, zorder=2)
        ax.set_xticks(range(len(variants)), variants, rotation=35, ha="right", fontsize=7)
        control = "" if control_key is None else "\n× " + control_key.split("|", 1)[1]
        ax.set_title(labels.get(measure, measure) + control, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"The algorithm, {kind} task: each seed a dot, the default's range shaded, the first control a grey ×", fontsize=10)
    return save_figure(fig, folder, f"variants_algorithm_{kind}")


def plot_verdicts(data: dict, folder) -> list[Path]:
    plt = pyplot()
    comparisons = data.get("comparisons", [])
    if not comparisons:
        return []
    kinds = list(dict.fromkeys(r["kind"] for r in comparisons))
    measures = list(dict.fromkeys(r["measure"] for r in comparisons))
    labels = {r["measure"]: r["label"] for r in comparisons}
    widths = [len({r["variant"] for r in comparisons if r["kind"] == kind}) for kind in kinds]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 + 1.1 * sum(widths), 0.24 * len(measures) + 2), layout="constrained", squeeze=False, width_ratios=widths)
    for ax, kind in zip(axes[0], kinds):
        variants = list(dict.fromkeys(r["variant"] for r in comparisons if r["kind"] == kind))
        grid = np.full((len(measures), len(variants)), np.nan)
        for r in comparisons:
            if r["kind"] != kind or r["verdict"] == "not measured" or r["gap"] is None:
                continue
            i, j = measures.index(r["measure"]), variants.index(r["variant"])
            spread = r["spread"] or 0.0
            grid[i, j] = np.clip(r["gap"] / spread, -3, 3) if spread > 0 else np.sign(r["gap"]) * 3 * (r["verdict"] != "within the seed spread")
            if r["verdict"] in ("higher", "lower"):
                ax.text(j, i, "▲" if r["verdict"] == "higher" else "▼", ha="center", va="center", fontsize=7)
        image = ax.imshow(grid, cmap="coolwarm", vmin=-3, vmax=3, aspect="auto")
        ax.set_xticks(range(len(variants)), variants, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(measures)), [labels[m] for m in measures] if ax is axes[0][0] else [], fontsize=7)
        ax.set_title(f"{kind}", fontsize=10)
    fig.colorbar(image, ax=axes[0][-1], label="(variant − default) / seed spread, clipped at ±3")
    fig.suptitle("Every measure against the default: ▲/▼ where the gap exceeds the seed spread; blank: not measured", fontsize=10)
    return save_figure(fig, folder, "variants_verdicts")
