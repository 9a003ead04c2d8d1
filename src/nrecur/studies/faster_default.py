"""A faster default: the training settings that reach KL ≤ 0.01 soonest on a 2-core CPU.

Stage 1, *search*: a random search over the peak learning rate, batch size,
warm-up, weight decay, the cosine schedule's length and model width (a sweep, one thread per trial, trials
side by side), each trial stopping at the threshold. Trials side by side share
the machine, so their wall times are not what one run alone would take; each
trial's *estimated* time alone is its steps to the threshold times the
seconds per step of its shape (model, batch) measured alone with all threads
(:func:`seconds_per_step`). Stage 2, *confirm*: the ``confirm`` best estimates
and the current preset train again, one at a time with all threads, from
``confirm_seeds`` seeds each — their measured wall time to the threshold is
the answer.

How to read it: ``faster_default.json`` lists every searched trial with its
estimate, and the confirmed candidates beside the preset (median seconds and
steps to the threshold over seeds); the winner replaces the preset only if it
is faster *and* the main job's other runs still meet their targets — a
decision the study leaves to a person.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nrecur._io import atomic_write_text
from nrecur.analysis.figures.common import OKABE_ITO, pyplot, save_figure
from nrecur.model import GPT, GPTConfig
from nrecur.sweep import BackendOptions, load_sweep, run_sweep, spec_from_data, study_options
from nrecur.train.config import TrainConfig
from nrecur.train.optimizers import make_optimizer
from nrecur.train.presets import STUDY_PRESET

__all__ = ["DECAY_FRACTIONS", "SEARCH", "FasterDefaultResult", "faster_default", "seconds_per_step"]

SEARCH = {
    "train.lr": {"low": 1e-3, "high": 1e-2, "log": True},
    "train.batch_size": {"choices": [32, 64, 128]},
    "train.warmup_steps": {"choices": [0, 50, 100, 200]},
    "train.weight_decay": {"choices": [0.0, 0.03, 0.1, 0.3]},
}
"""The optimizer settings drawn at random (the widths are a grid axis; the schedule's length is drawn too, see
:data:`DECAY_FRACTIONS`)."""
DECAY_FRACTIONS = (0.5, 0.7, 1.0)
"""The cosine schedule's length (``train.decay_steps``) is drawn from these fractions of the step budget: KL
falls below the threshold as the learning rate anneals, so a shorter schedule may reach it in fewer steps (the
first run of the study, without it, found every setting needing ~4,000 of 5,000 steps)."""
WIDTHS = (
    {"model.d_model": 32, "model.n_heads": 4, "model.d_head": 8, "model.d_mlp": 128},
    {"model.d_model": 48, "model.n_heads": 6, "model.d_head": 8, "model.d_mlp": 192},
    {"model.d_model": 64, "model.n_heads": 8, "model.d_head": 8, "model.d_mlp": 256},
)
"""The model sizes searched (a zip axis; the same fields are set when a candidate is confirmed)."""


def seconds_per_step(
    model: GPTConfig, batch_size: int, length: int, steps: int = 30, threads: int | None = None, optimizer: str = "adamw"
) -> float:
    """Median seconds of one training step (forward, cross-entropy, backward, the ``optimizer`` step) of ``model``
    on random tokens ``[batch_size, length]``, alone in this process with ``threads`` torch threads (default: as set)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        net = GPT(model).train()
        stepper = make_optimizer(net, TrainConfig(optimizer=optimizer, lr=1e-3))
        tokens = torch.randint(0, model.vocab_size, (batch_size, length + 1))
        times = []
        for index in range(steps + 5):
            start = time.perf_counter()
            logits = net(tokens[:, :-1])  # [batch, pos, vocab]
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
            stepper.zero_grad(set_to_none=True)
            loss.backward()
            stepper.step()
            if index >= 5:  # warm-up steps do not count
                times.append(time.perf_counter() - start)
        return float(np.median(times))
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class FasterDefaultResult:
    """The searched trials with their estimates, and the confirmed candidates beside the preset."""

    searched: list[dict]
    confirmed: list[dict]
    """Per candidate (``preset`` first): its settings, median measured seconds and steps to the threshold, per-seed values."""
    options: dict

    def to_json(self) -> dict:
        return {"options": self.options, "confirmed": self.confirmed, "searched": self.searched}


