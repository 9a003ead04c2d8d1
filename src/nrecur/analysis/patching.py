"""Activation patching: which activation carries the rule, where, and how much of it?

We take pairs of sequences of the same length from the run's task made
deterministic (one rule per sequence): a *destination* that follows ``(n, t)``
and a *source* that follows ``(n', t')`` with ``t' ≠ t`` (the period may differ
too; pairs where it does are reported apart). For one site — the residual
stream entering each block (``hook_resid_pre``) and leaving the last one
(``hook_resid_post``), each block's attention output and MLP output, and each
head's ``z`` — and one position (and head), we run the destination with the
source's activation copied in there, and measure at the destination's last
position how far the prediction *moves* toward the source's rule (SPEC §5)::

    moved = 1 - KL(O_src ‖ M_patched) / KL(O_src ‖ M_clean)

with ``O_src`` the exact observer's predictive (of the run's task) for the
source sequence at its last position: the source has the same length, so the
phase asserted is the source's. 0 is no effect, 1 is the source's belief
exactly, below 0 a move away from it. Every (site, layer[, head], position) is
averaged over pairs.

How to read it: a position × site heatmap (and one per head). The residual
stream at the last position of the last block always moves close to 1 on a
trained model (it *is* the prediction, up to the model's own error on the
source); what matters is how early (layer) and where (which earlier positions,
which heads) the rule is already carried (``moved_best_before_last``). A patch
at an earlier position of a late site after the last attention cannot reach the
last position at all and moves exactly nothing. Every figure stands beside the
same scan on the same pairs on the run's own initialization
(``…_random_init``): a random model's prediction hardly depends on the rule,
so there even the final residual stream moves little; a model trained for one
step sits at that control. Steering's figures stand beside a random direction
of the same norm (``steer_*_random``), no edit (``steer_success_best_no_edit``)
and the same scan on the initialization; its hook and α are chosen on half the
destinations and every steering figure is read on the other half.

The pairs are drawn by :mod:`nrecur.analysis.patch_pairs`; the patched runs,
batched over every position and head of a site and checked against one plain
forward pass per cell (``patch_cell``), are :mod:`nrecur.analysis.patch_runs`.
Steering along probe directions is :mod:`nrecur.analysis.steering`; its
result is part of this one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pydantic
import torch

from nrecur.analysis.base import progress_bar
from nrecur.analysis.contract import Analysis, Options, Result, initial_model, register
from nrecur.analysis.patch_pairs import PatchPairs, deterministic_task, kl_to, moved_toward, sample_pairs
from nrecur.analysis.patch_runs import as_tokens, clean_runs, patch_cell, patch_from, patch_positions, patchable_hooks, site_hooks
from nrecur.analysis.steering import SteeringScan, steering_scan
from nrecur.model import GPT
from nrecur.tasks import NRecurrence

__all__ = [  # the pairs and the patched runs are re-exported from nrecur.analysis.patch_pairs and .patch_runs
    "Cell", "PatchPairs", "PatchingOptions", "PatchingResult", "Scan", "compute", "deterministic_task", "kl_to", "moved_toward", "patch_cell",
    "patch_positions", "patchable_hooks", "sample_pairs", "scan", "site_hooks",
]  # fmt: skip

# ---------------------------------------------------------------------------- the analysis


class PatchingOptions(Options):
    n_sequences: int = pydantic.Field(256, ge=2)
    """Destination–source pairs patched (each destination paired with a source of another target)."""
    max_rows: int = pydantic.Field(4096, ge=1)
    """At most this many sequences in one forward pass of the batched scan (memory against speed)."""
    steer: bool = True
    """Also steer along probe directions (:mod:`nrecur.analysis.steering`) on the same destinations."""


@dataclass(frozen=True)
class Cell:
    """One cell of the scan: a site's hook, a position (and a head)."""

    kind: str
    hook: str
    row: int
    """The hook's row in its kind's ``moved`` array (its layer; ``resid`` has the final residual stream last)."""
    position: int
    head: int | None
    moved: float
    """Mean moved over all pairs."""
    name: str
    """``hook[head h]@position``."""


