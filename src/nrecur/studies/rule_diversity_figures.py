"""The rule-diversity study's figures, drawn from its result alone (:func:`plot_rule_diversity`).

* ``rule_diversity``: final KLs, final ``w`` and the in-context grokking delay against ``K`` (colour:
  weight decay), K\\* marked on the KL panel.
* ``rule_diversity_phase``: ``w`` against ``K`` and training step (the first seed), in and out of distribution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nrecur.analysis.figures.common import OKABE_ITO, plain_log_ticks, pyplot, save_figure
from nrecur.report.words import counted

__all__ = ["plot_rule_diversity"]


def _median(trials: list[dict], name: str, k: int, decay: float) -> float:
    values = [t[name] for t in trials if t["n_rules"] == k and t["weight_decay"] == decay and t.get(name) is not None]
    return float(np.median(values)) if values else np.nan


def plot_rule_diversity(result, folder: str | Path, stem: str = "rule_diversity") -> list[Path]:
    """``rule_diversity.png``: final KLs, final ``w`` and the fit/generalization delay against K (colour: weight
    decay); ``rule_diversity_phase.png``: ``w`` against K and training step (one seed), in and out of distribution.
    ``result``: a :class:`~nrecur.studies.rule_diversity.RuleDiversityResult` (its ``trials``, ``thresholds``,
    ``phase`` and ``options``; not imported here, since the study imports this module to draw)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullLocator

    plt = pyplot()
    o = result.options
    counts, decays = o["n_rules"], o["decays"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 6.2), layout="constrained", gridspec_kw={"width_ratios": [1.15, 1.15, 1.0]})
    kls = (("out_dist/kl", "-", "KL(O_gen ‖ M), held-out rules"), ("in_dist_mem/kl", ":", "KL(O_mem ‖ M), training rules"))
    weights = (("w_final/id", "-", "in-distribution sequences"), ("w_final/ood", "--", "out-of-distribution sequences"))
    for colour, decay in zip(OKABE_ITO, decays):
        for name, style, _ in kls:
            axes[0].plot(counts, [_median(result.trials, name, k, decay) for k in counts], color=colour, ls=style, marker="o", ms=5)
        for name, style, _ in weights:
            axes[1].plot(counts, [_median(result.trials, name, k, decay) for k in counts], color=colour, ls=style, marker="o", ms=5)
        axes[1].plot(counts, [_median(result.trials, "w_final_random_init/ood", k, decay) for k in counts], color=colour, ls="none", marker="x", ms=7)
        axes[2].plot(counts, [_median(result.trials, "delay", k, decay) for k in counts], color=colour, marker="o", ms=5)
        k_star = next(e["k_star"] for e in result.thresholds if e["weight_decay"] == decay)
        if k_star is not None:
            axes[0].axvline(k_star, color=colour, lw=1, ls="-.")
    axes[0].axhline(o["kl_threshold"], color="#777777", lw=1.5)
    legend = [(Line2D([], [], color=c, marker="o"), f"weight decay {d:g}") for c, d in zip(OKABE_ITO, decays)]
    legend += [(Line2D([], [], color="#000000", ls=style), f"left: {label}") for _, style, label in kls]
    legend += [(Line2D([], [], color="#000000", ls="-."), "left: K*"), (Line2D([], [], color="#777777", lw=1.5), f"left: threshold {o['kl_threshold']:g}")]
    legend += [(Line2D([], [], color="#000000", ls=style), f"middle: w, {label}") for _, style, label in weights]
    legend += [(Line2D([], [], color="#000000", ls="none", marker="x"), "middle: w of the run's initialization, out-of-distribution (control)")]
    axes[0].set_yscale("log")
    plain_log_ticks(axes[0].yaxis)
    axes[0].set_ylabel("final KL, nats/token")
    axes[0].set_title("KL at the end of training", fontsize=11)
    axes[1].set_ylim(-0.03, 1.03)
    axes[1].set_ylabel("w (1: O_mem, 0: O_gen)")
    axes[1].set_title("strategy weight at the end of training", fontsize=11)
    axes[2].axhline(0, color="#555555", lw=0.8)
    if not any(t.get("delay") is not None for t in result.trials):
        axes[2].text(0.5, 0.7, "no run reached both\nthe fit and the\ngeneralization step", transform=axes[2].transAxes, ha="center", fontsize=10)
    axes[2].set_ylabel("generalization step − fit step")
    axes[2].set_title("in-context grokking delay", fontsize=11)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlim(counts[0] / 1.3, counts[-1] * 1.3)
        ax.set_xticks(counts, [("\n" if i and k / counts[i - 1] < 1.5 else "") + str(k) for i, k in enumerate(counts)])  # close ones a row lower
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(f"training rules K (of {o['rules']})")
        ax.grid(alpha=0.3)
    fig.legend(*zip(*legend), loc="outside lower center", ncol=2, fontsize=10, frameon=False)  # below the panels: covers no point
    seeds = "median over " + counted(o["seeds"], "seed") if o["seeds"] != 1 else "one seed"
    fig.suptitle(f"Memorize or generalize against rule diversity ({seeds}, up to {o['steps']:,} steps)\n{o['preset']}: {o['task']}", fontsize=11)
    paths = save_figure(fig, folder, stem)
    return paths + _phase_diagram(result, folder, f"{stem}_phase")


def _phase_diagram(result, folder, stem: str) -> list[Path]:
    """``w`` at every checkpoint of the first seed's run of each K (rows) and weight decay (panel rows), as cells
    spanning the log-step interval around each checkpoint."""
    from matplotlib.colors import Normalize

    plt = pyplot()
    o = result.options
    runs = [run for run in result.phase.values() if run["checkpoint_steps"]]
    counts = [k for k in o["n_rules"] if any(run["n_rules"] == k for run in runs)]
    decays = o["decays"]
    fig, axes = plt.subplots(len(decays), 2, figsize=(12, 1.2 + 0.45 * max(len(counts), 2) * len(decays) + 1), squeeze=False, layout="constrained")
    norm = Normalize(0, 1)
    image = None
    for r, decay in enumerate(decays):
        for c, (split, name) in enumerate((("w_id", "in-distribution"), ("w_ood", "out-of-distribution"))):
            ax = axes[r, c]
            for row, k in enumerate(counts):
                trial = min((run for run in runs if run["n_rules"] == k and run["weight_decay"] == decay), key=lambda run: run["seed"], default=None)
                if trial is None:
                    continue
                steps = np.maximum(np.asarray(trial["checkpoint_steps"], dtype=float), 1)
                edges = np.concatenate([[steps[0] / 1.5], np.sqrt(steps[1:] * steps[:-1]), [steps[-1] * 1.5]])
                values = np.array([np.nan if v is None else v for v in trial[split]], dtype=float)[None, :]
                image = ax.pcolormesh(edges, [row - 0.5, row + 0.5], values, cmap="viridis", norm=norm)
            ax.set_xscale("log")
            ax.set_yticks(range(len(counts)), [str(k) for k in counts])
            ax.set_ylim(-0.5, len(counts) - 0.5)
            ax.set_xlabel("training step (log; step 0 at 1)")
            ax.set_ylabel("training rules K")
            ax.set_title(f"w on {name} sequences, weight decay {decay:g}", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes, label="w (1: memorizing observer, 0: universal)")
    fig.suptitle(f"{o['preset']}: the strategy weight against rule diversity and training step (first seed)", fontsize=10)
    return save_figure(fig, folder, stem)
