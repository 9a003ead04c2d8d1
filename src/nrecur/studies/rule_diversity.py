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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from nrecur._io import atomic_write_text
from nrecur.analysis import ANALYSES
from nrecur.analysis.driver import compute, reusable, write_result
from nrecur.runs import load_run
from nrecur.sweep import BackendOptions, load_sweep, run_sweep, spec_from_data, study_options
from nrecur.train.presets import STUDY_PRESET, get_preset

__all__ = ["RuleDiversityResult", "answer_in_words", "diversity_threshold", "median_ood_kl", "rule_diversity", "run_strategy"]

METRICS = ("in_dist_mem/kl", "in_dist/kl", "out_dist/kl", "eval/kl")
"""Final metrics recorded per trial: KL to the in-distribution observer on in-distribution sequences, to the
universal one on in- and out-of-distribution sequences, and on all."""

STRATEGY = ("w_final/id", "w_final/ood", "w_final_random_init/id", "w_final_random_init/ood", "kl_unexplained/id", "kl_unexplained/ood")
"""Headline figures of the strategy analysis kept per trial."""


@dataclass(frozen=True)
class RuleDiversityResult:
    """Per trial its ``K``, weight decay, final KLs, strategy and steps; per weight decay ``K*``."""

    trials: list[dict]
    """One flat row per trial (a table)."""
    thresholds: list[dict]
    """Per weight decay: ``weight_decay``, ``k_star`` (None: no K of the grid generalizes) and the median final
    KL on held-out rules of each K, ``median_ood_kl/K`` (:func:`median_ood_kl`)."""
    options: dict
    phase: dict = field(default_factory=dict)
    """Per trial (its run folder's name): ``n_rules``, ``weight_decay``, ``seed``, and ``w_id`` / ``w_ood`` at
    each of its ``checkpoint_steps`` (the phase diagram)."""
    answer: list[dict] = field(default_factory=list)
    """Per weight decay: ``weight_decay`` and the ``answer`` in words, written from the numbers (:func:`answer_in_words`)."""

    def to_json(self) -> dict:
        return {"options": self.options, "thresholds": self.thresholds, "answer": self.answer, "trials": self.trials, "phase": self.phase}


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


def median_ood_kl(entry: dict) -> dict[int, float | None]:
    """``K → median final KL on held-out rules`` of one weight decay's entry of :attr:`RuleDiversityResult.thresholds`."""
    prefix = "median_ood_kl/"
    return {int(key.removeprefix(prefix)): value for key, value in entry.items() if key.startswith(prefix)}


def _range(values: list[float], form: str = ".2g") -> str:
    low, high = format(min(values), form), format(max(values), form)
    return low if low == high else f"{low}–{high}"


