"""Do the task's variants change what the model learns? The proposal's addenda, one variant at a time.

The proposal lets the n-recurrence task vary (SPEC §2.3): may the target also
appear outside its positions (``target_outside``), is a noise token drawn
uniformly or from the recent context (``fake_source``), does a transition
change the period, the target or both (``transition_changes``), and what does
a skewed ``period_prior`` or ``target_prior`` do. This study trains the
preset's stochastic task (and its deterministic one where the variant changes
it) once per variant in :data:`VARIANTS` beside the default, from several
seeds, all for the same step budget, runs the analyses on every model
(:data:`PLAN`: which analysis, with which options, on which models) and
compares each measure of each variant with the default's (:data:`MEASURES`):

1. *difficulty* — the Bayes floor (the exact observer's cross-entropy on fresh
   sequences, in batches), the final KL(observer ‖ model), the steps and the
   seconds to the run's KL threshold;
2. *dynamics* — the KL and loss curves, the checkpoint at which the period heads
   form (every period's best head beats uniform attention by the heads
   analysis's margin), and the progress measures' restricted and excluded losses;
3. *the algorithm* — head scores, probes (linear and MLP) for the period, the
   target and the countdown (the phase), the patching map's best sites, the
   in-context learning rate and discreteness after transitions and noise, the
   failure modes, and the static and behavioural prior.

Every measure is stated with its control (the run's initialization, shuffled
targets, uniform attention or the observer, whichever the analysis gives). How
to read a statement: a variant *differs* from the default in a measure when the
gap between their means over seeds exceeds the sum of their two ranges over
seeds (:func:`compare`) — with two seeds a deliberately strict rule, so
"within the seed spread" says the study could not tell them apart, not that they
are equal. Every statement is generated from the numbers in ``variants.json``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd

from nrecur._io import atomic_write_text
from nrecur._threads import side_by_side
from nrecur.analysis.driver import compute, reusable, write_result
from nrecur.observer.bayes import bayes_cross_entropy
from nrecur.runs import load_run
from nrecur.sweep import BackendOptions, load_sweep, run_sweep, spec_from_data, study_options
from nrecur.tasks import NRecurrence
from nrecur.train.presets import get_preset

__all__ = [
    "KINDS", "MEASURES", "PLAN", "VARIANTS", "Comparison", "Measure", "Planned", "Variant", "VariantsResult", "compare",
    "register_variant", "skewed", "statements", "summary", "tabulate", "variants_study", "write_variants",
]  # fmt: skip

Kind = Literal["deterministic", "stochastic"]
KINDS: dict[str, str] = {"deterministic": "run", "stochastic": "stochastic"}
"""The study's task kinds → the preset's config they start from (``Preset.variant``)."""
DEFAULT = "default"


# ------------------------------------------------------------------------------------------------ variants


@dataclass(frozen=True)
class Variant:
    """One variant of the task: the fields it sets on the preset's task, and the kinds it changes."""

    name: str
    description: str
    fields: Callable[[NRecurrence], dict[str, Any]]
    """The preset's task → the task fields this variant sets (sized to the task: a prior over its periods)."""
    kinds: tuple[str, ...] = ("deterministic", "stochastic")
    """Kinds whose task it changes: a variant of the noise or the transitions leaves the deterministic task as it is."""


VARIANTS: dict[str, Variant] = {}
"""Variant name → variant; ``default`` is the preset's task, the reference of every comparison."""


def register_variant(variant: Variant) -> Variant:
    """Add ``variant`` to :data:`VARIANTS` (a new variant needs nothing else)."""
    VARIANTS[variant.name] = variant
    return variant


def skewed(k: int) -> tuple[float, ...]:
    """``k`` probabilities proportional to ``k, k-1, …, 1``: the first value ``k`` times as likely as the last."""
    total = k * (k + 1) / 2
    return tuple((k - i) / total for i in range(k))


STOCHASTIC_ONLY = ("stochastic",)
register_variant(Variant(DEFAULT, "the preset's task", lambda task: {}))
register_variant(Variant("target_outside", "the target may also appear at non-target positions", lambda task: {"target_outside": True}))
register_variant(Variant("fake_recent", "a noise token is drawn from the recent context (last 3n positions)", lambda task: {"fake_source": "recent"}, STOCHASTIC_ONLY))
register_variant(Variant("transition_period", "a transition changes the period only", lambda task: {"transition_changes": "period"}, STOCHASTIC_ONLY))
register_variant(Variant("transition_target", "a transition changes the target only", lambda task: {"transition_changes": "target"}, STOCHASTIC_ONLY))
register_variant(Variant("transition_both", "a transition changes both the period and the target", lambda task: {"transition_changes": "both"}, STOCHASTIC_ONLY))
register_variant(Variant("period_prior_skewed", "period prior proportional to k, k-1, …, 1 (short periods likelier)", lambda task: {"period_prior": skewed(len(task.periods))}))
register_variant(Variant("target_prior_skewed", "target prior proportional to V, V-1, …, 1 (low tokens likelier)", lambda task: {"target_prior": skewed(task.vocab_size)}))


