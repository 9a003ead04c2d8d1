"""Export a :class:`~nrecur.model.GPT` to TransformerLens, to use its analysis tools.

TransformerLens 4 builds small models from a config with
``TransformerBridge.boot_native(TransformerBridgeConfig(...))``; its native
architecture (pre-norm blocks, learned positions, biased q/k/v/o and MLP
linears, unbiased unembedding) is the same function as ours, so the export is a
weight copy. Our fused ``qkv`` projection is split into TL's ``q``, ``k``, ``v``.
Hook names on the bridge match ours (``blocks.0.attn.hook_pattern``, …).

Needs the optional extra: ``pip install nrecur[tl]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from nrecur.model import GPT

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["TL_NORMS", "native_state_dict", "to_transformer_lens"]

TL_NORMS: dict[str, str | None] = {"layernorm": "LN", "rmsnorm": "RMS", "none": None}
"""Our ``GPTConfig.norm`` → TransformerLens ``normalization_type``."""


def to_transformer_lens(model: GPT) -> TransformerBridge:
    """A TransformerLens native model computing the same logits as ``model``, on its device and dtype.

    The returned bridge has its own copy of the weights: training one does not change the other.
    """
    try:
        from transformer_lens import TransformerBridge, TransformerBridgeConfig
    except ImportError as error:
        raise ImportError(
            "to_transformer_lens needs TransformerLens >= 4: pip install nrecur[tl]"
        ) from error

    config = model.config
    parameter = next(model.parameters())
    tl_config = TransformerBridgeConfig(
        d_model=config.d_model,
        d_head=config.d_head,
        n_heads=config.n_heads,
        n_layers=config.n_layers,
        n_ctx=config.n_ctx,
        d_vocab=config.vocab_size,
        d_mlp=config.d_mlp if not config.attn_only else None,
        attn_only=config.attn_only,
        act_fn=config.act,
        normalization_type=TL_NORMS[config.norm],
        positional_embedding_type="standard",
        eps=1e-5,
        init_weights=False,
        default_prepend_bos=False,  # our tokens carry no BOS
    )
    bridge = TransformerBridge.boot_native(tl_config, device=parameter.device, dtype=parameter.dtype)
    _copy_into(bridge, native_state_dict(model))
    return bridge


def _copy_into(bridge: TransformerBridge, state: dict[str, Tensor]) -> None:
    # The bridge wraps each native module in place; its parameters are reached
    # through "._original_component" links. Copying parameter by parameter (rather
    # than bridge.load_state_dict) lets us check both sides have exactly the same names.
    targets = {
        name.replace("._original_component", ""): parameter
        for name, parameter in bridge.original_model.named_parameters()
    }
    if set(targets) != set(state):
        missing, extra = sorted(set(state) - set(targets)), sorted(set(targets) - set(state))
        raise RuntimeError(f"TransformerLens' native model lacks {missing} and has extra {extra}")
    with torch.no_grad():
        for name, parameter in targets.items():
            parameter.copy_(state[name])


def native_state_dict(model: GPT) -> dict[str, Tensor]:
    """``model``'s weights under the parameter names of TransformerLens' ``NativeModel`` (cloned)."""
    config = model.config
    state: dict[str, Any] = {
        "tok_embed.weight": model.embed.weight,
        "pos.weight": model.pos_embed.weight,
        "head.weight": model.unembed.weight,
        **_norm_state("ln_out", model.ln_final),
    }
    for layer, block in enumerate(model.blocks):
        prefix = f"layers.{layer}"
        q_weight, k_weight, v_weight = block.attn.qkv.weight.split(config.d_attn, dim=0)
        q_bias, k_bias, v_bias = block.attn.qkv.bias.split(config.d_attn, dim=0)
        state |= {
            f"{prefix}.attn.q.weight": q_weight,
            f"{prefix}.attn.q.bias": q_bias,
            f"{prefix}.attn.k.weight": k_weight,
            f"{prefix}.attn.k.bias": k_bias,
            f"{prefix}.attn.v.weight": v_weight,
            f"{prefix}.attn.v.bias": v_bias,
            f"{prefix}.attn.o.weight": block.attn.out.weight,
            f"{prefix}.attn.o.bias": block.attn.out.bias,
            **_norm_state(f"{prefix}.ln1", block.ln1),
        }
        if block.mlp is not None:
            state |= {
                f"{prefix}.mlp.fc_in.weight": block.mlp.fc_in.weight,
                f"{prefix}.mlp.fc_in.bias": block.mlp.fc_in.bias,
                f"{prefix}.mlp.fc_out.weight": block.mlp.fc_out.weight,
                f"{prefix}.mlp.fc_out.bias": block.mlp.fc_out.bias,
                **_norm_state(f"{prefix}.ln2", block.ln2),
            }
    return {name: tensor.detach().clone() for name, tensor in state.items()}


def _norm_state(prefix: str, norm: Any) -> dict[str, Tensor]:
    # Norms with no parameters (NoNorm) export nothing, like TL's nn.Identity.
    return {f"{prefix}.{name}": tensor for name, tensor in norm.named_parameters()}
