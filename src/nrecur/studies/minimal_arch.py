"""The smallest architecture that learns a task: walk candidates in order of parameter count.

The proposal's step 1: which is the smallest transformer that reaches the KL
threshold within a step budget? Candidates are every combination of layers,
residual width, heads (``d_head = d_model / n_heads``) and MLP (none, or ``4 ·
d_model``), each trained from ``seeds`` seeds with the run's stop at the
threshold; a candidate *qualifies* when at least ``need`` of its seeds reach the
threshold. Candidates run in order of parameter count, ``batch`` at a time, as
one resumable sweep (:mod:`nrecur.sweep`); the walk stops after the first batch
that holds a qualifying candidate — every smaller one has run and failed, so the
smallest qualifier is the answer — unless ``complete`` asks for all.
Fine-tuning (``init_from``) keeps the initial model's architecture: there is
one candidate, the initial run's own.

How to read it: ``minimal_arch.json`` names the answer and has one entry per
candidate (parameters, seeds at threshold, median steps); the figure plots
steps to the threshold against parameter count, one point per seed, ✕ on the
budget line for a seed that never got there. A grid of one candidate (a
fine-tuning) has no size axis: its figure is each seed's evaluation KL over
training instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from nrecur._io import atomic_write_text
from nrecur.analysis.figures.common import OKABE_ITO, pyplot, save_figure
from nrecur.model import GPTConfig
from nrecur.runs import load_run
from nrecur.sweep import BackendOptions, load_sweep, run_sweep, spec_from_data, study_options
from nrecur.train.folder import RunFolder
from nrecur.train.presets import STUDY_PRESET

__all__ = ["Candidate", "KLCurve", "MinimalArchResult", "answer_run", "candidates", "kl_curves", "minimal_arch", "plot_minimal_arch"]

ARCH_FIELDS = ("model.n_layers", "model.d_model", "model.n_heads", "model.d_head", "model.d_mlp")
"""The model fields a candidate sets (the sweep's zip axis)."""


@dataclass(frozen=True, order=True)
class Candidate:
    """One architecture; ordered by parameter count, then by its fields."""

    n_params: int
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def name(self) -> str:
        mlp = f"mlp {self.d_mlp}" if self.d_mlp else "attn-only"
        return f"L{self.n_layers} d{self.d_model} h{self.n_heads}×{self.d_head} {mlp}"

    def values(self) -> tuple[int, ...]:
        """The values of :data:`ARCH_FIELDS`."""
        return (self.n_layers, self.d_model, self.n_heads, self.d_head, self.d_mlp)


def candidates(base: GPTConfig, layers=(1, 2, 3), widths=(16, 32, 64), heads=(1, 2, 4, 8), mlp=(False, True), min_d_head: int = 4) -> list[Candidate]:
    """Every architecture of the grid with ``d_head = d_model / n_heads >= min_d_head``, by parameter count;
    the other model fields (vocab, context, activation, norm) are ``base``'s."""
    found = set()
    for n_layers in layers:
        for d_model in widths:
            for n_heads in heads:
                if d_model % n_heads or d_model // n_heads < min_d_head:
                    continue
                for with_mlp in mlp:
                    d_mlp = 4 * d_model if with_mlp else 0
                    config = base.model_copy(update={"n_layers": n_layers, "d_model": d_model, "n_heads": n_heads, "d_head": d_model // n_heads, "d_mlp": d_mlp})
                    found.add(Candidate(config.n_params, n_layers, d_model, n_heads, d_mlp))
    return sorted(found)


@dataclass(frozen=True)
class MinimalArchResult:
    """The walk's answer and every candidate that ran."""

    minimal: dict | None
    """The smallest qualifying candidate (its entry of :attr:`table`), None if none qualified."""
    table: list[dict]
    """Per candidate that ran: name, fields, parameters, seeds at the threshold, median steps and seconds to it."""
    options: dict
    per_seed: list[dict] = field(default_factory=list)
    """Per trial: candidate name, parameters, seed, steps to the threshold (None if never), steps trained."""

    def to_json(self) -> dict:
        return {"minimal": self.minimal, "options": self.options, "candidates": self.table, "trials": self.per_seed}

    @classmethod
    def from_json(cls, data: dict) -> "MinimalArchResult":
        """The result as :meth:`to_json` wrote it (``minimal_arch.json``)."""
        return cls(minimal=data["minimal"], table=data["candidates"], options=data["options"], per_seed=data["trials"])


def _spec(name: str, preset: str | None, variant: str, base: dict, walked: list[Candidate], seeds: int) -> dict:
    return {
        "name": name,
        **({"preset": preset} if preset else {}),
        "variant": variant,
        "base": base,
        "zip": [{path: [c.values()[i] for c in walked] for i, path in enumerate(ARCH_FIELDS)}],
        "seeds": seeds,
    }


def _int_or_none(value) -> int | None:
    """A table cell as an int; None for a missing value (None, NaN or pandas' NA)."""
    return None if pd.isna(value) else int(value)


def _summarize(frame, walked: list[Candidate], need: int) -> tuple[list[dict], list[dict]]:
    table, per_seed = [], []
    for candidate in walked:
        mask = np.ones(len(frame), dtype=bool)
        for path, value in zip(ARCH_FIELDS, candidate.values()):
            mask &= frame[path].to_numpy() == value
        rows = frame[mask]
        reached = rows["steps_to_threshold"].dropna()
        done = rows["status"].isin(["ok", "stopped", "failed"]).all() and len(rows) > 0
        table.append({
            "name": candidate.name,
            **dict(zip(("n_layers", "d_model", "n_heads", "d_head", "d_mlp"), candidate.values())),
            "n_params": candidate.n_params,
            "seeds": len(rows),
            "seeds_at_threshold": len(reached),
            "qualifies": bool(done and len(reached) >= need),
            "median_steps_to_threshold": float(reached.median()) if len(reached) else None,
            "median_seconds_to_threshold": float(rows["seconds_to_threshold"].dropna().median()) if len(reached) else None,
            "median_final_kl": float(rows["final_kl"].median()) if rows["final_kl"].notna().any() else None,
        })  # fmt: skip
        for _, row in rows.iterrows():
            per_seed.append({
                "name": candidate.name, "n_params": candidate.n_params, "seed": int(row["seed"]),
                "steps_to_threshold": _int_or_none(row["steps_to_threshold"]), "steps": _int_or_none(row["steps"]),
                "status": row["status"], "run_dir": str(row["run_dir"]),
                "final_kl": None if pd.isna(row["final_kl"]) else float(row["final_kl"]),
            })  # fmt: skip
    return table, per_seed


def answer_run(study: str | Path) -> Path:
    """The run folder of the answer of the minimal-architecture study in ``study``: its first seed (in seed
    order) that reached the threshold — what ``init_from`` of a fine-tuning walk may name as the study."""
    data = json.loads((Path(study) / "minimal_arch.json").read_text())
    if data["minimal"] is None:
        raise ValueError(f"{study}: the minimal-architecture study found no architecture to start from")
    name = data["minimal"]["name"]
    seeds = sorted((t for t in data["trials"] if t["name"] == name and t["steps_to_threshold"] is not None), key=lambda t: t["seed"])
    return Path(seeds[0]["run_dir"])


def minimal_arch(
    out: str | Path,
    preset: str = STUDY_PRESET,
    variant: str = "run",
    train: dict | None = None,
    init_from: str | None = None,
    seeds: int = 3,
    need: int = 2,
    arch: dict | None = None,
    batch: int = 4,
    complete: bool = False,
    backend: str = "local",
    options: BackendOptions = BackendOptions(),
    report=print,
) -> MinimalArchResult:
    """Walk the architectures of :func:`candidates` (``arch``: its keyword arguments) for ``preset``'s
    ``variant`` with ``train`` overriding its training fields (e.g. ``steps``, ``kl_threshold``); the sweep
    folder is ``out/sweep``, the result ``out/minimal_arch.json`` and ``.png``. See the module docstring."""
    if not 1 <= need <= seeds:
        raise ValueError(f"need must be between 1 and seeds ({seeds}), got {need}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    out = Path(out)
    base: dict = {"train": {"stop_at_threshold": True, "time_budget": 0.0, "log_checkpoints": 0, **(train or {})}}
    from nrecur.sweep.spec import SweepSpec

    base_config = SweepSpec.model_validate({"preset": preset, "variant": variant, "base": base}).base_config()
    if init_from is not None:
        init_from = str(answer_run(init_from) if (Path(init_from) / "minimal_arch.json").exists() else init_from)
        model = load_run(init_from).config.model
        only = Candidate(model.n_params, model.n_layers, model.d_model, model.n_heads, model.d_mlp)
        pool = [only]
        base["init_from"] = str(Path(init_from).resolve())
    else:
        pool = candidates(GPTConfig.model_validate(base_config["model"]), **(arch or {}))
    if not pool:
        raise ValueError(f"no candidate architecture: every width × heads gives d_head = d_model / n_heads < 4 ({arch})")
    threshold = base_config["train"]["kl_threshold"]
    budget = base_config["train"]["steps"]
    walked: list[Candidate] = []
    table: list[dict] = []
    per_seed: list[dict] = []
    for start in range(0, len(pool), batch):
        walked = pool[: start + batch]
        spec = spec_from_data(_spec(f"minimal-arch-{preset}-{variant}", preset, variant, base, walked, seeds), "minimal-arch")
        run_sweep(spec, out / "sweep", backend=backend, options=study_options(options), report=report)
        table, per_seed = _summarize(load_sweep(out / "sweep"), walked, need)
        if not complete and any(entry["qualifies"] for entry in table):
            break
    minimal = next((entry for entry in table if entry["qualifies"]), None)
    run_options = {
        "preset": preset, "variant": variant, "kl_threshold": threshold, "step_budget": budget, "seeds": seeds, "need": need,
        "init_from": init_from, "candidates_in_grid": len(pool), "candidates_run": len(walked), "complete": complete,
    }  # fmt: skip
    result = MinimalArchResult(minimal=minimal, table=table, options=run_options, per_seed=per_seed)
    atomic_write_text(out / "minimal_arch.json", json.dumps(result.to_json(), indent=1) + "\n")
    plot_minimal_arch(result, out)
    return result


class KLCurve(NamedTuple):
    """One trial's evaluations, read from its run folder."""

    trial: dict
    """Its :attr:`MinimalArchResult.per_seed` entry."""
    steps: list[int]
    kl: list[float]
    """Eval KL(observer ‖ model) at each of ``steps``."""


def kl_curves(result: MinimalArchResult) -> list[KLCurve]:
    """Per trial of ``result``, the steps and eval KL of every evaluation (empty lists for a run that has not
    evaluated, or whose folder is gone)."""
    curves = []
    for trial in result.per_seed:
        lines = [line for line in RunFolder(trial["run_dir"]).read_metrics() if isinstance(line.get("eval/kl"), (int, float))]
        curves.append(KLCurve(trial, [line["step"] for line in lines], [line["eval/kl"] for line in lines]))
    return curves


def _run_name(path: str) -> str:
    """A run by its folder's name; a study's trial (``STUDY/sweep/trials/ID``) as ``STUDY's trial ID``."""
    run = Path(path)
    return f"{run.parents[2].name}'s trial {run.name}" if run.parent.name == "trials" and len(run.parents) > 2 else run.name


def _plot_one_candidate(result: MinimalArchResult, folder: str | Path, stem: str) -> list[Path]:
    """Each seed's eval KL over training (log), the threshold dotted, the step it was reached marked."""
    plt = pyplot()
    o = result.options
    fig, ax = plt.subplots(figsize=(8, 4.6), layout="constrained")
    for i, curve in enumerate(kl_curves(result)):
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        reached, final = curve.trial["steps_to_threshold"], curve.trial.get("final_kl")
        if reached is not None:
            outcome = f"KL ≤ {o['kl_threshold']} at step {reached:,}"
        else:
            outcome = "no evaluation" if final is None else f"not reached (final KL {final:.3g})"
        ax.plot(curve.steps, curve.kl, color=colour, lw=1.3, label=f"seed {curve.trial['seed']}: {outcome}")
        if reached in curve.steps:
            ax.scatter([reached], [curve.kl[curve.steps.index(reached)]], color=colour, s=30, zorder=3)
    ax.axhline(o["kl_threshold"], color="#999999", ls=":", lw=1, label=f"threshold {o['kl_threshold']}")
    ax.axvline(o["step_budget"], color="#999999", ls="--", lw=1, label=f"budget {o['step_budget']:,} steps")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("eval KL(observer ‖ model), nats/token")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    m = result.table[0]
    start = f"fine-tuned from {_run_name(o['init_from'])}" if o.get("init_from") else "from scratch"
    ax.set_title(f"{o['preset']} {o['variant']}, {m['name']} ({m['n_params']:,} params),\n{start}: {m['seeds_at_threshold']} of {m['seeds']} seeds reached the threshold", fontsize=9)
    return save_figure(fig, folder, stem)


def plot_minimal_arch(result: MinimalArchResult, folder: str | Path, stem: str = "minimal_arch") -> list[Path]:
    """Left: final KL against parameter count, one point per seed, the threshold dotted. Right: steps to the
    threshold, one point per seed (✕ at the budget: never reached); the answer circled in both. One candidate
    in the grid (a fine-tuning): each seed's eval KL over training instead."""
    if result.options["candidates_in_grid"] == 1:
        return _plot_one_candidate(result, folder, stem)
    plt = pyplot()
    budget, threshold = result.options["step_budget"], result.options["kl_threshold"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), layout="constrained")
    finished = [t for t in result.per_seed if t.get("final_kl") is not None]
    reached = [t for t in result.per_seed if t["steps_to_threshold"] is not None]
    never = [t for t in result.per_seed if t["steps_to_threshold"] is None and t["status"] != "pending"]
    axes[0].scatter([t["n_params"] for t in finished], [t["final_kl"] for t in finished], color=[OKABE_ITO[0] if t["steps_to_threshold"] is not None else OKABE_ITO[3] for t in finished], s=18)
    axes[0].axhline(threshold, color="#999999", ls=":", lw=1, label=f"threshold {threshold}")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("final KL(observer ‖ model), nats/token")
    axes[0].set_title("where each seed ended (blue: reached the threshold)", fontsize=9)
    axes[1].scatter([t["n_params"] for t in reached], [t["steps_to_threshold"] for t in reached], color=OKABE_ITO[0], s=18, label="a seed: steps to the threshold")
    axes[1].scatter([t["n_params"] for t in never], [budget] * len(never), color=OKABE_ITO[3], marker="x", s=24, label="a seed that never reached it")
    axes[1].axhline(budget, color="#999999", ls=":", lw=1)
    axes[1].set_ylabel("training steps to the KL threshold")
    axes[1].set_title("steps to the threshold (✕ on the budget line: never)", fontsize=9)
    if result.minimal is not None:
        m = result.minimal
        label = f"smallest: {m['name']} ({m['n_params']:,} params)"
        axes[1].scatter([m["n_params"]], [m["median_steps_to_threshold"]], s=220, facecolors="none", edgecolors="black", lw=1.5, label=label)
        axes[0].scatter([m["n_params"]], [m["median_final_kl"]], s=220, facecolors="none", edgecolors="black", lw=1.5, label=label)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    o = result.options
    verdict = ": none qualifies" if result.minimal is None else ""
    fig.suptitle(f"{o['preset']} {o['variant']}: KL ≤ {threshold} within {budget:,} steps in ≥ {o['need']} of {o['seeds']} seeds ({o['candidates_run']} of {o['candidates_in_grid']} candidates run){verdict}", fontsize=10)
    return save_figure(fig, folder, stem)
