"""Carrying out an edit of the model's belief: the edit methods and :func:`edit_belief`.

An edit makes the model believe the rule ``(n*, t*)`` on given sequences by
changing what it computes at positions ``0..p`` (or ``p`` alone) — how it is
done is one of :data:`EDIT_METHODS` (``patch``, ``steer``, ``rank_one``,
``subspace`` from :mod:`nrecur.analysis.edit_subspace`;
a new method is a registered function returning the hook specs that carry it
out). :mod:`nrecur.analysis.edit` builds the sequences, scores the edits and
chooses among them; its docstring defines success, moved and hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nrecur.analysis.steering import ProbeDirections
from nrecur.analysis.weight_edit import key_second_moment, rank_one_edits
from nrecur.hooks import HookSpec
from nrecur.model import GPT

__all__ = ["EDIT_METHODS", "EditRequest", "EditedPredictions", "Span", "edit_belief", "edit_hooks", "register_edit_method", "steering_vectors"]

Span = Literal["context", "position"]
"""Where the edit acts: every position ``0..p`` (``context``) or ``p`` alone (``position``)."""


@dataclass(frozen=True)
class EditedPredictions:
    """The model's predictions on the same tokens with and without the edit."""

    log_probs: Tensor
    """``[batch, pos, vocab]`` float64 with the edit."""
    clean: Tensor
    """``[batch, pos, vocab]`` float64 without it."""
    position: int


def edit_hooks(model: GPT) -> list[str]:
    """The residual stream entering every block and leaving the last one: where an edit can act."""
    layers = model.config.n_layers
    return [f"blocks.{layer}.hook_resid_pre" for layer in range(layers)] + [f"blocks.{layers - 1}.hook_resid_post"]


def steering_vectors(directions: ProbeDirections, periods: tuple[int, ...], period: np.ndarray, target: np.ndarray, position: int) -> Tensor:
    """``[batch, position + 1, d_model]``: at position ``i``, the target direction of ``t*`` plus the (period,
    countdown) direction of ``(n*, (position - i) mod n*)`` — the belief a sequence of ``(n*, t*)`` with its
    next target at ``position + 1`` has there."""
    index = np.asarray([periods.index(int(n)) for n in period])  # [batch]
    countdown = (position - np.arange(position + 1)[None, :]) % np.asarray(period)[:, None]  # [batch, pos]
    vectors = directions.target[np.asarray(target)][:, None, :] + directions.countdown[index[:, None], countdown]
    return torch.as_tensor(vectors)


@dataclass(frozen=True)
class EditRequest:
    """What an edit method is given (:data:`EDIT_METHODS`); each method uses what it needs."""

    tokens: Tensor
    """``[batch, pos]`` on the model's device."""
    period: np.ndarray
    """``[batch]`` ``n*``."""
    target: np.ndarray
    """``[batch]`` ``t*``."""
    position: int
    edited: slice
    """The positions the edit acts on."""
    hook: str
    donor: np.ndarray | None
    directions: ProbeDirections | None
    periods: tuple[int, ...] | None
    alpha: float
    second_moment: Tensor | None
    basis: Tensor | None = None
    """``[width, k]`` orthonormal: the subspace of a ``subspace`` edit (:mod:`nrecur.analysis.edit_subspace`)."""


EDIT_METHODS: dict[str, Callable[[GPT, EditRequest], list[HookSpec]]] = {}
"""Edit method → ``hooks(model, request)``: the hook specs that carry the edit out."""


def register_edit_method(name: str):
    def decorate(fn: Callable[[GPT, EditRequest], list[HookSpec]]):
        EDIT_METHODS[name] = fn
        return fn

    return decorate


@register_edit_method("patch")
def _patch(model: GPT, request: EditRequest) -> list[HookSpec]:
    """The donor's activation at the hook replaces the sequence's at the edited positions."""
    if request.donor is None:
        raise ValueError("a patch edit needs donor sequences of the desired rule (see edit_problems)")
    donor = torch.as_tensor(np.asarray(request.donor), dtype=torch.long, device=request.tokens.device)
    _, cache = model.run_with_cache(donor, names_filter=[request.hook])
    source = cache[request.hook][:, request.edited]

    def replace(activation, _hook):
        activation = activation.clone()
        activation[:, request.edited] = source.to(activation.dtype)
        return activation

    return [(request.hook, replace)]


