"""Patched forward passes: one activation taken from a source sequence, the destination run on from there.

:func:`patch_positions` patches a hook point from the source at one position
(and head) at a time, for every position at once: the batch is expanded to
pairs × cells, each row patching one cell. Three exact shortcuts make it cheap:
a run starts from the destination's cached residual stream entering the site's
block (the blocks before it are unchanged); attention output, MLP output and a
head's ``z`` are position-wise, so the block is recomputed at the patched
position only and the run goes on from the next block; and the last block
computes its query, attention output and MLP at the last position only (the
model's ``start_at_layer`` and ``last_position_only``). :func:`patch_cell` is
the plain one-forward-per-cell reference it is tested against.
:func:`site_hooks` names the sites :mod:`nrecur.analysis.patching` scans.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nrecur.model import GPT

__all__ = ["PER_HEAD", "POSITIONWISE", "CleanRuns", "as_tokens", "clean_runs", "patch_cell", "patch_from", "patch_positions", "patchable_hooks", "site_hooks"]

POSITIONWISE = ("hook_attn_out", "hook_mlp_out", "attn.hook_z")
"""Sites recomputed at the patched position only (see :func:`_patched_block_output`)."""

PER_HEAD = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z")
"""Hook suffixes with a head axis ``[batch, pos, head, d_head]``: patched one (position, head) at a time."""


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


def _patched_block_output(model: GPT, clean: CleanRuns, hook: str, layer: int, row_pair: Tensor, row_pos: Tensor, row_head: Tensor) -> Tensor:
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
class CleanRuns:
    """What the patched runs of one set of pairs start from: the destination's clean run and the source's cache."""

    destination_tokens: Tensor  # [batch, pos]
    log_probs: Tensor  # [batch, vocab] the destination's clean prediction at the last position
    starts: dict[str, Tensor]  # hook → the destination's activation [batch, pos, ...]: residual streams, z
    source: dict[str, Tensor]  # hook → the source's activation [batch, pos, ...]


@torch.no_grad()
def clean_runs(model: GPT, destination: Tensor, source: Tensor, hooks: list[str]) -> CleanRuns:
    """The destination's clean run (its last prediction, the residual streams the patched runs start from) and
    the source's activations at ``hooks``, for :func:`patch_from`; an unknown hook is a KeyError."""
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
    return CleanRuns(destination, F.log_softmax(logits[:, -1].double(), -1), dict(cache), dict(source_cache))


@torch.no_grad()
def patch_from(model: GPT, clean: CleanRuns, hook: str, max_rows: int) -> Tensor:
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


def as_tokens(model: GPT, tokens) -> Tensor:
    """``tokens [batch, pos]`` as a long tensor on the model's device."""
    return torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=next(model.parameters()).device)


def patch_positions(model: GPT, destination, source, hook: str, max_rows: int = 4096) -> Tensor:
    """``destination``, ``source`` tokens ``[batch, pos]`` → the destination's log-probs at its last position
    with ``hook`` patched from the source at one position (and head) at a time: ``[batch, pos, vocab]``, or
    ``[batch, pos, head, vocab]`` for per-head hooks (q, k, v, z). Batched over positions and heads, at most
    ``max_rows`` sequences per forward pass. An unknown hook is a KeyError naming the closest ones."""
    was_training = model.training
    model.eval()
    try:
        clean = clean_runs(model, as_tokens(model, destination), as_tokens(model, source), [hook])
        return patch_from(model, clean, hook, max_rows)
    finally:
        model.train(was_training)


@torch.no_grad()
def patch_cell(model: GPT, destination, source, hook: str, position: int, head: int | None = None, source_activation: Tensor | None = None) -> Tensor:
    """The reference: one plain forward pass of the destination with ``hook`` patched from the source at
    ``position`` (and ``head``) → log-probs ``[batch, vocab]`` at the last position. ``source_activation``
    (the source's activation at ``hook``, ``[batch, pos, ...]``) saves the source's forward pass."""
    _check_hook(model, hook)
    destination = as_tokens(model, destination)
    if source_activation is None:
        source_activation = model.run_with_cache(as_tokens(model, source), names_filter=hook).cache[hook]

    def patch(activation: Tensor, _hook) -> Tensor:
        activation = activation.clone()
        where = (slice(None), position) if head is None else (slice(None), position, head)
        activation[where] = source_activation[where]
        return activation

    with model.hooks([(hook, patch)]):
        return F.log_softmax(model(destination)[:, -1].double(), -1)
