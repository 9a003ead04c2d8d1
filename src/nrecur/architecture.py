"""The architecture of a GPT as a config: what :class:`nrecur.model.GPT` is built from.

It lives apart from the model so that what reads configs without building a
model — ``nrecur train``'s options, the presets, a sweep's validation — never
imports torch. ``nrecur.model`` re-exports it: ``from nrecur.model import
GPTConfig`` is the usual spelling.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import ValidationInfo, field_validator

from nrecur._config import Config

__all__ = ["GPTConfig"]

# The smallest value each integer field of GPTConfig accepts.
_INT_MINIMUM = {
    "vocab_size": 2, "n_ctx": 1, "d_model": 1, "n_layers": 0, "n_heads": 1, "d_head": 1, "d_mlp": 0,
}


class GPTConfig(Config):
    """Architecture of a :class:`~nrecur.model.GPT`. Every dimension the research questions vary is here."""

    vocab_size: int = 8
    """Number of tokens: ids 0 … vocab_size-1 (at least 2)."""
    n_ctx: int = 32
    """Context length: the most positions one forward pass accepts."""
    d_model: int = 64
    """Width of the residual stream."""
    n_layers: int = 2
    """Number of transformer blocks (0 gives the embed → unembed bigram model)."""
    n_heads: int = 4
    """Attention heads per block."""
    d_head: int = 16
    """Width of each head's queries, keys and values (n_heads * d_head need not equal d_model)."""
    d_mlp: int = 256
    """Hidden width of each block's MLP; 0 means attention-only (no MLP, no ln2)."""
    act: Literal["relu", "gelu", "silu"] = "gelu"
    """MLP activation function (gelu is the exact erf form)."""
    norm: Literal["layernorm", "rmsnorm", "none"] = "layernorm"
    """Normalization before attention, before the MLP and before the unembedding."""
    init_std: float = 0.02
    """Std of the normal init of weights and embeddings (output projections: init_std/sqrt(2*n_layers))."""

    @field_validator(*_INT_MINIMUM)
    @classmethod
    def _at_least(cls, value: int, info: ValidationInfo) -> int:
        minimum = _INT_MINIMUM[info.field_name]
        if value < minimum:
            raise ValueError(f"{info.field_name} must be an integer >= {minimum}, got {value}")
        return value

    @field_validator("init_std")
    @classmethod
    def _positive_std(cls, value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"init_std must be a finite number > 0, got {value}")
        return value

    @property
    def d_attn(self) -> int:
        """Width of all heads together, ``n_heads * d_head``."""
        return self.n_heads * self.d_head

    @property
    def attn_only(self) -> bool:
        """True when the blocks have no MLP (``d_mlp == 0``)."""
        return self.d_mlp == 0

    @property
    def n_params(self) -> int:
        """Number of scalars of ``GPT(self)``, from the shapes alone (no model built, torch not needed):
        embeddings, each block's norms, attention (``qkv`` and ``out`` with their biases) and MLP, the final norm
        and the unembedding (no bias)."""
        d, attn, mlp = self.d_model, self.d_attn, self.d_mlp
        norm = {"layernorm": 2 * d, "rmsnorm": d, "none": 0}[self.norm]
        block = norm + (d + 1) * 3 * attn + (attn + 1) * d
        if not self.attn_only:
            block += norm + (d + 1) * mlp + (mlp + 1) * d
        return (self.vocab_size + self.n_ctx) * d + self.n_layers * block + norm + d * self.vocab_size