# ------------------------------------------------------------------------------------------------ what runs


@dataclass(frozen=True)
class Planned:
    """One analysis of the study: its options, and the models it runs on."""

    options: dict[str, Any]
    kinds: tuple[str, ...] = ("deterministic", "stochastic")
    variants: tuple[str, ...] | None = None
    """None: every variant."""


PLAN: dict[str, Planned] = {
    "heads": Planned({"n_sequences": 512}),
    "probes": Planned({"n_sequences": 512, "mlp_rows": 4000}),
    "patching": Planned({"n_sequences": 128, "steer": False}),
    "progress": Planned({"n_sequences": 256, "head_sequences": 128}),
    "updates": Planned({"n_sequences": 1024, "decode": False}, kinds=STOCHASTIC_ONLY),
    "failure": Planned({"n_sequences": 1024}, kinds=STOCHASTIC_ONLY),
    "prior": Planned({"n_sequences": 1024}, variants=(DEFAULT, "target_outside", "period_prior_skewed", "target_prior_skewed")),
}
"""Analysis → its options and models: fewer sequences than ``nrecur analyze`` uses, so that every model of the
CPU study is analysed (the spec's ``analysis_options`` change them)."""


# ------------------------------------------------------------------------------------------------ measures


@dataclass(frozen=True)
class Measure:
    """One number per model that the study compares with the default's."""

    name: str
    question: Literal["difficulty", "dynamics", "algorithm"]
    label: str
    source: str
    """``train`` (the sweep's table), ``observer`` (the Bayes floor), ``derived`` or an analysis's name."""
    key: str = ""
    """The headline's key (an analysis), or the table's column (``train``)."""
    controls: tuple[tuple[str, str], ...] = ()
    """``(label, headline key)`` of the controls shown beside it."""
    infinite: str = "never"
    """What an infinite value means, in words (a learning rate that never came, a threshold not reached)."""


def _beside(key: str, *controls: str) -> tuple[tuple[str, str], ...]:
    """The usual controls of a headline ``key`` (``a/b`` → ``a_random_init/b``)."""
    base, _, tail = key.partition("/")
    names = {"random_init": "initialization", "shuffled": "shuffled targets", "baseline": "uniform attention", "ceiling": "observer"}
    return tuple((names[c], f"{base}_{c}" + (f"/{tail}" if tail else "")) for c in controls)


def _analysis_measures() -> list[Measure]:
    found = [
        Measure("heads.period_score", "algorithm", "period score (best head)", "heads", "period_score", _beside("period_score", "random_init", "baseline")),
        Measure("heads.previous_token", "algorithm", "previous-token score", "heads", "previous_token", _beside("previous_token", "random_init", "baseline")),
        Measure("heads.induction", "algorithm", "induction score", "heads", "induction", _beside("induction", "random_init", "baseline")),
        Measure("heads.heads_above_margin", "algorithm", "period heads above the margin", "heads", "heads_above_margin", _beside("heads_above_margin", "random_init")),
    ]
    for quantity, words in (("period", "period n"), ("target", "target t"), ("countdown", "phase (countdown)")):
        for probe in ("linear", "mlp"):
            key = f"r2_{probe}/{quantity}"
            found.append(Measure(f"probes.{key}", "algorithm", f"{probe} probe R² for the {words}", "probes", key, _beside(key, "random_init", "shuffled")))
    for site in ("resid", "attn_out", "mlp_out", "head"):
        key = f"moved_best/{site}"
        found.append(Measure(f"patching.{key}", "algorithm", f"patching: best {site} site moves", "patching", key, _beside(key, "random_init")))
    found.append(Measure("patching.moved_best_before_last", "algorithm", "patching: best site before the last position", "patching", "moved_best_before_last", _beside("moved_best_before_last", "random_init")))
    for event in ("transition", "noise"):
        for name, words in (("learning_rate", "in-context learning rate (tokens)"), ("discreteness", "discreteness")):
            key = f"{name}/{event}"
            found.append(Measure(f"updates.{key}", "algorithm", f"{words} after {event}s", "updates", key, _beside(key, "ceiling", "random_init")))
    found.append(Measure("updates.kl/transition", "algorithm", "KL after transitions", "updates", "kl/transition", _beside("kl/transition", "random_init")))
    for name, words in (("perseveration", "perseveration (tokens)"), ("overreaction", "overreaction to noise")):
        found.append(Measure(f"failure.{name}", "algorithm", words, "failure", name, _beside(name, "ceiling", "random_init")))
    for which in ("target", "period"):
        for estimate in ("static", "behavioural"):
            for score, words in (("kl", "KL to the true prior"), ("corr", "correlation with the true prior")):
                key = f"{estimate}_{which}_{score}"
                found.append(Measure(f"prior.{key}", "algorithm", f"{estimate} {which} prior: {words}", "prior", key, _beside(key, "random_init")))
    return found


