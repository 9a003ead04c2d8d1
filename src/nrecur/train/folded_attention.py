"""Causal attention that ``vmap`` runs as one fused kernel call: the models' dimension folded into the batch.

Under ``torch.vmap`` PyTorch has no batching rule for the fused CPU attention
kernel: it would loop over the models, so the ensemble used to run attention in
its composite "math" form (matmuls, a masked softmax) instead. Attention treats
every sequence of a batch apart, so ``vmap`` over models needs no new kernel:
the models' dimension can simply join the batch. :data:`folded_causal_attention` is a
custom operator whose batching rule does that (``[model, batch, head, pos,
d_head]`` → ``[model * batch, …]``, one ``scaled_dot_product_attention`` call,
back). The call runs on the ordinary tensors beneath the batched ones, so
autograd records the kernel's own backward pass.

:func:`fold_attention` makes a model's attention layers use it; the ensemble
does so for its template on the devices of ``FOLDED_ATTENTION`` in
:mod:`nrecur.train.ensemble`. Outside ``vmap`` the operator is the plain fused
call without gradients (the template never runs that way in training).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nrecur.model import Attention

__all__ = ["fold_attention", "folded_causal_attention"]


@torch.library.custom_op("nrecur::folded_causal_attention", mutates_args=())
def folded_causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``q, k, v [batch, head, pos, d_head]`` → ``z [batch, head, pos, d_head]``, causal (no gradients outside
    ``vmap``: the operator registers no backward pass of its own)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


@folded_causal_attention.register_fake
def _(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


@folded_causal_attention.register_vmap
def _(info, in_dims: tuple[int | None, ...], q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, int]:
    def leading(x: Tensor, dim: int | None) -> Tensor:  # the models' dimension first
        return x.unsqueeze(0).expand(info.batch_size, *x.shape) if dim is None else x.movedim(dim, 0)

    q, k, v = (leading(x, dim) for x, dim in zip((q, k, v), in_dims))
    models, batch = q.shape[:2]
    folded = (x.reshape(models * batch, *x.shape[2:]) for x in (q, k, v))
    z = F.scaled_dot_product_attention(*folded, is_causal=True)  # [model * batch, head, pos, d_head]
    return z.view(models, batch, *z.shape[1:]), 0


def fold_attention(model: nn.Module) -> None:
    """Make every attention layer of ``model`` compute its fused attention with :data:`folded_causal_attention`."""
    for module in model.modules():
        if isinstance(module, Attention):
            module.kernel = folded_causal_attention
