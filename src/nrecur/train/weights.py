"""Which weights weight decay acts on, and the squared norms a run logs.

Decay acts on matrices and embeddings only; biases and LayerNorm scales are
not decayed. In a pre-LayerNorm model the undecayed LayerNorm scales can grow
while the decayed matrices shrink, so the total squared norm alone can rise
under weight decay: runs log both (``weight_norm_sq`` and ``decayed_norm_sq``).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["is_decayed", "squared_norms"]


def is_decayed(parameter: Tensor) -> bool:
    """Whether weight decay acts on ``parameter``: matrices and embeddings, not biases or norm scales."""
    return parameter.dim() >= 2


def squared_norms(model: nn.Module) -> tuple[float, float]:
    """``(all parameters, decayed parameters)``: squared L2 norms, summed in float64."""
    total = decayed = 0.0
    for parameter in model.parameters():
        value = float(parameter.detach().double().pow(2).sum())
        total += value
        decayed += value if is_decayed(parameter) else 0.0
    return total, decayed