MEASURES: tuple[Measure, ...] = (
    Measure("bayes_floor", "difficulty", "Bayes floor (nats/token)", "observer", controls=(("uniform guess, log V", "log_vocab"),)),
    Measure("final_kl", "difficulty", "final KL (nats/token)", "train", "final_kl", (("initialization", "initial_kl"),)),
    Measure("steps_to_threshold", "difficulty", "steps to the KL threshold", "train", "steps_to_threshold", infinite="not reached"),
    Measure("seconds_to_threshold", "difficulty", "seconds to the KL threshold", "train", "seconds_to_threshold", infinite="not reached"),
    Measure("period_heads_step", "dynamics", "step at which the period heads form", "derived", infinite="not formed"),
    Measure("progress.restricted_gap", "dynamics", "restricted − full loss (period heads only)", "derived", controls=(("initialization", "restricted_gap_random_init"),)),
    Measure("progress.excluded_gap", "dynamics", "excluded − full loss (period heads ablated)", "derived", controls=(("initialization", "excluded_gap_random_init"),)),
    *_analysis_measures(),
)
"""Every measure compared, in the order the tables show them."""


# ------------------------------------------------------------------------------------------------ statements


@dataclass(frozen=True)
class Comparison:
    """A variant's values of one measure (one per seed) beside the default's, and the verdict."""

    verdict: Literal["higher", "lower", "within the seed spread", "not measured"]
    variant: tuple[float, ...]
    default: tuple[float, ...]
    gap: float | None
    """Variant's mean − default's mean (None: not measured)."""
    spread: float | None
    """The sum of the two ranges over seeds: the gap must exceed it for the verdict to be higher or lower."""

    @property
    def differs(self) -> bool:
        return self.verdict in ("higher", "lower")


def _finite_or_inf(values) -> tuple[float, ...]:
    """The measured values: None and NaN (not measured) left out; ±inf (never, not reached) kept."""
    return tuple(float(v) for v in values if v is not None and not math.isnan(float(v)))


def _range(values: tuple[float, ...]) -> float:
    if all(math.isinf(v) for v in values) and len(set(values)) == 1:
        return 0.0  # all "never": no spread
    return max(values) - min(values) if not any(math.isinf(v) for v in values) else math.inf


def _mean(values: tuple[float, ...]) -> float:
    return float(np.mean(values)) if not any(math.isinf(v) for v in values) else max(values, key=abs)


def compare(values, reference) -> Comparison:
    """The variant's ``values`` (one per seed) against the default's ``reference``: *higher* or *lower* when the
    gap between the means exceeds the sum of the two ranges over seeds (and is more than rounding), otherwise
    *within the seed spread*; *not measured* when either side has no value. An infinite value (a threshold never
    reached) is slower than every finite one; a side that mixes finite and infinite values has an infinite range."""
    v, d = _finite_or_inf(values), _finite_or_inf(reference)
    if not v or not d:
        return Comparison("not measured", v, d, None, None)
    mean_v, mean_d = _mean(v), _mean(d)
    spread = _range(v) + _range(d)
    gap = 0.0 if mean_v == mean_d else mean_v - mean_d
    rounding = 1e-9 * max(1.0, abs(mean_d) if math.isfinite(mean_d) else 1.0)
    if math.isinf(spread) or abs(gap) <= max(spread, rounding):
        return Comparison("within the seed spread", v, d, gap, spread)
    return Comparison("higher" if gap > 0 else "lower", v, d, gap, spread)


def _fmt(value: float | None, infinite: str = "never") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return infinite
    return f"{value:.3g}"


def _fmt_seeds(values: tuple[float, ...], infinite: str) -> str:
    """``0.031 (0.029–0.033)``: the mean and the range over seeds; one value alone when they agree."""
    if not values:
        return "—"
    low, high = min(values), max(values)
    if low == high:
        return _fmt(low, infinite)
    return f"{_fmt(_mean(values), infinite)} ({_fmt(low, infinite)}–{_fmt(high, infinite)})"