@dataclass(frozen=True)
class Scan:
    """Mean moved toward the source's rule for every (site, layer[, head], position), on one model."""

    moved: dict[str, list]
    """Site kind → ``[layer, pos]`` (``head``: ``[layer, head, pos]``) mean moved over all pairs."""
    moved_by_period: dict[str, dict[str, list]]
    """``"period differs"`` / ``"same period"`` → the same arrays over those pairs only (NaN where there are none)."""
    best: Cell
    """The cell with the largest mean moved."""
    best_by_kind: dict[str, Cell]
    best_before_last: Cell
    """The largest before the last position (where the residual stream carries the rule before it is read)."""
    kl_clean: float
    """Mean KL(O_src ‖ M_clean): how far the destination's prediction is from the source's rule unpatched."""


@dataclass(frozen=True)
class PatchingResult(Result):
    """Activation patching between rules on the trained model and on its initialization, and steering."""

    headline: dict[str, float]
    options: PatchingOptions
    step: int
    length: int
    """Positions of every sequence (the prediction is read at the last)."""
    sites: dict[str, list[str]]
    """Site kind → its hook per row of ``moved[kind]`` (``resid`` has one row more: the final residual stream)."""
    share_period_differs: float
    """Share of the pairs whose source has another period than its destination."""
    trained: Scan
    random_init: Scan
    """The same scan on the run's own initialization (the control), on the same pairs."""
    steering: SteeringScan | None
    steering_random_init: SteeringScan | None
    """The steering scan on the run's own initialization."""


def _best(kind: str, hooks: list[str], values: np.ndarray) -> Cell:
    index = np.unravel_index(int(np.nanargmax(values)), values.shape)
    head = int(index[1]) if values.ndim == 3 else None
    hook, position = hooks[index[0]], int(index[-1])
    name = hook + (f"[head {head}]" if head is not None else "") + f"@{position}"
    return Cell(kind=kind, hook=hook, row=int(index[0]), position=position, head=head, moved=float(values[index]), name=name)


@torch.no_grad()
def scan(model: GPT, pairs: PatchPairs, max_rows: int = 4096, label: str = "") -> Scan:
    """Patch every site, layer, head and position of ``model`` from each pair's source into its destination;
    see the module docstring."""
    sites = site_hooks(model)
    hooks = [hook for kind_hooks in sites.values() for hook in kind_hooks]
    target = torch.as_tensor(pairs.observer_source)
    was_training = model.training
    model.eval()
    try:
        clean = clean_runs(model, as_tokens(model, pairs.destination.tokens), as_tokens(model, pairs.source.tokens), hooks)
        per_pair = {}  # kind → [batch, layer, pos] or [batch, layer, head, pos]
        for kind, kind_hooks in progress_bar(sites.items(), f"patching{label}: sites", total=len(sites)):
            rows = [moved_toward(target, clean.log_probs.cpu(), patch_from(model, clean, hook, max_rows).cpu()) for hook in kind_hooks]
            per_pair[kind] = torch.stack(rows, 1).numpy()
            if kind == "head":
                per_pair[kind] = per_pair[kind].transpose(0, 1, 3, 2)  # [batch, layer, head, pos]
    finally:
        model.train(was_training)
    differs = pairs.period_differs
    moved = {kind: values.mean(0) for kind, values in per_pair.items()}
    by_period = {
        label: {kind: (values[mask].mean(0) if mask.any() else np.full(values.shape[1:], np.nan)).tolist() for kind, values in per_pair.items()}
        for label, mask in (("period differs", differs), ("same period", ~differs))
    }
    best_by_kind = {kind: _best(kind, sites[kind], values) for kind, values in moved.items()}
    best_before_last = max((_best(kind, sites[kind], values[..., :-1]) for kind, values in moved.items()), key=lambda cell: cell.moved)
    return Scan(
        moved={kind: values.tolist() for kind, values in moved.items()},
        moved_by_period=by_period,
        best=max(best_by_kind.values(), key=lambda cell: cell.moved),
        best_by_kind=best_by_kind,
        best_before_last=best_before_last,
        kl_clean=float(kl_to(target, clean.log_probs.cpu()[:, None]).mean()),
    )


