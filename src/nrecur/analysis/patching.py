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

The batched path patches one site for every position (and head) at once:
the batch is expanded to pairs × cells, each row patching one cell. Three
exact shortcuts make it cheap: a run starts from the destination's cached
residual stream entering the site's block (the blocks before it are
unchanged); attention output, MLP output and a head's ``z`` are position-wise,
so the block is recomputed at the patched position only and the run goes on
from the next block; and the last block computes its query, attention output
and MLP at the last position only (the model's ``start_at_layer`` and
``last_position_only``). ``patch_cell`` is the plain one-forward-per-cell
reference it is tested against (and ``benchmarks/bench_patching.py`` times
against). Steering along probe directions is :mod:`nrecur.analysis.steering`;
its result is part of this one.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from torch import Tensor

from nrecur.analysis.base import progress_bar
from nrecur.analysis.contract import Analysis, Options, Result, initial_model, register
from nrecur.analysis.steering import SteeringScan, steering_scan
from nrecur.model import GPT
from nrecur.tasks import NRecurrence
from nrecur.tasks.sampler import Batch

__all__ = [
    "Cell",
    "PatchPairs",
    "PatchingOptions",
    "PatchingResult",
    "Scan",
    "compute",
    "deterministic_task",
    "kl_to",
    "moved_toward",
    "patch_cell",
    "patch_positions",
    "patchable_hooks",
    "sample_pairs",
    "scan",
    "site_hooks",
]

POSITIONWISE = ("hook_attn_out", "hook_mlp_out", "attn.hook_z")
"""Sites recomputed at the patched position only (see :func:`_patched_block_output`)."""

PER_HEAD = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z")
"""Hook suffixes with a head axis ``[batch, pos, head, d_head]``: patched one (position, head) at a time."""


# ---------------------------------------------------------------------------- pairs


def deterministic_task(task: NRecurrence) -> NRecurrence:
    """``task`` with ``p_noise = p_transition = 0``: every sequence follows one rule from start to end."""
    return type(task).model_validate({**task.model_dump(), "p_noise": 0.0, "p_transition": 0.0})


@dataclass(frozen=True)
class PatchPairs:
    """Destination and source sequences side by side (pair ``i`` is row ``i`` of both)."""

    destination: Batch
    source: Batch
    observer_source: np.ndarray
    """``[batch, vocab]`` the observer's predictive for the source at its last position (``O_src``)."""

    @property
    def period_differs(self) -> np.ndarray:
        """``[batch]`` bool: the source's period is not the destination's."""
        return self.destination.period[:, 0] != self.source.period[:, 0]


def sample_pairs(task: NRecurrence, n_pairs: int, length: int, seed: int = 0) -> PatchPairs:
    """``n_pairs`` destinations from ``task`` made deterministic, each paired with the next unused sequence
    of a second sample whose target differs; ``O_src`` comes from ``task``'s own observer."""
    rules = deterministic_task(task)
    destination = rules.sample(n_pairs, length, seed)
    pool = rules.sample(4 * n_pairs, length, seed + 1)
    used = np.zeros(len(pool), dtype=bool)
    chosen = np.empty(n_pairs, dtype=np.int64)
    for i, target in enumerate(destination.target[:, 0]):
        candidates = np.flatnonzero(~used & (pool.target[:, 0] != target))
        if not len(candidates):
            raise ValueError(f"could not find {n_pairs} source sequences with a different target; is there more than one target?")
        chosen[i] = candidates[0]
        used[chosen[i]] = True
    source = pool.select(chosen)
    observer = np.asarray(task.posterior(source.tokens).predictive, dtype=np.float64)[:, -1]
    return PatchPairs(destination=destination, source=source, observer_source=observer)


# ---------------------------------------------------------------------------- how far a prediction moved


def kl_to(target: Tensor, log_probs: Tensor) -> Tensor:
    """``KL(target ‖ exp(log_probs))`` over the last axis; ``target [batch, vocab]`` broadcast against
    ``log_probs [batch, ..., vocab]`` → ``[batch, ...]`` (float64)."""
    target = target.double().reshape(target.shape[0], *([1] * (log_probs.dim() - 2)), target.shape[-1])
    log_target = torch.where(target > 0, target.log(), torch.zeros_like(target))
    return (target * (log_target - log_probs.double())).sum(-1)