def statement(measure: Measure, comparison: Comparison) -> str:
    """One sentence from the numbers: the variant's value, the default's, and whether it differs."""
    mine, theirs = _fmt_seeds(comparison.variant, measure.infinite), _fmt_seeds(comparison.default, measure.infinite)
    if comparison.verdict == "not measured":
        return f"{measure.label}: not measured ({mine} against the default's {theirs})"
    if comparison.differs:
        return (
            f"{measure.label}: {mine} against the default's {theirs}, {comparison.verdict} by more than the seed "
            f"spread (gap {_fmt(abs(comparison.gap), measure.infinite)} > spread {_fmt(comparison.spread)})"
        )
    return f"{measure.label}: {mine} against the default's {theirs}, within the seed spread"


def statements(runs: list[dict], kind: str, variant: str, measures=MEASURES, samples=None) -> list[dict]:
    """One comparison row per measure of ``variant`` against the default on ``kind``, from the per-run rows
    (``kind``, ``variant``, ``seed``, a column per measure, ``MEASURE|CONTROL_KEY`` per control). ``samples``:
    ``(kind, variant, measure) → values`` that replace the per-seed ones (the Bayes floor's batches of sequences)."""
    samples = samples or {}
    mine = [r for r in runs if r["kind"] == kind and r["variant"] == variant]
    default = [r for r in runs if r["kind"] == kind and r["variant"] == DEFAULT]
    rows = []
    for measure in measures:
        values = samples.get((kind, variant, measure.name), [r.get(measure.name) for r in mine])
        reference = samples.get((kind, DEFAULT, measure.name), [r.get(measure.name) for r in default])
        comparison = compare(values, reference)
        controls = []
        for label, key in measure.controls:
            seen = _finite_or_inf(r.get(f"{measure.name}|{key}") for r in mine)
            if seen:
                controls.append(f"{label} {_fmt_seeds(seen, measure.infinite)}")
        rows.append({
            "kind": kind, "variant": variant, "question": measure.question, "measure": measure.name, "label": measure.label,
            "value": _fmt_seeds(comparison.variant, measure.infinite), "default": _fmt_seeds(comparison.default, measure.infinite),
            "controls": "; ".join(controls) or "—", "verdict": comparison.verdict,
            "gap": None if comparison.gap is None or not math.isfinite(comparison.gap) else comparison.gap,
            "spread": None if comparison.spread is None or not math.isfinite(comparison.spread) else comparison.spread,
            "statement": statement(measure, comparison),
        })  # fmt: skip
    return rows


def summary(rows: list[dict]) -> str:
    """What differs and what does not, in one sentence, from a variant's comparison rows on one kind."""
    measured = [r for r in rows if r["verdict"] != "not measured"]
    differ = [r for r in measured if r["verdict"] in ("higher", "lower")]
    if not measured:
        return "nothing measured"
    if not differ:
        return f"no measure differs from the default by more than the seed spread ({len(measured)} measured)"
    listed = ", ".join(f"{r['label']} ({r['verdict']})" for r in differ)
    return f"{len(differ)} of {len(measured)} measures differ from the default by more than the seed spread: {listed}"


# ------------------------------------------------------------------------------------------------ the study


@dataclass(frozen=True)
class VariantsResult:
    """The study's tables: one row per model (``runs``), per variant and kind (``summary``, ``difficulty``),
    per measure (``comparisons``), and the curves its dynamics figure draws."""

    options: dict
    runs: list[dict]
    summary: list[dict]
    difficulty: list[dict]
    comparisons: list[dict]
    curves: list[dict]
    """``kind``, ``variant``, ``seed``, ``step``, ``seconds``, ``kl``, ``loss``, ``bayes``: every evaluation of every run."""
    period_curves: list[dict]
    """``kind``, ``variant``, ``seed``, ``step``, ``period_margin``: at every checkpoint progress followed, the
    smallest over periods of (best head's period score − uniform attention's)."""
    timing: dict = field(default_factory=dict)
    """``wall_seconds`` of the call that wrote it (every step it had to do), ``train_seconds_sum`` over the
    runs, the 1-minute ``load_average`` at its end and the ``workers``."""
    machine: str = field(default_factory=lambda: f"{platform.machine()}, {len(_cpus())} CPUs, Python {sys.version.split()[0]}")
    failures: list[dict] = field(default_factory=list)
    """``kind``, ``variant``, ``seed``, ``analysis``, ``error`` (one line): every analysis that failed, whose
    measures are "not measured" for that model."""

    def to_json(self) -> dict:
        return {
            "command": self.options.get("command", "nrecur study"), "machine": self.machine, "options": self.options,
            "summary": self.summary, "difficulty": self.difficulty, "comparisons": self.comparisons, "runs": self.runs,
            "timing": self.timing, "curves": self.curves, "period_curves": self.period_curves, "failures": self.failures,
        }  # fmt: skip


