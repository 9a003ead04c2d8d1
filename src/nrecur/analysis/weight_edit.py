"""A rank-one weight edit in the spirit of ROME: rewrite what the last MLP writes for one key.

ROME (Meng et al., 2022) edits one association by a rank-one change of an MLP's
output matrix: the *key* is the MLP's hidden activation where the subject is
read, the new *value* the output that makes the model say the new fact, and the
update ``W_out ← W_out + δ uᵀ`` with ``u = C⁻¹k / (kᵀ C⁻¹ k)`` — ``C = E[h hᵀ]``
the second moment of the MLP's hidden activations — changes the output for
``k`` by exactly ``δ`` and for any other hidden activation ``h`` by ``δ (uᵀh)``:
inputs whose whitened key resembles ``k`` move, the others barely do.

Here the key is the last block's MLP hidden activation (``mlp.hook_post``) at
the edit position ``p`` of a sequence, and ``δ`` is what makes the final
residual stream at ``p`` the donor's (:mod:`nrecur.analysis.edit`): ``δ =
resid_post(donor)[p] − resid_post(sequence)[p]``, so at ``p`` the edited model
predicts what it predicts for the donor. No optimization is needed: the last
MLP writes straight into the final residual stream. ``C`` comes from fresh
sequences of the task, with a small ridge so it inverts.

Unlike an activation edit it stays in the model: it acts at every later
position of the sequence (it *holds* where their keys resemble ``k``) and on
every other sequence — its *specificity* cost, measured as the mean
KL(clean ‖ edited) on unrelated sequences. :meth:`RankOneEdit.hooks` applies
one edit per row of a batch through the hook points (``hook_post`` read,
``hook_mlp_out`` changed), which is the weight edit exactly;
:meth:`RankOneEdit.edited_model` is the literal weight change it is tested
against.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nrecur.analysis.base import cached
from nrecur.hooks import HookSpec
from nrecur.model import GPT

__all__ = ["RankOneEdit", "key_second_moment", "rank_one_edits", "specificity"]


def _last_mlp_layer(model: GPT) -> int:
    if model.config.d_mlp == 0:
        raise ValueError("a rank-one MLP edit needs an MLP; this model is attention-only (d_mlp = 0)")
    return model.config.n_layers - 1


def key_second_moment(model: GPT, tokens: np.ndarray, ridge: float = 1e-3) -> Tensor:
    """``[d_mlp, d_mlp]`` float64 ``E[h hᵀ]`` of the last block's MLP hidden activations over every position of
    ``tokens [batch, pos]``, plus ``ridge`` times its mean diagonal."""
    layer = _last_mlp_layer(model)
    hidden = torch.as_tensor(cached(model, tokens, [f"blocks.{layer}.mlp.hook_post"])[f"blocks.{layer}.mlp.hook_post"], dtype=torch.float64)
    hidden = hidden.reshape(-1, hidden.shape[-1])  # [batch·pos, d_mlp]
    moment = hidden.T @ hidden / len(hidden)
    return moment + ridge * moment.diagonal().mean() * torch.eye(len(moment), dtype=torch.float64)


@dataclass(frozen=True)
class RankOneEdit:
    """One rank-one edit of the last MLP's output matrix per row: ``W_out ← W_out + delta[b] ⊗ direction[b]``."""

    layer: int
    delta: Tensor
    """``[batch, d_model]`` the change of the MLP output for the key."""
    direction: Tensor
    """``[batch, d_mlp]`` ``u = C⁻¹k / (kᵀ C⁻¹ k)``: the output changes by ``delta (uᵀh)`` for hidden activation ``h``."""

    def hooks(self) -> list[HookSpec]:
        """Hooks applying edit ``b`` to row ``b`` of the batch (the same as editing the weights row by row)."""
        seen: dict[str, Tensor] = {}

        def keep(post: Tensor, _hook) -> None:  # post: [batch, pos, d_mlp]
            seen["post"] = post

        def add(out: Tensor, _hook) -> Tensor:  # out: [batch, pos, d_model]
            weight = torch.einsum("bpm,bm->bp", seen["post"].double(), self.direction.to(out.device))  # [batch, pos]
            return out + (weight[..., None] * self.delta.to(out.device)[:, None, :]).to(out.dtype)

        return [(f"blocks.{self.layer}.mlp.hook_post", keep), (f"blocks.{self.layer}.hook_mlp_out", add)]

    def repeat(self, rows: np.ndarray, times: int) -> "RankOneEdit":
        """Edits ``rows``, each repeated ``times`` times (row-major): to apply one edit to several sequences."""
        index = torch.as_tensor(np.repeat(np.asarray(rows), times))
        return RankOneEdit(self.layer, self.delta[index], self.direction[index])

    def edited_model(self, model: GPT, row: int) -> GPT:
        """A copy of ``model`` with edit ``row`` written into its weights (the reference for :meth:`hooks`)."""
        edited = copy.deepcopy(model)
        fc_out = edited.blocks[self.layer].mlp.fc_out
        with torch.no_grad():
            fc_out.weight += torch.outer(self.delta[row], self.direction[row]).to(fc_out.weight.dtype)
        return edited


@torch.no_grad()
def rank_one_edits(model: GPT, tokens, donor, position: int, second_moment: Tensor) -> RankOneEdit:
    """The edit per row of ``tokens [batch, pos]`` that makes the final residual stream at ``position`` the one
    of ``donor [batch, pos]``; see the module docstring."""
    layer = _last_mlp_layer(model)
    names = [f"blocks.{layer}.mlp.hook_post", f"blocks.{layer}.hook_resid_post"]
    mine = cached(model, np.asarray(tokens), names)
    theirs = cached(model, np.asarray(donor), names[1:])
    key = torch.as_tensor(mine[names[0]][:, position], dtype=torch.float64)  # [batch, d_mlp]
    delta = torch.as_tensor(theirs[names[1]][:, position] - mine[names[1]][:, position], dtype=torch.float64)  # [batch, d_model]
    whitened = torch.linalg.solve(second_moment, key.T).T  # [batch, d_mlp] C⁻¹k
    direction = whitened / (whitened * key).sum(-1, keepdim=True)
    return RankOneEdit(layer=layer, delta=delta, direction=direction)


@torch.no_grad()
def specificity(model: GPT, edit: RankOneEdit, rows: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``[rows]``: for each edit in ``rows``, the mean KL(clean ‖ edited) in nats over every position of the
    unrelated sequences ``reference [batch, pos]`` — what the edit costs elsewhere."""
    device = next(model.parameters()).device
    reference_t = torch.as_tensor(reference, dtype=torch.long, device=device)
    clean = F.log_softmax(model(reference_t).double(), -1)  # [batch, pos, vocab]
    costs = []
    for row in np.asarray(rows):
        with model.hooks(edit.repeat(np.asarray([row]), len(reference)).hooks()):
            edited = F.log_softmax(model(reference_t).double(), -1)
        costs.append(float((clean.exp() * (clean - edited)).sum(-1).mean()))
    return np.asarray(costs)