def moved_toward(target: Tensor, clean: Tensor, patched: Tensor) -> Tensor:
    """``1 - KL(target ‖ patched) / KL(target ‖ clean)``: ``target [batch, vocab]`` probabilities, ``clean
    [batch, vocab]`` and ``patched [batch, ..., vocab]`` log-probabilities → ``[batch, ...]``."""
    before = kl_to(target, clean[:, None, :]).reshape(-1, *([1] * (patched.dim() - 2)))
    return 1.0 - kl_to(target, patched) / before


# ---------------------------------------------------------------------------- where to patch


def patchable_hooks(model: GPT) -> list[str]:
    """Every hook point with a position axis second (``[batch, pos, ...]``): all but scores and patterns."""
    return [name for name in model.hook_names if not name.endswith(("hook_attn_scores", "hook_pattern"))]


def _check_hook(model: GPT, hook: str) -> None:
    known = patchable_hooks(model)
    if hook not in known:
        close = difflib.get_close_matches(hook, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; patchable hooks: {', '.join(known)}"
        why = " (attention scores and patterns have no position axis to patch; patch attn.hook_z)" if hook in model.hook_names else ""
        raise KeyError(f"cannot patch {hook!r}{why}{hint}")


def site_hooks(model: GPT) -> dict[str, list[str]]:
    """Site kind → its hook in each layer: ``resid`` (each block's ``hook_resid_pre``, then the last block's
    ``hook_resid_post``), ``attn_out``, ``mlp_out`` (unless attention-only) and ``head`` (``attn.hook_z``)."""
    layers = range(model.config.n_layers)
    final = f"blocks.{model.config.n_layers - 1}.hook_resid_post" if model.config.n_layers else "ln_final.hook_normalized"
    sites = {"resid": [f"blocks.{l}.hook_resid_pre" for l in layers] + [final]}
    sites["attn_out"] = [f"blocks.{l}.hook_attn_out" for l in layers]
    if not model.config.attn_only:
        sites["mlp_out"] = [f"blocks.{l}.hook_mlp_out" for l in layers]
    sites["head"] = [f"blocks.{l}.attn.hook_z" for l in layers]
    return sites


def _start_layer(model: GPT, hook: str) -> int | None:
    """The block whose residual input a run patched at ``hook`` can start from (n_layers: the final norm;
    None: from the tokens)."""
    match = re.match(r"blocks\.(\d+)\.", hook)
    if match:
        return int(match.group(1))
    return model.config.n_layers if hook.startswith("ln_final.") and model.config.n_layers else None


def _start_name(model: GPT, layer: int) -> str:
    """The hook holding the residual stream that enters block ``layer`` (n_layers: the final norm)."""
    return f"blocks.{layer}.hook_resid_pre" if layer < model.config.n_layers else f"blocks.{layer - 1}.hook_resid_post"


def _reaches_last_from_last_only(model: GPT, hook: str) -> bool:
    """Whether ``hook`` fires after the last attention has mixed positions: then only its last position can
    change the last prediction (everything after it is position-wise), and earlier positions are not run."""
    if model.config.n_layers == 0:
        return True
    names = model.hook_names
    return names.index(hook) >= names.index(f"blocks.{model.config.n_layers - 1}.attn.hook_z")


def _run_from(model: GPT, layer: int | None, start: Tensor) -> Tensor:
    """Logits ``[batch, vocab]`` at the last position from ``start``: the tokens ``[batch, pos]`` (``layer``
    None) or the residual stream ``[batch, pos, d_model]`` entering block ``layer`` (n_layers: ln_final). The
    last block runs at the last position only, so a patch in the last block goes through :func:`_run_hooked`."""
    return model(start, start_at_layer=layer, last_position_only=True)[:, -1]  # [batch, vocab]


def _run_hooked(model: GPT, layer: int | None, start: Tensor) -> Tensor:
    """As :func:`_run_from`, every block at every position (a hook in the last block sees them all)."""
    return model(start, start_at_layer=layer)[:, -1]  # [batch, vocab]


def _patched_block_output(model: GPT, clean: _Clean, hook: str, layer: int, row_pair: Tensor, row_pos: Tensor, row_head: Tensor) -> Tensor:
    """Block ``layer``'s output ``[row, d_model]`` at the patched position, with its attention output, MLP
    output or one head's ``z`` taken from the source there. Nothing else of the block changes: these sites
    are position-wise (the attention has already mixed positions), so the block's output differs from the
    clean one at that one position only."""
    block = model.blocks[layer]
    source = clean.source[hook][row_pair, row_pos]  # [row, ...]
    if hook.endswith("hook_mlp_out"):
        return clean.starts[f"blocks.{layer}.hook_resid_mid"][row_pair, row_pos] + source
    if hook.endswith("attn.hook_z"):
        z = clean.starts[hook][row_pair, row_pos].clone()  # [row, head, d_head]
        rows = torch.arange(len(z))
        z[rows, row_head] = source[rows, row_head]
        source = block.attn.out(z.flatten(1))  # [row, d_model]: the attention output
    resid = clean.starts[f"blocks.{layer}.hook_resid_pre"][row_pair, row_pos] + source  # [row, d_model]
    return resid if block.mlp is None else resid + block.mlp(block.ln2(resid))


# ---------------------------------------------------------------------------- patching


@dataclass(frozen=True)
class _Clean:
    """What the patched runs of one set of pairs start from: the destination's clean run and the source's cache."""

    destination_tokens: Tensor  # [batch, pos]
    log_probs: Tensor  # [batch, vocab] the destination's clean prediction at the last position
    starts: dict[str, Tensor]  # hook → the destination's activation [batch, pos, ...]: residual streams, z
    source: dict[str, Tensor]  # hook → the source's activation [batch, pos, ...]


@torch.no_grad()
def _clean_runs(model: GPT, destination: Tensor, source: Tensor, hooks: list[str]) -> _Clean:
    for hook in hooks:
        _check_hook(model, hook)
    layers = {_start_layer(model, hook) for hook in hooks} - {None}
    wanted = {_start_name(model, layer) for layer in layers}
    for hook in hooks:
        if hook.endswith(POSITIONWISE):
            layer = _start_layer(model, hook)
            wanted |= {_start_name(model, layer), _start_name(model, layer + 1), hook}
            if model.blocks[layer].mlp is not None:
                wanted.add(f"blocks.{layer}.hook_resid_mid")
    logits, cache = model.run_with_cache(destination, names_filter=lambda name: name in wanted)
    _, source_cache = model.run_with_cache(source, names_filter=hooks)
    return _Clean(destination, F.log_softmax(logits[:, -1].double(), -1), dict(cache), dict(source_cache))


@torch.no_grad()
def _patch_from(model: GPT, clean: _Clean, hook: str, max_rows: int) -> Tensor:
    """Log-probs ``[batch, pos, vocab]`` (``[batch, pos, head, vocab]`` per head) at the last position with
    ``hook`` patched from the source at one position (and head) per row of an expanded batch."""
    source = clean.source[hook]  # [batch, pos, ...]
    batch, pos = source.shape[:2]
    heads = source.shape[2] if hook.endswith(PER_HEAD) else 1
    out = clean.log_probs[:, None, None, :].expand(batch, pos, heads, -1).clone()  # unpatched cells stay clean
    positions = [pos - 1] if _reaches_last_from_last_only(model, hook) else list(range(pos))
    cells = torch.tensor([(p, h) for p in positions for h in range(heads)], dtype=torch.long)  # [cell, 2]
    layer = _start_layer(model, hook)
    positionwise = hook.endswith(POSITIONWISE)
    if positionwise:  # recompute block `layer` at the patched position, run on from the next block
        start = clean.starts[_start_name(model, layer + 1)]
    else:
        start = clean.destination_tokens if layer is None else clean.starts[_start_name(model, layer)]
    in_last_block = layer is not None and layer >= model.config.n_layers - 1  # (or the final norm): run it hooked
    per_chunk = max(1, max_rows // len(cells))
    for first in range(0, batch, per_chunk):
        pairs = torch.arange(first, min(batch, first + per_chunk))
        row_pair = pairs.repeat_interleave(len(cells))  # [row]
        row_pos, row_head = cells[:, 0].repeat(len(pairs)), cells[:, 1].repeat(len(pairs))
        rows = torch.arange(len(row_pair))

        def patch(activation: Tensor, _hook, row_pair=row_pair, row_pos=row_pos, row_head=row_head, rows=rows) -> Tensor:
            activation = activation.clone()
            if hook.endswith(PER_HEAD):
                activation[rows, row_pos, row_head] = source[row_pair, row_pos, row_head]
            else:
                activation[rows, row_pos] = source[row_pair, row_pos]
            return activation

        if positionwise:
            resid = start[row_pair]  # [row, pos, d_model]
            resid[rows, row_pos] = _patched_block_output(model, clean, hook, layer, row_pair, row_pos, row_head)
            logits = _run_from(model, layer + 1, resid)  # [row, vocab]
        else:
            with model.hooks([(hook, patch)]):
                logits = (_run_hooked if in_last_block else _run_from)(model, layer, start[row_pair])  # [row, vocab]
        log_probs = F.log_softmax(logits.double(), -1).view(len(pairs), len(positions), heads, -1)
        out[first : first + len(pairs), positions] = log_probs
    return out if hook.endswith(PER_HEAD) else out[:, :, 0]


def _as_tokens(model: GPT, tokens) -> Tensor:
    return torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=next(model.parameters()).device)


def patch_positions(model: GPT, destination, source, hook: str, max_rows: int = 4096) -> Tensor:
    """``destination``, ``source`` tokens ``[batch, pos]`` → the destination's log-probs at its last position
    with ``hook`` patched from the source at one position (and head) at a time: ``[batch, pos, vocab]``, or
    ``[batch, pos, head, vocab]`` for per-head hooks (q, k, v, z). Batched over positions and heads, at most
    ``max_rows`` sequences per forward pass. An unknown hook is a KeyError naming the closest ones."""
    was_training = model.training
    model.eval()
    try:
        clean = _clean_runs(model, _as_tokens(model, destination), _as_tokens(model, source), [hook])
        return _patch_from(model, clean, hook, max_rows)
    finally:
        model.train(was_training)


@torch.no_grad()
def patch_cell(model: GPT, destination, source, hook: str, position: int, head: int | None = None, source_activation: Tensor | None = None) -> Tensor:
    """The reference: one plain forward pass of the destination with ``hook`` patched from the source at
    ``position`` (and ``head``) → log-probs ``[batch, vocab]`` at the last position. ``source_activation``
    (the source's activation at ``hook``, ``[batch, pos, ...]``) saves the source's forward pass."""
    _check_hook(model, hook)
    destination = _as_tokens(model, destination)
    if source_activation is None:
        source_activation = model.run_with_cache(_as_tokens(model, source), names_filter=hook).cache[hook]

    def patch(activation: Tensor, _hook) -> Tensor:
        activation = activation.clone()
        where = (slice(None), position) if head is None else (slice(None), position, head)
        activation[where] = source_activation[where]
        return activation

    with model.hooks([(hook, patch)]):
        return F.log_softmax(model(destination)[:, -1].double(), -1)


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
        clean = _clean_runs(model, _as_tokens(model, pairs.destination.tokens), _as_tokens(model, pairs.source.tokens), hooks)
        per_pair = {}  # kind → [batch, layer, pos] or [batch, layer, head, pos]
        for kind, kind_hooks in progress_bar(sites.items(), f"patching{label}: sites", total=len(sites)):
            rows = [moved_toward(target, clean.log_probs.cpu(), _patch_from(model, clean, hook, max_rows).cpu()) for hook in kind_hooks]
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