def _cpus() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - not Linux
        return {0}


def variants_study(
    out: str | Path,
    preset: str = "quick",
    variants=tuple(name for name in VARIANTS if name != DEFAULT),
    kinds=tuple(KINDS),
    seeds: int = 2,
    deterministic: dict | None = None,
    stochastic: dict | None = None,
    analyses=tuple(PLAN),
    analysis_options: dict | None = None,
    bayes_sequences: int = 1024,
    bayes_batches: int = 4,
    command: str | None = None,
    options: BackendOptions = BackendOptions(),
    report=print,
) -> VariantsResult:
    """Train the default and every variant in ``variants`` on each of ``kinds`` (where the variant changes
    that kind's task) from ``seeds`` seeds, one sweep per kind in ``out/sweep_KIND`` (``deterministic`` and
    ``stochastic``: train settings merged over the preset's), run the ``analyses`` of :data:`PLAN` on every
    model (``analysis_options``: analysis → options merged over the plan's), and write ``out/variants.json``,
    the CSV tables and the figures. Every model trains for its whole step budget (no stop at the threshold),
    so final KLs compare at equal steps."""
    out = Path(out)
    unknown = [name for name in variants if name not in VARIANTS or name == DEFAULT]
    if unknown:
        raise ValueError(f"unknown variant {unknown[0]!r}; variants are {', '.join(n for n in VARIANTS if n != DEFAULT)}")
    bad_kinds = [kind for kind in kinds if kind not in KINDS]
    if bad_kinds or not kinds:
        raise ValueError(f"kinds must name some of {', '.join(KINDS)}, got {list(kinds)}")
    if seeds < 2:
        raise ValueError(f"seeds must be >= 2 (a seed spread is what every statement is measured against), got {seeds}")
    not_planned = [name for name in analyses if name not in PLAN]
    if not_planned:
        raise ValueError(f"unknown analysis {not_planned[0]!r}; the study runs {', '.join(PLAN)}")
    extra = [name for name in (analysis_options or {}) if name not in analyses]
    if extra:
        raise ValueError(f"analysis_options names {extra[0]!r}, which is not among the analyses to run ({', '.join(analyses)})")
    base = get_preset(preset)
    settings = {"deterministic": deterministic or {}, "stochastic": stochastic or {}}
    started = time.perf_counter()
    names = [DEFAULT, *variants]
    runs: list[dict] = []
    floors: dict[tuple[str, str, str], list[float]] = {}
    failures: list[dict] = []
    for kind in kinds:
        chosen = [name for name in names if kind in VARIANTS[name].kinds]
        if len(chosen) < 2:
            continue  # none of the variants changes this kind's task
        config = base.variant(KINDS[kind])
        frame = _train(out / f"sweep_{kind}", preset, kind, chosen, config.task, seeds, settings[kind], options, report)
        for _, row in frame[frame["status"] == "ok"].iterrows():
            variant = chosen[int(row["trial"]) // seeds]  # the zip axis, then the seeds, the last fastest
            runs.append(_train_row(kind, variant, row))
        failures += _analyze_all([r for r in runs if r["kind"] == kind], analyses, analysis_options or {}, options, report)
        for variant in chosen:
            task = config.task.model_copy(update=VARIANTS[variant].fields(config.task))
            floors[(kind, variant, "bayes_floor")] = _bayes_floors(task, config.length, bayes_sequences, bayes_batches)
            for row in (r for r in runs if r["kind"] == kind and r["variant"] == variant):
                row["bayes_floor"] = float(np.mean(floors[(kind, variant, "bayes_floor")]))
                row["bayes_floor|log_vocab"] = math.log(task.vocab_size)
    curves: list[dict] = []
    period_curves: list[dict] = []
    for row in runs:
        run = load_run(row["run_dir"])
        values, period_curve = _analysis_values(run, analyses)
        row.update(values)
        points = _curves(run)
        row["final_kl|initial_kl"] = points[0]["kl"] if points and points[0]["step"] == 0 else None
        curves += [{"kind": row["kind"], "variant": row["variant"], "seed": row["seed"], **point} for point in points]
        period_curves += [{"kind": row["kind"], "variant": row["variant"], "seed": row["seed"], **point} for point in period_curve]
    run_options = {
        "preset": preset, "variants": ", ".join(variants), "kinds": ", ".join(kinds), "seeds": seeds,
        "deterministic": deterministic or {}, "stochastic": stochastic or {}, "analyses": ", ".join(analyses),
        "analysis_options": {name: {**PLAN[name].options, **(analysis_options or {}).get(name, {})} for name in analyses},
        "bayes_sequences": bayes_sequences, "bayes_batches": bayes_batches, "command": command or "nrecur study",
        "rule": "differs: |mean(variant) − mean(default)| over seeds > range(variant) + range(default)",
    }  # fmt: skip
    timing = {
        "wall_seconds": time.perf_counter() - started, "train_seconds_sum": sum(r["seconds"] for r in runs),
        "load_average": os.getloadavg()[0], "workers": options.workers or len(_cpus()),
    }  # fmt: skip
    result = tabulate(runs, run_options, curves, period_curves, floors, timing, failures)
    write_variants(result, out)
    return result


def tabulate(runs: list[dict], options: dict, curves=(), period_curves=(), samples=None, timing=None, failures=()) -> VariantsResult:
    """The study's tables from its per-run rows (``kind``, ``variant``, ``seed``, a column per measure of
    :data:`MEASURES` and ``MEASURE|CONTROL_KEY`` per control): every variant against the default on every kind
    it ran on. ``samples``: ``(kind, variant, measure) → values`` in place of the per-seed ones (the Bayes floor's
    batches). ``failures``: the analyses that failed (see :attr:`VariantsResult.failures`)."""
    comparisons, summary_rows, difficulty = [], [], []
    for kind in dict.fromkeys(r["kind"] for r in runs):
        for variant in dict.fromkeys(r["variant"] for r in runs if r["kind"] == kind and r["variant"] != DEFAULT):
            rows = statements(runs, kind, variant, samples=samples)
            comparisons += rows
            summary_rows.append({
                "kind": kind, "variant": variant, "description": VARIANTS[variant].description if variant in VARIANTS else variant,
                "measured": sum(r["verdict"] != "not measured" for r in rows), "differ": sum(r["verdict"] in ("higher", "lower") for r in rows),
                "statement": summary(rows),
            })  # fmt: skip
            difficulty.append(_difficulty_row(kind, variant, rows, runs))
    return VariantsResult(
        options, _uniform(runs), summary_rows, difficulty, comparisons, list(curves), list(period_curves), dict(timing or {}), failures=list(failures)
    )


LOG_CHECKPOINTS = 10
"""Log-spaced checkpoints every run keeps (unless its train settings say otherwise): the steps progress follows."""


def _train(folder: Path, preset: str, kind: str, chosen: list[str], task: NRecurrence, seeds: int, train: dict, options: BackendOptions, report):
    """One sweep: the chosen variants as one zip axis over the task fields any of them sets, ``seeds`` each."""
    points = [VARIANTS[name].fields(task) for name in chosen]
    varied = list(dict.fromkeys(key for point in points for key in point))
    spec = spec_from_data({
        "name": f"variants-{kind}", "preset": preset, "variant": KINDS[kind], "seeds": seeds,
        "base": {"train": {"time_budget": 0.0, "stop_at_threshold": False, "log_checkpoints": LOG_CHECKPOINTS, **train}},
        "zip": [{f"task.{key}": [point.get(key, getattr(task, key)) for point in points] for key in varied}],
    }, f"variants {kind}")  # fmt: skip
    run_sweep(spec, folder, options=study_options(options), report=report)
    return load_sweep(folder)


def _train_row(kind: str, variant: str, row) -> dict:
    """The sweep's numbers of one model; a threshold not reached is infinitely many steps and seconds."""
    out = {"kind": kind, "variant": variant, "seed": int(row["seed"]), "run_dir": str(row["run_dir"]), "steps": int(row["steps"])}
    out["kl_threshold"] = float(row["kl_threshold"])
    out["seconds"] = float(row["seconds"])
    out["final_kl"] = float(row["final_kl"])
    for name in ("steps_to_threshold", "seconds_to_threshold"):
        value = row[name]
        out[name] = math.inf if pd.isna(value) else float(value)
    return out


def _bayes_floors(task: NRecurrence, length: int, n_sequences: int, batches: int) -> list[float]:
    """The observer's cross-entropy on ``batches`` independent batches of fresh sequences (nats/token)."""
    return [bayes_cross_entropy(task, length, batch_size=n_sequences, seed=(7919, b)).mean for b in range(batches)]


COST_ORDER = ("patching", "probes", "progress", "prior", "updates", "failure", "heads")
"""Analyses started longest first, so that the workers finish together."""


def _planned(name: str, row: dict) -> bool:
    plan = PLAN[name]
    return row["kind"] in plan.kinds and (plan.variants is None or row["variant"] in plan.variants)


def _analyze_all(rows: list[dict], analyses, analysis_options: dict, options: BackendOptions, report) -> list[dict]:
    """Every planned analysis of every model in ``rows``, side by side in worker processes (one thread each),
    written into each run's ``analysis/``; a result already there for the same step and options is kept.
    Returns the failures (``kind``, ``variant``, ``seed``, ``analysis``, ``error``)."""
    from nrecur.analysis.contract import ANALYSES
    from nrecur.sweep.local import available_cpus

    jobs = []
    for name in sorted(analyses, key=lambda n: COST_ORDER.index(n) if n in COST_ORDER else len(COST_ORDER)):
        wanted = ANALYSES[name].make_options({**PLAN[name].options, **analysis_options.get(name, {})}).model_dump(mode="json")
        for row in rows:
            if _planned(name, row) and not _done(Path(row["run_dir"]), name, wanted):
                jobs.append((row, name, wanted))
    if not jobs:
        return []
    failures = []
    workers = max(1, min(options.workers or available_cpus(), len(jobs)))
    with side_by_side(), ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(options.threads,)) as pool:
        futures = [(row, name, pool.submit(_analyze_one, row["run_dir"], name, wanted)) for row, name, wanted in jobs]
        for row, name, future in futures:
            wall, cpu, error = future.result()
            if error:
                failures.append({"kind": row["kind"], "variant": row["variant"], "seed": row["seed"], "analysis": name, "error": error})
            if report:
                done = f"failed, {error}" if error else f"{wall:.0f} s, {cpu:.0f} CPU s"
                report(f"{name}: {row['kind']} {row['variant']} seed {row['seed']} ({done})")
    return failures