def answer_in_words(trials: list[dict], thresholds: list[dict], options: dict) -> list[str]:
    """One paragraph per weight decay: K\\* (or the smallest held-out KL when no K reaches the threshold), how
    closely the model follows the memorizing observer on its training rules, the strategy weight ``w`` at the
    smallest and largest K with held-out rules (beside the initialization's), the run on every rule (whether
    the step budget suffices for the task itself), and the grokking delays."""
    threshold, steps, rules = options["kl_threshold"], options["steps"], options["rules"]
    paragraphs = []
    for entry in thresholds:
        decay = entry["weight_decay"]
        mine = [t for t in trials if t["weight_decay"] == decay]
        ood = {k: v for k, v in median_ood_kl(entry).items() if v is not None}
        if not ood:
            paragraphs.append(f"Weight decay {decay:g}: no run with held-out rules finished.")
            continue
        if entry["k_star"] is not None:
            text = (f"Weight decay {decay:g}: K* = {entry['k_star']} of {rules} rules — from K = {entry['k_star']} on, the final KL to the "
                    f"universal observer on held-out rules is at most the threshold {threshold:g} within {steps:,} steps.")  # fmt: skip
        else:
            best = min(ood, key=ood.get)
            text = (f"Weight decay {decay:g}: no K of the grid generalizes within {steps:,} steps — the final KL to the universal observer "
                    f"on held-out rules stays above the threshold {threshold:g} for every K up to {max(ood)} (smallest: {ood[best]:.3g} at K = {best}, "
                    f"largest: {max(ood.values()):.3g}).")  # fmt: skip
        held_out = [t for t in mine if t["n_rules"] in ood]  # the runs with held-out rules
        fitted = [t["in_dist_mem/kl"] for t in held_out if t["in_dist_mem/kl"] is not None]
        if fitted:
            text += f" On its training rules the model is within KL {_range(fitted)} of the memorizing observer."
        ends = [k for k in (min(ood), max(ood)) if any(t["n_rules"] == k and t["w_final/ood"] is not None for t in mine)]
        for k in dict.fromkeys(ends):
            at = [t for t in mine if t["n_rules"] == k and t["w_final/ood"] is not None]
            w = [t["w_final/ood"] for t in at]
            w_id = [t["w_final/id"] for t in at if t["w_final/id"] is not None]
            control = [t["w_final_random_init/ood"] for t in at if t["w_final_random_init/ood"] is not None]
            text += (f" At K = {k} the final strategy weight is w = {_range(w)} on held-out sequences"
                     f"{f' and {_range(w_id)} on training ones' if w_id else ''}"
                     f"{f' (initialization: {_range(control)})' if control else ''}.")  # fmt: skip
        everything = [t["eval/kl"] for t in mine if t["n_rules"] == rules and t.get("eval/kl") is not None]
        if everything:  # the budget's control: the task itself, nothing held out
            reached = max(everything) <= threshold
            text += (f" The run on all {rules} rules (nothing held out) ends at KL {_range(everything, '.3g')} to the universal observer: "
                     + ("the budget suffices for the task itself." if reached else "the budget does not bring even the task itself under the threshold."))  # fmt: skip
        delays = [t["delay"] for t in mine if t["delay"] is not None]
        fits = sum(t["fit_step"] is not None for t in held_out)
        text += (f" In-context grokking: {len(delays)} of {len(held_out)} runs generalized after fitting "
                 f"({fits} fitted their training rules)" + (f", {_range(delays, ',.0f')} steps later." if delays else "."))  # fmt: skip
        paragraphs.append(text)
    return paragraphs


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
    result = compute(run, "strategy", progress=False, n_sequences=n_sequences)
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
    trials, phase = [], {}
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
        }  # fmt: skip
        phase[Path(trial["run_dir"]).name] = {
            "n_rules": trial["n_rules"], "weight_decay": trial["weight_decay"], "seed": trial["seed"], "checkpoint_steps": [p["step"] for p in points],
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
        thresholds.append({"weight_decay": decay, "k_star": diversity_threshold(ood, threshold), **{f"median_ood_kl/{k}": v for k, v in ood.items()}})
    run_options = {
        "preset": preset, "task": base_task.describe(), "rules": total, "n_rules": counts, "decays": sorted(float(d) for d in decays),
        "seeds": seeds, "steps": int(base_train["steps"]), "kl_threshold": threshold, "n_sequences": n_sequences, "model": dict(model or {}),
    }  # fmt: skip
    words = answer_in_words(trials, thresholds, run_options)
    answer = [{"weight_decay": entry["weight_decay"], "answer": text} for entry, text in zip(thresholds, words)]
    result = RuleDiversityResult(trials=trials, thresholds=thresholds, options=run_options, phase=phase, answer=answer)
    atomic_write_text(out / "rule_diversity.json", json.dumps(result.to_json(), indent=1) + "\n")
    from nrecur.studies.rule_diversity_figures import plot_rule_diversity

    plot_rule_diversity(result, out)
    if report:
        for entry in thresholds:
            k_star = entry["k_star"]
            held_out = [k for k, v in median_ood_kl(entry).items() if v is not None]
            none = f"none up to {max(held_out)}" if held_out else "none (no run with held-out rules)"
            report(f"weight decay {entry['weight_decay']:g}: K* = {k_star if k_star is not None else none} of {total} rules")
    return result