def _settings(row) -> dict:
    """The searched fields of a table row (or a searched entry): dotted path → plain Python value."""
    keys = [*SEARCH, "train.decay_steps", *WIDTHS[0]]
    return {key: (row[key].item() if hasattr(row[key], "item") else row[key]) for key in keys if key in row}


def _search_fields(steps: int) -> dict:
    """:data:`SEARCH` and the schedule's length as :data:`DECAY_FRACTIONS` of ``steps``."""
    return {**SEARCH, "train.decay_steps": {"choices": sorted({round(f * steps) for f in DECAY_FRACTIONS})}}


def faster_default(
    out: str | Path,
    preset: str = STUDY_PRESET,
    samples: int = 8,
    steps: int = 5000,
    confirm: int = 3,
    confirm_seeds: int = 2,
    threshold: float | None = None,
    threads: int | None = None,
    options: BackendOptions = BackendOptions(),
    report=print,
) -> FasterDefaultResult:
    """Search (``samples`` random optimizer settings × the widths of :data:`WIDTHS`), then confirm the best
    ``confirm`` estimates and the preset alone with ``threads`` threads (default: torch's), to the preset's KL
    threshold or ``threshold``; see the module docstring. Writes ``out/faster_default.json`` and the figure."""
    out = Path(out)
    stopping = {"steps": steps, "stop_at_threshold": True, "time_budget": 0.0, "log_checkpoints": 0, **({"kl_threshold": threshold} if threshold is not None else {})}
    search = spec_from_data({
        "name": f"faster-default-{preset}", "preset": preset, "seeds": 1,
        "base": {"train": stopping},
        "zip": [{key: [width[key] for width in WIDTHS] for key in WIDTHS[0]}],
        "random": {"samples": samples, "seed": 0, "fields": _search_fields(steps)},
    }, "faster-default")  # fmt: skip
    run_sweep(search, out / "search", options=study_options(options), report=report)
    frame = load_sweep(out / "search")
    base = search.base_config()
    length = base["model"]["n_ctx"]
    timing: dict[tuple, float] = {}
    searched = []
    for _, row in frame.iterrows():
        model = GPTConfig.model_validate({**base["model"], **{key.split(".", 1)[1]: int(row[key]) for key in WIDTHS[0]}})
        shape = (model.d_model, model.n_heads, model.d_mlp, int(row["train.batch_size"]))
        if shape not in timing:
            timing[shape] = seconds_per_step(model, shape[-1], length, threads=threads, optimizer=base["train"]["optimizer"])
        reached = None if pd.isna(row["steps_to_threshold"]) else int(row["steps_to_threshold"])
        searched.append({
            **_settings(row), "steps_to_threshold": reached, "seconds_per_step": timing[shape],
            "estimated_seconds": None if reached is None else reached * timing[shape], "final_kl": float(row["final_kl"]),
        })  # fmt: skip
    ranked = sorted((s for s in searched if s["estimated_seconds"] is not None), key=lambda s: s["estimated_seconds"])
    candidates = [{"name": "preset", "settings": {}}]
    candidates += [{"name": f"search #{i + 1}", "settings": _settings(s), "search": s} for i, s in enumerate(ranked[:confirm])]
    confirmed = []
    for candidate in candidates:
        overrides = candidate["settings"]
        model_fields = {key.split(".", 1)[1]: value for key, value in overrides.items() if key.startswith("model.")}
        spec = spec_from_data({
            "name": f"confirm-{candidate['name']}", "preset": preset, "seeds": confirm_seeds,
            "base": {"train": {**stopping, **{k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("train.")}},
                     **({"model": model_fields} if model_fields else {})},
        }, "faster-default confirm")  # fmt: skip
        folder = out / "confirm" / candidate["name"].replace(" #", "-")
        run_sweep(spec, folder, options=study_options(BackendOptions(workers=1, threads=threads or torch.get_num_threads())), report=report)
        table = load_sweep(folder)
        seconds = [None if pd.isna(v) else float(v) for v in table["seconds_to_threshold"]]
        reached = [None if pd.isna(v) else int(v) for v in table["steps_to_threshold"]]
        done = [s for s in seconds if s is not None]
        confirmed.append({
            **candidate, "seconds_to_threshold": seconds, "steps_to_threshold": reached,
            "median_seconds": float(np.median(done)) if len(done) == len(seconds) else None,
            "median_steps": float(np.median([r for r in reached if r is not None])) if all(r is not None for r in reached) else None,
            "kl_threshold": base["train"]["kl_threshold"],
        })  # fmt: skip
    run_options = {"preset": preset, "samples": samples, "step_budget": steps, "confirm": confirm, "confirm_seeds": confirm_seeds, "threads": threads or torch.get_num_threads()}
    result = FasterDefaultResult(searched=searched, confirmed=confirmed, options=run_options)
    atomic_write_text(out / "faster_default.json", json.dumps(result.to_json(), indent=1) + "\n")
    plot_faster_default(result, out)
    return result