@register_edit_method("steer")
def _steer(model: GPT, request: EditRequest) -> list[HookSpec]:
    """``alpha`` times :func:`steering_vectors` added at the hook at the edited positions."""
    if request.directions is None or request.periods is None:
        raise ValueError("a steer edit needs probe directions and the task's periods (see probe_directions)")
    vectors = request.alpha * steering_vectors(request.directions, request.periods, request.period, request.target, request.position)
    vectors = vectors.to(request.tokens.device)[:, request.edited]

    def add(activation, _hook):
        activation = activation.clone()
        activation[:, request.edited] += vectors.to(activation.dtype)
        return activation

    return [(request.hook, add)]


@register_edit_method("rank_one")
def _rank_one(model: GPT, request: EditRequest) -> list[HookSpec]:
    """A rank-one edit of the last MLP's weights per sequence (:mod:`nrecur.analysis.weight_edit`), keyed at
    ``position``; it acts wherever the MLP runs, so ``span`` and ``hook`` do not apply."""
    if request.donor is None:
        raise ValueError("a rank_one edit needs donor sequences of the desired rule (see edit_problems)")
    second_moment = request.second_moment
    if second_moment is None:
        second_moment = key_second_moment(model, request.tokens.cpu().numpy())
    return rank_one_edits(model, request.tokens.cpu().numpy(), request.donor, request.position, second_moment).hooks()


@torch.no_grad()
def edit_belief(
    model: GPT,
    tokens,
    period,
    target,
    *,
    position: int = -1,
    method: str = "patch",
    span: Span = "context",
    hook: str | None = None,
    donor=None,
    directions: ProbeDirections | None = None,
    periods: tuple[int, ...] | None = None,
    alpha: float = 1.0,
    second_moment: Tensor | None = None,
    clean: Tensor | None = None,
    basis: Tensor | None = None,
) -> EditedPredictions:
    """Make ``model`` believe the rule ``(period, target)`` (each ``[batch]`` or one value) on ``tokens
    [batch, pos]`` by editing ``hook`` (default: the input of the last block) at positions ``0..position``
    (``span="context"``) or at ``position`` alone (``span="position"``).

    ``patch`` copies the activation of ``donor [batch, pos]`` (a sequence of that rule, see
    :func:`edit_problems`); ``steer`` adds ``alpha`` times :func:`steering_vectors` from ``directions`` (with
    ``periods``, the task's periods); ``rank_one`` edits the last MLP's weights for each sequence so that
    its prediction at ``position`` is the donor's (``second_moment``: :func:`key_second_moment` of fresh
    sequences; default: of ``tokens``); ``subspace`` sets the coordinates along ``basis [width, k]`` to the
    donor's (:mod:`nrecur.analysis.edit_subspace`). Returns the edited and clean predictions at every position (``clean``:
    the clean log-probs ``[batch, pos, vocab]`` already computed, to save a forward pass).
    """
    if method not in EDIT_METHODS:
        raise ValueError(f"unknown edit method {method!r}; choose one of {', '.join(EDIT_METHODS)}")
    device = next(model.parameters()).device
    tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=device)
    batch, length = tokens.shape
    if not -length <= position < length:
        raise ValueError(f"position must be in [{-length}, {length - 1}] for sequences of length {length}, got {position}")
    position = position % length
    hook = hook or f"blocks.{model.config.n_layers - 1}.hook_resid_pre"
    if hook not in model.hook_names:
        raise ValueError(f"unknown hook {hook!r}; edits act at {', '.join(edit_hooks(model))} (or any residual hook)")
    if span not in ("context", "position"):
        raise ValueError(f"unknown span {span!r}; choose context (positions 0..position) or position (that one alone)")
    request = EditRequest(
        tokens=tokens,
        period=np.broadcast_to(np.asarray(period), (batch,)),
        target=np.broadcast_to(np.asarray(target), (batch,)),
        position=position,
        edited=slice(0, position + 1) if span == "context" else slice(position, position + 1),
        hook=hook,
        donor=donor,
        directions=directions,
        periods=periods,
        alpha=alpha,
        second_moment=second_moment,
        basis=basis,
    )
    hooks = EDIT_METHODS[method](model, request)
    if clean is None:
        clean = F.log_softmax(model(tokens).double(), -1)
    with model.hooks(hooks):
        edited = F.log_softmax(model(tokens).double(), -1)
    return EditedPredictions(log_probs=edited.cpu(), clean=clean.cpu(), position=position)
