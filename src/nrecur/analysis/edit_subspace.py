"""Editing the belief along a learned subspace: the donor's coordinates of a rank-``k`` subspace at one hook.

The ``subspace`` edit method sets, at one hook and at the context positions
``0..p``, the coordinates of an activation along an orthonormal basis
``U [width, k]`` to those of the donor — a sequence that followed ``(n*, t*)``
with the phase the edit asserts — and leaves the orthogonal complement alone::

    h' = h + (h_donor - h) U Uᵀ        at positions 0..p

(an interchange intervention, :func:`nrecur.analysis.das.interchange`). The
basis is found by distributed alignment search against the exact observer's
counterfactual of an edit: if the belief carried over ``0..p`` is the donor's,
the observer predicts ``O*`` (the donor's predictive) from ``p`` on, so
:func:`fit_edit_subspace` trains ``U`` by soft cross-entropy of the edited
model's predictions at ``p, p + 1, …`` against ``O*`` on problems of their own
(neither the selection nor the held-out problems of :mod:`nrecur.analysis.edit`),
one rank per step in turn, so that the first ``k`` columns serve rank ``k``.

The sites (:func:`subspace_hooks`) are the hooks whose values at ``0..p`` later
positions read: the residual stream before every attention but the first (the
first's input is the token and position embeddings — rewriting them is the
ceiling, outside the budget) and the first attention's values. The values are a
linear map of the normalized embeddings: a subspace there that holds the token
identities rewrites the context *as the first attention reads it*, close to the
ceiling by construction; the budget (:class:`~nrecur.analysis.edit_candidates.Budget`)
of each edit names its hook and rank so that the reader can tell. Its random
edit is the donor's coordinates along a random subspace of the same rank.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nrecur.analysis.das import Subspace, frozen, interchange, random_basis
from nrecur.analysis.edit_methods import EditRequest, register_edit_method
from nrecur.analysis.edit_problems import EditProblems
from nrecur.hooks import HookSpec
from nrecur.model import GPT

__all__ = ["SUBSPACE_RANKS", "fit_edit_subspace", "random_subspace", "subspace_hooks", "subspace_width"]

SUBSPACE_RANKS = (1, 2, 4, 8, 16)
"""The ranks of the subspace edits (one nested basis per hook serves them all)."""


def subspace_hooks(model: GPT) -> list[str]:
    """The first attention's values and the residual stream before every later attention (and after the first
    attention, before the first MLP): what later positions read of ``0..p``, the embeddings excluded."""
    hooks = ["blocks.0.attn.hook_v"]
    for layer in range(model.config.n_layers):
        if layer < model.config.n_layers - 1 and model.blocks[layer].mlp is not None:
            hooks.append(f"blocks.{layer}.hook_resid_mid")
        if layer > 0:
            hooks.append(f"blocks.{layer}.hook_resid_pre")
    return hooks


def subspace_width(model: GPT, hook: str) -> int:
    """The flattened width of ``hook``'s activation at one position (``head·d_head`` for the values)."""
    config = model.config
    return config.n_heads * config.d_head if hook.endswith(("hook_v", "hook_k", "hook_q", "hook_z")) else config.d_model


def _swap(source: Tensor, basis: Tensor, edited: slice) -> HookSpec:
    """A hook function putting ``source``'s coordinates along ``basis [width, k]`` into the activation at
    ``edited`` (``source`` ``[batch, pos, ...]``: the donor's activation, the same shape as the hook's)."""

    def swap(activation: Tensor, _hook) -> Tensor:
        flat = activation.flatten(2)  # [batch, pos, width]
        mask = torch.zeros(flat.shape[1], dtype=torch.bool, device=flat.device)
        mask[edited] = True
        return interchange(flat, source.flatten(2).to(flat.dtype), basis.to(flat.dtype), mask).view_as(activation)

    return swap


@register_edit_method("subspace")
def _subspace(model: GPT, request: EditRequest) -> list[HookSpec]:
    """The donor's coordinates along ``request.basis`` replace the sequence's at the hook at the edited positions."""
    if request.donor is None or request.basis is None:
        raise ValueError("a subspace edit needs donor sequences of the desired rule and a basis (see fit_edit_subspace)")
    donor = torch.as_tensor(np.asarray(request.donor), dtype=torch.long, device=request.tokens.device)
    _, cache = model.run_with_cache(donor, names_filter=[request.hook])
    return [(request.hook, _swap(cache[request.hook], request.basis.to(request.tokens.device), request.edited))]


def fit_edit_subspace(
    model: GPT, hook: str, problems: EditProblems, *, ranks: tuple[int, ...] = SUBSPACE_RANKS, steps: int, batch_size: int, lr: float, seed: int
) -> Tensor:
    """A basis ``[width, max(ranks)]`` at ``hook`` whose rank-``k`` donor swap at ``0..p`` makes the model
    predict ``O*`` from ``p`` on (soft cross-entropy, Adam, one rank of ``ranks`` per step in turn) on
    ``problems``; see the module docstring. The model runs in eval mode with its weights frozen (both restored after).
    Ranks wider than the hook are left out; none at most the width is a ValueError naming the width."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    p = problems.position
    tokens = torch.as_tensor(problems.tokens, dtype=torch.long, device=device)
    donor = torch.as_tensor(problems.donor, dtype=torch.long, device=device)
    desired = torch.as_tensor(problems.desired[:, p:], dtype=torch.float32, device=device)  # [batch, pos - p, vocab]
    width = subspace_width(model, hook)
    if not any(1 <= k <= width for k in ranks):
        raise ValueError(f"ranks {tuple(ranks)} at {hook}: none fits its width {width}; ranks must lie in 1..{width}")
    ranks = tuple(k for k in ranks if 1 <= k <= width)  # the ranks wider than this hook are the wider hooks' only
    subspace = Subspace(width, max(ranks), generator).to(device)
    optimizer = torch.optim.Adam(subspace.parameters(), lr=lr)
    with frozen(model):
        with torch.no_grad():
            _, cache = model.run_with_cache(donor, names_filter=[hook])
        source = cache[hook]
        for step in range(steps):
            rows = torch.randint(len(tokens), (min(batch_size, len(tokens)),), generator=generator).to(device)
            basis = subspace.basis[:, : ranks[step % len(ranks)]]
            with model.hooks([(hook, _swap(source[rows], basis, slice(0, p + 1)))]):
                log_probs = F.log_softmax(model(tokens[rows])[:, p:], -1)  # [row, pos - p, vocab]
            loss = -(desired[rows] * log_probs).sum(-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return subspace.basis.detach().clone()


def random_subspace(width: int, rank: int, seed: int) -> Tensor:
    """The random edit's basis: a uniformly random orthonormal ``[width, rank]``."""
    return random_basis(width, rank, torch.Generator().manual_seed(seed))
