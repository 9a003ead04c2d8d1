"""Rule diversity: above how many training rules does the model stop memorizing them and generalize?

Raventós et al. find a task-diversity threshold above which a transformer
stops behaving like the Bayes predictor over its training tasks and behaves
like the one over all tasks. Here n-recurrence is trained on ``K`` of its
rules ``(n, t)`` (the others held out: ``held_out_fraction = 1 − K / rules``,
training sequences drawn from the prior restricted to the ``K`` rules) for
every ``K`` of the grid and every weight decay, one sweep; then the
``strategy`` analysis (:mod:`nrecur.analysis.strategy`) of every finished run
reads, at each saved checkpoint, the weight ``w`` of the memorizing observer
in the mixture of the two observers closest to the model, on in- and
out-of-distribution sequences, and the run's fit step (KL to the
in-distribution observer ≤ the threshold on in-distribution sequences) and
generalization step (KL to the universal observer ≤ the threshold on held-out
rules). The answer:

* **K\\***, per weight decay: the smallest ``K`` of the grid from which on
  (that ``K`` and every larger one with held-out rules) the final KL to the
  universal observer on out-of-distribution sequences is under the threshold
  (median over seeds); None when not even the largest is;
* the **phase diagram**: ``w`` against ``K`` and training step;
* the **delay** of in-context grokking, generalization step − fit step,
  against ``K`` and weight decay.

``K`` equal to every rule holds nothing out: such a run has one observer and
no out-of-distribution sequences; it is trained as the reference and drawn
where a number exists (its in-distribution KL).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nrecur._io import atomic_write_text
from nrecur.analysis import ANALYSES
from nrecur.analysis.driver import compute, reusable, write_result
from nrecur.analysis.figures.common import OKABE_ITO, plain_log_ticks, pyplot, save_figure
from nrecur.report.words import counted
from nrecur.runs import load_run
from nrecur.sweep import BackendOptions, load_sweep, run_sweep, spec_from_data, study_options
from nrecur.train.presets import STUDY_PRESET, get_preset

__all__ = ["RuleDiversityResult", "diversity_threshold", "plot_rule_diversity", "rule_diversity", "run_strategy"]

METRICS = ("in_dist_mem/kl", "in_dist/kl", "out_dist/kl", "eval/kl")
"""Final metrics recorded per trial: KL to the in-distribution observer on in-distribution sequences, to the
universal one on in- and out-of-distribution sequences, and on all."""

STRATEGY = ("w_final/id", "w_final/ood", "w_final_random_init/id", "w_final_random_init/ood", "kl_unexplained/id", "kl_unexplained/ood")
"""Headline figures of the strategy analysis kept per trial."""


@dataclass(frozen=True)
class RuleDiversityResult:
    """Per trial its ``K``, weight decay, final KLs, strategy and steps; per weight decay ``K*``."""

    trials: list[dict]
    thresholds: list[dict]
    """Per weight decay: ``weight_decay``, ``k_star`` (None: no K of the grid generalizes)."""
    options: dict

    def to_json(self) -> dict:
        return {"options": self.options, "thresholds": self.thresholds, "trials": self.trials}


def _float(value) -> float | None:
    return None if value is None or pd.isna(value) or not np.isfinite(float(value)) else float(value)


def diversity_threshold(ood_kl: dict[int, float | None], threshold: float) -> int | None:
    """K*: the smallest ``K`` from which on every ``K`` with a value (OOD KL to the universal observer) has it
    ≤ ``threshold``; None when the largest does not."""
    known = sorted((k, v) for k, v in ood_kl.items() if v is not None)
    answer = None
    for k, value in reversed(known):
        if value > threshold:
            break
        answer = k
    return answer


def run_strategy(run, n_sequences: int) -> dict | None:
    """The JSON of the strategy analysis of ``run``, written into its ``analysis/`` (reused when it was written at
    this step with these options, every other one its default: :func:`~nrecur.analysis.driver.reusable`), or
    None when it does not apply (one observer)."""
    path = run.folder.analysis_dir / "strategy.json"
    data = reusable(path, "strategy", {"n_sequences": n_sequences}, run.step)
    if data is not None:
        return data
    if ANALYSES["strategy"].applies(run) is not None:
        return None
    result = compute(run, "strategy", n_sequences=n_sequences)
    write_result(result, run.folder.analysis_dir, step=run.step)
    return json.loads(path.read_text())


def rule_diversity(
    out: str | Path,
    preset: str = STUDY_PRESET,
    n_rules=(1, 2, 4, 8, 16, 24, 32),
    decays=(0.1,),
    seeds: int = 1,
    task: dict | None = None,
    train: dict | None = None,
    model: dict | None = None,
    n_sequences: int = 256,
    options: BackendOptions = BackendOptions(),
    report=print,
) -> RuleDiversityResult:
    """Train ``preset`` (its task with ``task``'s fields replaced) on ``K`` rules for every ``K`` of ``n_rules``
    and every weight decay of ``decays`` (one sweep in ``out/sweep``), run ``strategy`` on every finished run
    (``n_sequences`` of each kind, written into the run's ``analysis/``) and write ``out/rule_diversity.json``
    and the figures; see the module docstring."""
    out = Path(out)
    base_task = get_preset(preset).run.task
    base_task = type(base_task).model_validate({**base_task.model_dump(), **(task or {})})
    rules = base_task.rules()
    if rules is None:
        raise ValueError(f"rule diversity needs a task with rules to hold out; preset {preset!r} has task kind {base_task.kind!r}")
    total = len(rules)
    counts = sorted({int(k) for k in n_rules})
    if not counts or counts[0] < 1 or counts[-1] > total:
        raise ValueError(f"n_rules must be numbers of training rules in 1..{total} (the task has {total} rules), got {list(n_rules)}")
    fraction = {k: (total - k) / total for k in counts}
    spec = spec_from_data({
        "name": f"rule-diversity-{preset}", "preset": preset, "seeds": seeds,
        "base": {"task": dict(task or {}), "model": dict(model or {}), "train": {"time_budget": 0.0, **(train or {})}},
        "grid": {"train.held_out_fraction": [fraction[k] for k in counts], "train.weight_decay": sorted(float(d) for d in decays)},
        "record": {"metrics": list(METRICS)},
    }, "rule-diversity")  # fmt: skip
    run_sweep(spec, out / "sweep", options=study_options(options), report=report)
    frame = load_sweep(out / "sweep")
    by_fraction = {round(f, 12): k for k, f in fraction.items()}
    trials = []
    for _, row in frame[frame["status"] == "ok"].iterrows():
        run = load_run(row["run_dir"])
        strategy = run_strategy(run, n_sequences)
        headline = (strategy or {}).get("headline", {})
        points = (strategy or {}).get("checkpoints", [])
        trial = {
            "n_rules": by_fraction[round(float(row["train.held_out_fraction"]), 12)], "weight_decay": float(row["train.weight_decay"]),
            "seed": int(row["seed"]), "steps": int(row["steps"]), "run_dir": str(row["run_dir"]),
            **{name: _float(row.get(name)) for name in METRICS},
            **{name: _float(headline.get(name)) for name in STRATEGY},
            "fit_step": (strategy or {}).get("fit_step"), "generalization_step": (strategy or {}).get("generalization_step"),
            "checkpoint_steps": [p["step"] for p in points],
            "w_id": [_float(p["id"]["w"]) for p in points], "w_ood": [_float(p["ood"]["w"]) for p in points],
        }  # fmt: skip
        if trial["n_rules"] == total:  # nothing held out: the in-distribution observer is the universal one
            trial["in_dist_mem/kl"] = trial["eval/kl"]
        both = trial["fit_step"] is not None and trial["generalization_step"] is not None
        trial["delay"] = trial["generalization_step"] - trial["fit_step"] if both else None
        trials.append(trial)
    base_train = spec.base_config()["train"]
    threshold = float(base_train["kl_threshold"])
    thresholds = []
    for decay in sorted(float(d) for d in decays):
        ood = {}
        for k in counts:
            values = [t["out_dist/kl"] for t in trials if t["n_rules"] == k and t["weight_decay"] == decay and t["out_dist/kl"] is not None]
            ood[k] = float(np.median(values)) if values else None
        thresholds.append({"weight_decay": decay, "k_star": diversity_threshold(ood, threshold), "median_ood_kl": {str(k): v for k, v in ood.items()}})
    run_options = {
        "preset": preset, "task": base_task.describe(), "rules": total, "n_rules": counts, "decays": sorted(float(d) for d in decays),
        "seeds": seeds, "steps": int(base_train["steps"]), "kl_threshold": threshold, "n_sequences": n_sequences, "model": dict(model or {}),
    }  # fmt: skip
    result = RuleDiversityResult(trials=trials, thresholds=thresholds, options=run_options)
    atomic_write_text(out / "rule_diversity.json", json.dumps(result.to_json(), indent=1) + "\n")
    plot_rule_diversity(result, out)
    if report:
        for entry in thresholds:
            k_star = entry["k_star"]
            report(f"weight decay {entry['weight_decay']:g}: K* = {k_star if k_star is not None else f'none up to {counts[-1]}'} of {total} rules")
    return result


# ---------------------------------------------------------------------------------------------- figures


def _median(trials: list[dict], name: str, k: int, decay: float) -> float:
    values = [t[name] for t in trials if t["n_rules"] == k and t["weight_decay"] == decay and t.get(name) is not None]
    return float(np.median(values)) if values else np.nan


def plot_rule_diversity(result: RuleDiversityResult, folder: str | Path, stem: str = "rule_diversity") -> list[Path]:
    """``rule_diversity.png``: final KLs, final ``w`` and the fit/generalization delay against K (colour: weight
    decay); ``rule_diversity_phase.png``: ``w`` against K and training step (one seed), in and out of distribution."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullLocator

    plt = pyplot()
    o = result.options
    counts, decays = o["n_rules"], o["decays"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    kls = (("out_dist/kl", "-", "KL(O_gen ‖ M), held-out rules"), ("in_dist_mem/kl", ":", "KL(O_mem ‖ M), training rules"))
    weights = (("w_final/id", "-", "in-distribution sequences"), ("w_final/ood", "--", "out-of-distribution sequences"))
    for colour, decay in zip(OKABE_ITO, decays):
        for name, style, _ in kls:
            axes[0].plot(counts, [_median(result.trials, name, k, decay) for k in counts], color=colour, ls=style, marker="o", ms=5)
        for name, style, _ in weights:
            axes[1].plot(counts, [_median(result.trials, name, k, decay) for k in counts], color=colour, ls=style, marker="o", ms=5)
        axes[2].plot(counts, [_median(result.trials, "delay", k, decay) for k in counts], color=colour, marker="o", ms=5)
        k_star = next(e["k_star"] for e in result.thresholds if e["weight_decay"] == decay)
        if k_star is not None:
            axes[0].axvline(k_star, color=colour, lw=1, ls="-.")
    axes[0].axhline(o["kl_threshold"], color="#777777", lw=1.5)
    style_legend = lambda ax, entries: ax.legend(  # noqa: E731 - black lines: what each line style means
        [Line2D([], [], color="#000000", ls=style) for _, style, _ in entries], [label for _, _, label in entries], fontsize=9, loc="best"
    )
    handles = [Line2D([], [], color="#000000", ls=style) for _, style, _ in kls] + [Line2D([], [], color="#000000", ls="-."), Line2D([], [], color="#777777", lw=1.5)]
    axes[0].legend(handles, [label for _, _, label in kls] + ["K* (colour: weight decay)", f"threshold {o['kl_threshold']:g}"], fontsize=9, loc="best")
    style_legend(axes[1], weights)
    axes[0].set_yscale("log")
    plain_log_ticks(axes[0].yaxis)
    axes[0].set_ylabel("final KL, nats/token")
    axes[0].set_title("KL at the end of training", fontsize=11)
    axes[1].set_ylim(-0.03, 1.03)
    axes[1].set_ylabel("w (1: O_mem, 0: O_gen)")
    axes[1].set_title("strategy weight at the end of training", fontsize=11)
    axes[2].axhline(0, color="#555555", lw=0.8)
    if not any(t.get("delay") is not None for t in result.trials):
        axes[2].text(0.5, 0.7, "no run reached both the fit\nand the generalization step", transform=axes[2].transAxes, ha="center", fontsize=10)
    axes[2].set_ylabel("generalization step − fit step")
    axes[2].set_title("in-context grokking delay", fontsize=11)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlim(counts[0] / 1.3, counts[-1] * 1.3)
        ax.set_xticks(counts, [str(k) for k in counts])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(f"training rules K (of {o['rules']})")
        ax.grid(alpha=0.3)
    fig.legend(
        [Line2D([], [], color=c, marker="o") for c, _ in zip(OKABE_ITO, decays)], [f"weight decay {d:g}" for d in decays],
        loc="lower center", ncol=len(decays), fontsize=10, bbox_to_anchor=(0.5, 0.0),
    )  # fmt: skip
    seeds = "median over " + counted(o["seeds"], "seed") if o["seeds"] != 1 else "one seed"
    fig.suptitle(f"Memorize or generalize against rule diversity ({seeds}, up to {o['steps']:,} steps)\n{o['preset']}: {o['task']}", fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 0.9))
    paths = save_figure(fig, folder, stem)
    return paths + _phase_diagram(result, folder, f"{stem}_phase")


def _phase_diagram(result: RuleDiversityResult, folder, stem: str) -> list[Path]:
    """``w`` at every checkpoint of the first seed's run of each K (rows) and weight decay (panel rows), as cells
    spanning the log-step interval around each checkpoint."""
    from matplotlib.colors import Normalize

    plt = pyplot()
    o = result.options
    counts = [k for k in o["n_rules"] if any(t["n_rules"] == k and t["checkpoint_steps"] for t in result.trials)]
    decays = o["decays"]
    fig, axes = plt.subplots(len(decays), 2, figsize=(12, 1.2 + 0.45 * max(len(counts), 2) * len(decays) + 1), squeeze=False, layout="constrained")
    norm = Normalize(0, 1)
    image = None
    for r, decay in enumerate(decays):
        for c, (split, name) in enumerate((("w_id", "in-distribution"), ("w_ood", "out-of-distribution"))):
            ax = axes[r, c]
            for row, k in enumerate(counts):
                trial = min((t for t in result.trials if t["n_rules"] == k and t["weight_decay"] == decay and t["checkpoint_steps"]), key=lambda t: t["seed"], default=None)
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