def _done(run_dir: Path, name: str, wanted: dict) -> bool:
    path = run_dir / "analysis" / f"{name}.json"
    if not path.exists():
        return False
    summary = json.loads((run_dir / "summary.json").read_text())
    return reusable(path, name, wanted, summary.get("steps")) is not None


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _analyze_one(run_dir: str, name: str, wanted: dict) -> tuple[float, float, str | None]:
    """Compute and write one analysis of one run: its wall and CPU seconds, and the error it failed with (its
    measures are then not measured; the other analyses go on)."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        run = load_run(run_dir)
        result = compute(run, name, progress=False, **wanted)
    except Exception as error:  # noqa: BLE001 - one analysis's failure leaves its measures unmeasured, not the study
        line = (str(error).splitlines() or [""])[0]
        return time.perf_counter() - start, time.process_time() - cpu, f"{type(error).__name__}: {line}"
    write_result(result, run.folder.analysis_dir, step=run.step)
    return time.perf_counter() - start, time.process_time() - cpu, None


def _never_key(key: str) -> str | None:
    """The headline's share of events that never crossed, beside a median that JSON holds as None."""
    for name, never in (("learning_rate", "never"), ("perseveration", "perseveration_never")):
        if key.startswith(name):
            return never + key[len(name):]
    return None


