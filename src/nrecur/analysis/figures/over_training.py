"""The figure every analysis gets over training: its headline figures as curves over the saved checkpoints.

Each headline figure is drawn beside its control (the ``…_random_init`` /
``…_no_edit`` / ``…_shuffled`` figure of the same name, :data:`CONTROL_LABELS`) in one panel; an
analysis with a figure of its own over training (the belief simplex at each
checkpoint) adds it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nrecur.analysis.contract import ANALYSES, resolve_reference
from nrecur.analysis.figures.common import OKABE_ITO, pyplot, save_figure

__all__ = ["CONTROL_LABELS", "CONTROL_SUFFIXES", "control_label", "draw", "headline_panels"]

CONTROL_STYLES = (("#555555", "--"), ("#999999", ":"), ("#D55E00", "-."), ("#CC79A7", (0, (1, 1))))
"""Colour and dash of a panel's first, second, … control: told apart in grey and by their dashes."""
CONTROL_LABELS = {
    "_random_init": "initialization", "_shuffled": "shuffled", "_no_edit": "no edit", "_unablated": "unablated", "_random": "random",
    "_ceiling": "ceiling", "_baseline": "baseline",
}  # fmt: skip
"""Suffixes that mark a headline figure as a control of the figure named without it → the control's label.
``_random_init`` is the run's own initialization, the weights its training started from: a fresh model (its
``init_seed``), or a fine-tune's ``init_from`` source (labelled "fine-tuning source" where the result file's
``initialization`` says so); the suffix keeps its name for both, so that every result file reads alike."""
CONTROL_SUFFIXES = tuple(CONTROL_LABELS)


def control_label(suffix: str, initialization: Mapping[str, Any] | None = None) -> str:
    """The label of the control ``suffix`` (``_random_init`` or ``random_init``); ``initialization``: the result
    file's (:func:`~nrecur.analysis.contract.initialization_of`), naming a fine-tune's source as such."""
    suffix = "_" + suffix.removeprefix("_")
    if suffix == "_random_init" and isinstance(initialization, Mapping) and initialization.get("init_from"):
        return "fine-tuning source"
    return CONTROL_LABELS.get(suffix, suffix[1:].replace("_", " "))


def headline_panels(names: list[str]) -> list[tuple[str, list[str]]]:
    """Headline names grouped as ``(figure, [figure, its controls…])``, a control beside the figure it controls."""
    panels: dict[str, list[str]] = {}
    for name in names:
        base = name
        for suffix in CONTROL_SUFFIXES:
            stem, _, tail = name.partition("/")
            if stem.endswith(suffix):
                base = stem[: -len(suffix)] + (f"/{tail}" if tail else "")
                break
        panels.setdefault(base if base in names else name, []).append(name)
    return list(panels.items())


def draw(over, folder: Path) -> list[Path]:
    """The headline curves (``NAME_over_training_headline``) and the analysis's own figure over training."""
    plt = pyplot()
    names = [name for name in over.series if name != "checkpoints"]
    panels = headline_panels(names)
    paths: list[Path] = []
    if panels:
        columns = min(3, len(panels))
        rows = math.ceil(len(panels) / columns)
        fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.2 * rows), squeeze=False, layout="constrained")
        steps = np.maximum(np.asarray(over.steps, dtype=float), 1)  # step 0 drawn at 1 on the log axis
        for ax in axes.ravel()[len(panels) :]:
            ax.axis("off")
        for ax, (title, members) in zip(axes.ravel(), panels):
            controls = iter(CONTROL_STYLES)
            for name in members:
                colour, style = (OKABE_ITO[0], "-") if name == title else next(controls)
                label = "model" if name == title else control_label(next((c for c in CONTROL_SUFFIXES if name.partition("/")[0].endswith(c)), name))
                ax.plot(steps, over.series[name], color=colour, ls=style, marker="o", ms=3, label=label)
            ax.set_xscale("log")
            ax.set_title(title, fontsize=11)
            ax.set_xlabel("training step (log)")
            ax.grid(alpha=0.3)
            if len(members) > 1:
                ax.legend(fontsize=10)
        fig.suptitle(f"{over.analysis} over training: each headline figure (solid) beside its controls (dashed)", fontsize=12)
        paths += save_figure(fig, folder, f"{over.name}_headline")
    own = ANALYSES[over.analysis].over_training_figures if over.analysis in ANALYSES else None
    if own:
        paths += resolve_reference(own)(over, folder)
    return paths