def _at(values: list, cell: Cell) -> float:
    return float(np.asarray(values, dtype=float)[(cell.row, cell.head, cell.position) if cell.head is not None else (cell.row, cell.position)])


def _headline(trained: Scan, control: Scan, share_period_differs: float) -> dict[str, float]:
    headline: dict[str, float] = {}
    for suffix, found in (("", trained), ("_random_init", control)):
        headline[f"moved_best{suffix}"] = found.best.moved
    for suffix, found in (("", trained), ("_random_init", control)):
        headline.update({f"moved_best{suffix}/{kind}": cell.moved for kind, cell in found.best_by_kind.items()})
    for suffix, found in (("", trained), ("_random_init", control)):
        headline[f"moved_best_before_last{suffix}"] = found.best_before_last.moved
    for suffix, found in (("", trained), ("_random_init", control)):
        for label, key in (("period differs", "period_differs"), ("same period", "same_period")):
            headline[f"moved_best{suffix}/{key}"] = _at(found.moved_by_period[label][found.best.kind], found.best)
    headline["share_period_differs"] = share_period_differs
    headline["kl_clean"] = trained.kl_clean
    headline["kl_clean_random_init"] = control.kl_clean
    return headline


def _applies(run) -> str | None:
    if not isinstance(run.task, NRecurrence):
        return f"patching pairs sequences by n-recurrence rule; task kind {run.task.kind!r} has none"
    if run.task.vocab_size < 2 or len(run.task.rules()) < 2:
        return "needs at least two rules with different targets"
    return None


def compute(run, options: PatchingOptions) -> PatchingResult:
    """Patch every site, layer, head and position of ``run.model`` from a source sequence of another rule into
    ``n_sequences`` destination sequences, and the same on the run's initialization; with ``steer``, also the
    steering scan of :func:`nrecur.analysis.steering.steering_scan` on the same destinations, on both models."""
    why = _applies(run)
    if why is not None:
        raise ValueError(f"patching does not apply: {why}")
    pairs = sample_pairs(run.task, options.n_sequences, run.config.length, options.seed)
    initial = initial_model(run)
    trained = scan(run.model, pairs, options.max_rows)
    control = scan(initial, pairs, options.max_rows, " (initialization)")
    share = float(pairs.period_differs.mean())
    headline = _headline(trained, control, share)
    steering = steering_init = None
    if options.steer:
        steering = steering_scan(run, pairs.destination, seed=options.seed)
        steering_init = steering_scan(dataclasses.replace(run, model=initial), pairs.destination, seed=options.seed)
        headline.update(steering.headline)
        for name in ("steer_moved_best", "steer_success_best", "steer_probe_r2"):
            headline[f"{name}_random_init"] = steering_init.headline[name]
    return PatchingResult(
        headline=headline,
        options=options,
        step=run.step,
        length=run.config.length,
        sites=site_hooks(run.model),
        share_period_differs=share,
        trained=trained,
        random_init=control,
        steering=steering,
        steering_random_init=steering_init,
    )


PATCHING = register(
    Analysis(
        name="patching",
        description="activation patching between rules (residual stream, attention and MLP outputs, heads) and steering "
        "along probe directions, beside the same on the run's initialization",
        options=PatchingOptions,
        result=PatchingResult,
        compute=compute,
        applies=_applies,
        figures="nrecur.analysis.figures.patching:draw",
    )
)