def _headline_value(headline: dict, key: str) -> float | None:
    """A headline figure: None (not measured) stays None; a median of "never" (at least half of the events
    never crossed) is infinite."""
    value = headline.get(key)
    if value is None:
        never = _never_key(key)
        return math.inf if never is not None and (headline.get(never) or 0) >= 0.5 else None
    return float(value)


def _analysis_values(run, analyses) -> tuple[dict, list[dict]]:
    """The analysis measures of one run (with their controls) read from its ``analysis/``, and its period curve."""
    values: dict[str, float | None] = {}
    found = {}
    for name in analyses:
        path = run.folder.analysis_dir / f"{name}.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
    for measure in MEASURES:
        if measure.source not in found:
            continue
        headline = found[measure.source]["headline"]
        values[measure.name] = _headline_value(headline, measure.key)
        for _, key in measure.controls:
            values[f"{measure.name}|{key}"] = _headline_value(headline, key)
    curve = []
    if "progress" in found:
        progress = found["progress"]
        head = progress["headline"]
        for gap in ("restricted", "excluded"):
            values[f"progress.{gap}_gap"] = head[f"loss_{gap}"] - head["loss"]
            values[f"progress.{gap}_gap|{gap}_gap_random_init"] = head[f"loss_{gap}_random_init"] - head["loss_random_init"]
        margin, baseline = progress["options"]["margin"], progress["period_baseline"]
        values["period_heads_step"] = math.inf
        for point in progress["checkpoints"]:
            scores = [math.nan if s is None else s for s in point["period_score"]]
            lowest = min(s - b for s, b in zip(scores, baseline))
            curve.append({"step": point["step"], "period_margin": lowest, "margin": margin})
            if lowest >= margin and math.isinf(values["period_heads_step"]):
                values["period_heads_step"] = float(point["step"])
    return values, curve


def _curves(run) -> list[dict]:
    """Every evaluation of a run: step, seconds, KL, the model's and the observer's cross-entropy."""
    return [
        {"step": r["step"], "seconds": r.get("seconds"), "kl": r["eval/kl"], "loss": r.get("eval/model_ce"), "bayes": r.get("eval/bayes_ce")}
        for r in run.metrics if "eval/kl" in r
    ]  # fmt: skip


