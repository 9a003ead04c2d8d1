"""What every analysis shares: its result's shape, writing it next to the run, and activations.

An analysis is one module of this package (``analysis/<name>.py``) that opens
with a paragraph on the technique, and one public function that takes a loaded
run (:class:`nrecur.runs.Run`) and options and returns a frozen result. Every
result has a flat ``headline`` of named figures (what heads its report
section), ``to_json()`` with the data behind every figure, and ``plot(folder)``
that draws its figures there (PNG and SVG) and returns their paths.
:func:`write_analysis` puts ``analysis/NAME.json`` and the figures in the run
folder, atomically. Analyses register in :data:`ANALYSES`, which ``nrecur
analyze --what`` offers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from nrecur._io import atomic_write, atomic_write_text
from nrecur.model import GPT

__all__ = ["ANALYSES", "OKABE_ITO", "Analysis", "AnalysisResult", "cached", "plain_log_ticks", "progress_bar", "pyplot", "register_analysis", "residual_activations", "save_figure", "write_analysis"]


class AnalysisResult(Protocol):
    """What an analysis returns."""

    name: str
    headline: dict[str, float]

    def to_json(self) -> dict: ...

    def plot(self, folder: Path) -> list[Path]: ...


@dataclass(frozen=True)
class Analysis:
    """A registered analysis: ``run(run, **options) -> AnalysisResult`` and when it applies."""

    name: str
    run: Callable[..., AnalysisResult]
    applies: Callable[[Any], str | None]
    """``applies(run) -> None`` when the analysis applies to the run, else why not (one line)."""
    description: str
    over_training: Callable[..., AnalysisResult] | None = None
    """``over_training(run, steps, load, seed=..., n_sequences=...)``: the analysis at every saved checkpoint
    (``--checkpoints all``), where it makes sense over training."""


ANALYSES: dict[str, Analysis] = {}
"""Analyses by name, in the order they were registered (``--what all`` runs those that apply)."""


def register_analysis(name: str, applies: Callable[[Any], str | None], description: str, over_training: Callable[..., AnalysisResult] | None = None):
    def decorate(fn: Callable[..., AnalysisResult]) -> Callable[..., AnalysisResult]:
        ANALYSES[name] = Analysis(name=name, run=fn, applies=applies, description=description, over_training=over_training)
        return fn

    return decorate


def _clean(value: Any) -> Any:
    """JSON-ready: arrays to lists, NaN and inf to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_analysis(result: AnalysisResult, analysis_dir: str | Path, step: int | None = None, interventions: list[str] | None = None) -> list[Path]:
    """``analysis_dir/NAME.json`` (headline first, then the checkpoint ``step`` when given, the training-time
    interventions the model was analyzed with under ``analyzed_with_interventions`` when any, then the data) and the figures; returns the paths written."""
    analysis_dir = Path(analysis_dir)
    analysis_dir.mkdir(parents=True, exist_ok=True)
    figures = result.plot(analysis_dir)
    data = {"name": result.name, "headline": result.headline, **({"step": step} if step is not None else {})}
    data.update({"analyzed_with_interventions": interventions} if interventions else {})
    data.update(result.to_json())
    data["figures"] = [path.name for path in figures]
    path = analysis_dir / f"{result.name}.json"
    atomic_write_text(path, json.dumps(_clean(data), indent=1) + "\n")
    return [path, *figures]


OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
"""The Okabe–Ito colours, distinguishable with the common colour-vision deficiencies: lines of one figure."""


def progress_bar(iterable, description: str, enabled: bool, total: int | None = None):
    """``iterable`` behind a tqdm bar on stderr when ``enabled`` and stderr is a terminal; else as it is."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, total=total, leave=False, disable=None if enabled else True, dynamic_ncols=True)


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures are only ever written to files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plain_log_ticks(axis) -> None:
    """Label a log-scaled matplotlib ``axis`` (``ax.yaxis``, a colour bar's ``bar.ax.yaxis``) in plain numbers
    (0.2, 0.001 rather than 2×10⁻¹, 10⁻³), its minor ticks too where it spans under a decade (there the
    major ticks alone may be one or none)."""
    from matplotlib.ticker import FuncFormatter

    def under_a_decade() -> bool:
        low, high = sorted(axis.get_view_interval())
        return low > 0 and math.log10(high / low) < 1

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if under_a_decade() else ""))


def save_figure(fig, folder: str | Path, stem: str) -> list[Path]:
    """Save a matplotlib figure as ``stem.png`` and ``stem.svg`` in ``folder`` (atomically); close it."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, kwargs in ((".png", {"dpi": 120}), (".svg", {})):
        path = folder / f"{stem}{suffix}"
        atomic_write(path, lambda handle, fmt=suffix[1:], kw=kwargs: fig.savefig(handle, format=fmt, bbox_inches="tight", **kw))
        paths.append(path)
    plt.close(fig)
    return paths


#: The residual hook points probes read, in the order of the forward pass (``embed`` = hook_embed + hook_pos_embed).
def residual_hooks(model: GPT) -> list[str]:
    names = ["embed"]
    for layer in range(model.config.n_layers):
        names += [f"blocks.{layer}.hook_resid_mid", f"blocks.{layer}.hook_resid_post"]
    return names + ["ln_final.hook_normalized"]


@torch.no_grad()
def cached(model: GPT, tokens: np.ndarray, names: list[str], chunk: int = 512) -> dict[str, np.ndarray]:
    """``{name: activations}`` float32 at the hook points ``names`` on ``tokens [batch, pos]``: in eval mode,
    on the model's device, ``chunk`` sequences at a time."""
    wanted = set(names)
    device = next(model.parameters()).device
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(tokens), chunk):
            batch = torch.as_tensor(np.asarray(tokens[start : start + chunk]), dtype=torch.long, device=device)
            _, cache = model.run_with_cache(batch, names_filter=lambda name: name in wanted)
            for name in names:
                parts[name].append(cache[name].float().cpu().numpy())
    finally:
        model.train(was_training)
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def residual_activations(model: GPT, tokens: np.ndarray, chunk: int = 512) -> dict[str, np.ndarray]:
    """``{hook: [batch, pos, d_model]}`` float32 activations at every residual hook point (eval mode)."""
    hooks = residual_hooks(model)
    acts = cached(model, tokens, ["hook_embed", "hook_pos_embed", *hooks[1:]], chunk)
    return {"embed": acts.pop("hook_embed") + acts.pop("hook_pos_embed"), **acts}