def plot_faster_default(result: FasterDefaultResult, folder: str | Path, stem: str = "faster_default") -> list[Path]:
    """Left: every searched trial's estimated time alone against its learning rate (marker: batch size,
    colour: width). Right: the confirmed candidates' measured seconds to the threshold, per seed."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
    widths = sorted({s["model.d_model"] for s in result.searched})
    batches = sorted({s["train.batch_size"] for s in result.searched})
    for s in result.searched:
        colour = OKABE_ITO[widths.index(s["model.d_model"]) % len(OKABE_ITO)]
        marker = "os^D"[batches.index(s["train.batch_size"]) % 4]
        y = s["estimated_seconds"] if s["estimated_seconds"] is not None else np.nan
        axes[0].scatter(s["train.lr"], y, color=colour, marker=marker, s=28)
    for width in widths:
        axes[0].scatter([], [], color=OKABE_ITO[widths.index(width) % len(OKABE_ITO)], label=f"d_model {width}")
    for batch in batches:
        axes[0].scatter([], [], color="grey", marker="os^D"[batches.index(batch) % 4], label=f"batch {batch}")
    if any(s["estimated_seconds"] is not None for s in result.searched):
        axes[0].set_xscale("log")
    else:
        axes[0].text(0.5, 0.5, "no searched trial reached the threshold", ha="center", va="center", transform=axes[0].transAxes)
    axes[0].set_xlabel("peak learning rate")
    axes[0].set_ylabel("estimated seconds alone to the threshold")
    axes[0].set_title("search: steps to the threshold × seconds per step alone (never reached: not drawn)", fontsize=9)
    axes[0].legend(fontsize=7)
    names = [f"{c['name']}\n{sum(v is not None for v in c['seconds_to_threshold'])} of {len(c['seconds_to_threshold'])} seeds" for c in result.confirmed]
    for index, candidate in enumerate(result.confirmed):
        values = [v for v in candidate["seconds_to_threshold"] if v is not None]
        axes[1].scatter([index] * len(values), values, color=OKABE_ITO[0] if index else "black", s=30)
        if candidate["median_seconds"] is not None:
            axes[1].hlines(candidate["median_seconds"], index - 0.25, index + 0.25, color="black")
    axes[1].set_xticks(range(len(names)), names)
    axes[1].set_ylabel("measured seconds to the threshold, alone")
    axes[1].set_ylim(bottom=0)
    axes[1].set_title(f"confirmed alone with {result.options['threads']} threads (bar: median; seeds that reached)", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
    return save_figure(fig, folder, stem)