DIFFICULTY = ("bayes_floor", "final_kl", "steps_to_threshold", "seconds_to_threshold")


def _difficulty_row(kind: str, variant: str, rows: list[dict], runs: list[dict]) -> dict:
    """The difficulty measures of one variant: its value, the default's and the verdict, side by side, with the
    runs' step budget and KL threshold."""
    mine = [r for r in runs if r["kind"] == kind and r["variant"] == variant]
    out = {"kind": kind, "variant": variant, "steps": max(r.get("steps") or 0 for r in mine), "kl_threshold": mine[0].get("kl_threshold")}
    for row in rows:
        if row["measure"] in DIFFICULTY:
            out[row["measure"]] = row["value"]
            out[f"{row['measure']}_default"] = row["default"]
            out[f"{row['measure']}_verdict"] = row["verdict"]
    return out


def _plain(value):
    """JSON without NaN or infinities (None in their place: the comparison rows say "never" in words)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _uniform(rows: list[dict]) -> list[dict]:
    """Rows with the same columns (the union, in order of appearance; None where a row has none)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [{key: row.get(key) for key in columns} for row in rows]


def key_of(measure: str) -> str:
    """A measure's name as one key of a dotted path (``probes.r2_mlp/period`` → ``probes_r2_mlp_period``)."""
    return measure.replace(".", "_").replace("/", "_")


def reading(rows: list[dict], question: str) -> str:
    """One paragraph on one question from a variant's comparison rows on one kind: difficulty quotes every
    measure; dynamics and the algorithm quote the measures that differ and name those within the seed spread."""
    mine = [r for r in rows if r["question"] == question and r["verdict"] != "not measured"]
    if not mine:
        return "Not measured."
    if question == "difficulty":
        return "; ".join(r["statement"] for r in mine) + "."
    differ = [r for r in mine if r["verdict"] in ("higher", "lower")]
    same = [r for r in mine if r["verdict"] not in ("higher", "lower")]
    parts = [f"Differs from the default in {len(differ)} of {len(mine)} measures" + (": " + "; ".join(r["statement"] for r in differ) if differ else "") + "."]
    if same:
        parts.append(f"Within the seed spread: {', '.join(r['label'] for r in same)}.")
    return " ".join(parts)


def by_variant(data: dict) -> dict:
    """``variant → kind → {summary, description, difficulty, dynamics, algorithm, statements, verdicts}``: what a
    page quotes by name (``by_variant.target_outside.stochastic.algorithm``; ``statements`` and ``verdicts`` by
    :func:`key_of` the measure), so that no quote depends on the order of a table's rows."""
    found: dict = {}
    for row in data.get("summary", []):
        rows = [r for r in data["comparisons"] if r["kind"] == row["kind"] and r["variant"] == row["variant"]]
        found.setdefault(row["variant"], {})[row["kind"]] = {
            "summary": row["statement"], "description": row["description"],
            **{question: reading(rows, question) for question in ("difficulty", "dynamics", "algorithm")},
            "statements": {key_of(r["measure"]): r["statement"] for r in rows}, "verdicts": {key_of(r["measure"]): r["verdict"] for r in rows},
        }  # fmt: skip
    return found


TABLES = ("summary", "difficulty", "comparisons", "runs")
"""The tables written as ``variants_NAME.csv`` beside ``variants.json``."""


def write_variants(result: VariantsResult, out: str | Path) -> list[Path]:
    """``out/variants.json`` (every table; the comparisons also per variant, under ``comparisons_VARIANT``),
    ``out/variants_TABLE.csv`` for each of :data:`TABLES`, and the figures; returns the paths written."""
    from nrecur.studies.variants_figures import plot_variants

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = _plain(result.to_json())
    for key in ("runs", "curves", "period_curves"):
        data[key] = _uniform(data[key])
    for variant in dict.fromkeys(row["variant"] for row in result.comparisons):
        data[f"comparisons_{variant}"] = [row for row in data["comparisons"] if row["variant"] == variant]
    data["by_variant"] = by_variant(data)
    for key in [k for k, v in data.items() if isinstance(v, list) and not v]:
        data.pop(key)  # a table needs rows (a study of no finished run writes none)
    paths = [out / "variants.json"]
    atomic_write_text(paths[0], json.dumps(data, indent=1) + "\n")
    for name in TABLES:
        if data.get(name):
            paths.append(out / f"variants_{name}.csv")
            atomic_write_text(paths[-1], pd.DataFrame(data[name]).to_csv(index=False))
    return paths + plot_variants(data, out)
