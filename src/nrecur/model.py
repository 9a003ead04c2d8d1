"""A small decoder-only GPT with every interesting activation behind a named hook point.

Tokens are embedded, a learned positional embedding is added, and ``n_layers``
pre-norm blocks (causal multi-head attention, then an optional MLP) write into
the residual stream, which a final norm and an untied unembedding turn into
logits. Hook names and meanings follow TransformerLens
(``blocks.0.attn.hook_pattern``, ``blocks.1.hook_resid_post``, …); see
``GPT(config).hook_names`` and :mod:`nrecur.hooks` for the hook API.

Speed: when nothing watches ``hook_attn_scores`` or ``hook_pattern`` (no hook,
no cache request), attention runs through the fused
``scaled_dot_product_attention`` kernel, which never materializes the pattern;
norms likewise use ``F.layer_norm`` / ``F.rms_norm`` unless ``hook_normalized``
is watched. Both paths give the same logits up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nrecur.architecture import GPTConfig  # the config lives apart: reading configs needs no torch
from nrecur.hooks import HookedModule, HookPoint

NORM_EPS = 1e-5
"""Added to the variance inside every norm (TransformerLens' and torch's default)."""

__all__ = ["ACTIVATIONS", "GPT", "NORMS", "GPTConfig"]

# --- norms and activations: registries keyed by the config's Literal values ---


class LayerNorm(nn.Module):
    """Center and rescale over d_model, then a learned scale and shift."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))
        self.hook_normalized = HookPoint()  # [batch, pos, d_model], before scale and shift

    def forward(self, x: Tensor) -> Tensor:
        if not self.hook_normalized.is_active:
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, NORM_EPS)
        x = x - x.mean(dim=-1, keepdim=True)  # [batch, pos, d_model]
        x = self.hook_normalized(x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + NORM_EPS))
        return x * self.weight + self.bias  # [batch, pos, d_model]


class RMSNorm(nn.Module):
    """Rescale to unit root-mean-square over d_model (no centering), then a learned scale."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.hook_normalized = HookPoint()  # [batch, pos, d_model], before scale

    def forward(self, x: Tensor) -> Tensor:
        if not self.hook_normalized.is_active:
            return F.rms_norm(x, self.weight.shape, self.weight, NORM_EPS)
        x = self.hook_normalized(x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + NORM_EPS))
        return x * self.weight  # [batch, pos, d_model]


class NoNorm(nn.Module):
    """No normalization; keeps ``hook_normalized`` so hook names do not depend on the norm."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.hook_normalized = HookPoint()  # [batch, pos, d_model]

    def forward(self, x: Tensor) -> Tensor:
        return self.hook_normalized(x)


NORMS: dict[str, type[nn.Module]] = {"layernorm": LayerNorm, "rmsnorm": RMSNorm, "none": NoNorm}
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}


# --- the model ---


def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The fused causal attention: ``q, k, v [batch, head, pos, d_head]`` → ``z [batch, head, pos, d_head]``."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class Attention(nn.Module):
    """Causal multi-head self-attention with hooks on q, k, v, scores, pattern and z."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_heads, self.d_head = config.n_heads, config.d_head
        self.qkv = nn.Linear(config.d_model, 3 * config.d_attn)  # rows: q of all heads, then k, then v
        self.out = nn.Linear(config.d_attn, config.d_model)
        causal_mask = torch.ones(config.n_ctx, config.n_ctx, dtype=torch.bool).triu(diagonal=1)
        # [query_pos, key_pos], True where the key is in the future. Not saved: it follows from n_ctx.
        self.register_buffer("causal_mask", causal_mask, persistent=False)
        self.kernel: Callable[[Tensor, Tensor, Tensor], Tensor] = causal_attention
        """Computes z from q, k, v when nothing watches the scores or pattern (the ensemble swaps in one that
        ``vmap`` runs as one call: :mod:`nrecur.train.folded_attention`)."""
        self.hook_q = HookPoint()  # [batch, pos, head, d_head]
        self.hook_k = HookPoint()  # [batch, pos, head, d_head]
        self.hook_v = HookPoint()  # [batch, pos, head, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, head, query_pos, key_pos], -inf above the diagonal
        self.hook_pattern = HookPoint()  # [batch, head, query_pos, key_pos]
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]

    def forward(self, x: Tensor, *, last_position_only: bool = False) -> Tensor:
        """``x [batch, pos, d_model]`` (normalized) → ``[batch, pos, d_model]``, what the heads write.

        ``last_position_only``: the output at the last position only, ``[batch, 1, d_model]`` — keys and
        values at every position, the query at the last one (``hook_q``, ``hook_z`` and the query axis of the
        scores and pattern have length 1).
        """
        batch, pos, _ = x.shape  # x: [batch, pos, d_model]
        q, k, v = self.qkv(x).view(batch, pos, 3, self.n_heads, self.d_head).unbind(dim=2)
        if last_position_only:
            q = q[:, -1:]  # [batch, 1, head, d_head]
        queries = q.shape[1]
        q = self.hook_q(q).transpose(1, 2)  # [batch, head, query_pos, d_head]
        k = self.hook_k(k).transpose(1, 2)  # [batch, head, pos, d_head]
        v = self.hook_v(v).transpose(1, 2)  # [batch, head, pos, d_head]
        if self.hook_attn_scores.is_active or self.hook_pattern.is_active:
            scores = self.hook_attn_scores(self.scores(q, k))  # [batch, head, query_pos, key_pos]
            pattern = self.hook_pattern(scores.softmax(dim=-1))  # [batch, head, query_pos, key_pos]
            z = pattern @ v  # [batch, head, query_pos, d_head]
        elif last_position_only:
            # The last query sees every key, so no mask (is_causal would align a short query axis at the top).
            z = F.scaled_dot_product_attention(q, k, v)  # [batch, head, 1, d_head]
        else:
            z = self.kernel(q, k, v)  # [batch, head, pos, d_head]
        z = self.hook_z(z.transpose(1, 2))  # [batch, query_pos, head, d_head]
        return self.out(z.reshape(batch, queries, -1))  # [batch, query_pos, d_model]

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        """Causal attention scores: ``q [..., head, query_pos, d_head]``, ``k [..., head, key_pos, d_head]`` →
        ``[..., head, query_pos, key_pos]``, ``q·k / sqrt(d_head)`` and ``-inf`` where the key comes after
        the query. The queries are the *last* ``query_pos`` of the ``key_pos`` positions (all of them when
        the lengths agree). Softmax over the last axis gives the pattern."""
        queries, keys = q.shape[-2], k.shape[-2]
        if queries > keys or keys > self.causal_mask.shape[0]:
            raise ValueError(f"scores need query_pos <= key_pos <= n_ctx={self.causal_mask.shape[0]}, got {queries} queries and {keys} keys")
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)  # [..., head, query_pos, key_pos]
        return scores.masked_fill(self.causal_mask[keys - queries : keys, :keys], float("-inf"))

    def _per_head(self, which: int) -> Tensor:
        weight = self.qkv.weight.view(3, self.n_heads, self.d_head, -1)[which]  # [head, d_head, d_model]
        return weight.transpose(1, 2)  # [head, d_model, d_head]

    @property
    def W_Q(self) -> Tensor:
        """``[head, d_model, d_head]``: head h's queries are ``x @ W_Q[h]`` plus bias."""
        return self._per_head(0)

    @property
    def W_K(self) -> Tensor:
        """``[head, d_model, d_head]``"""
        return self._per_head(1)

    @property
    def W_V(self) -> Tensor:
        """``[head, d_model, d_head]``"""
        return self._per_head(2)

    @property
    def b_Q(self) -> Tensor:
        """``[head, d_head]``: the query bias of each head."""
        return self.qkv.bias.view(3, self.n_heads, self.d_head)[0]

    @property
    def b_K(self) -> Tensor:
        """``[head, d_head]``"""
        return self.qkv.bias.view(3, self.n_heads, self.d_head)[1]

    @property
    def b_V(self) -> Tensor:
        """``[head, d_head]``: the pattern's rows sum to 1, so each head writes ``b_V[h] @ W_O[h]`` whatever its input."""
        return self.qkv.bias.view(3, self.n_heads, self.d_head)[2]

    @property
    def W_O(self) -> Tensor:
        """``[head, d_head, d_model]``: head h writes ``z[h] @ W_O[h]`` to the residual stream."""
        return self.out.weight.T.reshape(self.n_heads, self.d_head, -1)


class MLP(nn.Module):
    """Two-layer MLP: ``fc_out(act(fc_in(x)))``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(config.d_model, config.d_mlp)
        self.act = ACTIVATIONS[config.act]
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]
        self.fc_out = nn.Linear(config.d_mlp, config.d_model)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.hook_pre(self.fc_in(x))  # [batch, pos, d_mlp]
        post = self.hook_post(self.act(pre))  # [batch, pos, d_mlp]
        return self.fc_out(post)  # [batch, pos, d_model]


class Block(nn.Module):
    """Pre-norm block: ``resid + attn(ln1(resid))``, then ``+ mlp(ln2(·))`` unless attention-only."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        # Registration order is forward order, so hook_names lists hooks as they fire.
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.ln1 = NORMS[config.norm](config.d_model)
        self.attn = Attention(config)
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]
        self.mlp: MLP | None = None
        if not config.attn_only:
            self.hook_resid_mid = HookPoint()  # [batch, pos, d_model]
            self.ln2 = NORMS[config.norm](config.d_model)
            self.mlp = MLP(config)
            self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model]

    def forward(self, resid: Tensor, *, last_position_only: bool = False) -> Tensor:
        """``resid [batch, pos, d_model]`` → ``[batch, pos, d_model]``; with ``last_position_only``,
        ``[batch, 1, d_model]``: attention reads every position, everything after it runs at the last one."""
        resid_pre = self.hook_resid_pre(resid)  # [batch, pos, d_model]
        attn_out = self.attn(self.ln1(resid_pre), last_position_only=last_position_only)  # [batch, query_pos, d_model]
        attn_out = self.hook_attn_out(attn_out)  # [batch, query_pos, d_model]
        if last_position_only:
            resid_pre = resid_pre[:, -1:]  # [batch, 1, d_model]
        if self.mlp is None:
            return self.hook_resid_post(resid_pre + attn_out)  # [batch, pos, d_model]
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)  # [batch, pos, d_model]
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))  # [batch, pos, d_model]
        return self.hook_resid_post(resid_mid + mlp_out)  # [batch, pos, d_model]


class GPT(HookedModule):
    """Decoder-only transformer: ``GPT(config)(tokens [batch, pos]) -> logits [batch, pos, vocab]``.

    Hooks: ``hook_names``, ``hooks([(name, fn), ...])``, ``run_with_cache(tokens, names_filter)``,
    ``run_with_hooks(tokens, fwd_hooks=...)`` (see :mod:`nrecur.hooks`). Part of the forward pass:
    ``model(resid, start_at_layer=k)`` runs from the residual stream entering block ``k``,
    ``model(tokens, stop_at_layer=k)`` returns it, ``last_position_only=True`` computes the last position's
    output only. Attention patterns ``[batch, head, query_pos, key_pos]``:
    ``model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern").cache["blocks.0.attn.hook_pattern"]``
    (also with ``start_at_layer``, for inputs made of weights).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        self.pos_embed = nn.Embedding(config.n_ctx, config.d_model)
        self.hook_pos_embed = HookPoint()  # [batch, pos, d_model]
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_final = NORMS[config.norm](config.d_model)
        self.unembed = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.reset_parameters()
        self.setup_hooks()

    def reset_parameters(self) -> None:
        """Weights ~ N(0, init_std²), output projections' std / sqrt(2·n_layers) (GPT-2); biases 0, norm scales 1."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (LayerNorm, RMSNorm)):
                nn.init.ones_(module.weight)
                if isinstance(module, LayerNorm):
                    nn.init.zeros_(module.bias)
        # Each block adds to the residual stream twice; keep its variance from growing with depth.
        residual_std = std / math.sqrt(2 * max(self.config.n_layers, 1))
        for block in self.blocks:
            nn.init.normal_(block.attn.out.weight, std=residual_std)
            if block.mlp is not None:
                nn.init.normal_(block.mlp.fc_out.weight, std=residual_std)

    @property
    def num_params(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        input: Tensor,
        *,
        check: bool = True,
        start_at_layer: int | None = None,
        stop_at_layer: int | None = None,
        last_position_only: bool = False,
    ) -> Tensor:
        """``input``: tokens ``[batch, pos]`` (int64 or int32 in 0..vocab_size-1, pos ≤ n_ctx) → ``logits [batch,
        pos, vocab]``.

        Layers as in TransformerLens (``-n_layers ≤ k ≤ n_layers``; a negative ``k`` counts from the end):

        - ``start_at_layer=k``: ``input`` is the residual stream entering block ``k``, ``[batch, pos, d_model]``
          (``k = n_layers``: entering ``ln_final``); the embeddings and the blocks before ``k`` do not run.
        - ``stop_at_layer=k``: return the residual stream entering block ``k`` ``[batch, pos, d_model]``
          instead of logits (``k = 0``: the embeddings; ``k = n_layers``: after the last block).
        - ``last_position_only``: only what the last position's output needs; the last block that runs computes
          its queries, attention output and MLP at the last position only. Returns ``[batch, 1, vocab]`` (or
          ``[batch, 1, d_model]``); that block's position-wise hooks see one position.

        Hooks of the parts that do not run do not fire. ``check=False`` skips the range check of ``tokens``:
        for callers that have checked them already, and under ``torch.func.vmap``, which cannot run its
        data-dependent ``if``.
        """
        start = self._layer_index("start_at_layer", start_at_layer, 0)
        stop = self._layer_index("stop_at_layer", stop_at_layer, self.config.n_layers)
        if start > stop:
            raise ValueError(f"start_at_layer={start_at_layer} comes after stop_at_layer={stop_at_layer} (n_layers={self.config.n_layers})")
        resid = self._embed(input, check) if start_at_layer is None else self._check_resid(input)  # [batch, pos, d_model]
        blocks = self.blocks[start:stop]
        for index, block in enumerate(blocks):
            resid = block(resid, last_position_only=last_position_only and index == len(blocks) - 1)  # [batch, pos, d_model]
        if last_position_only and not blocks:
            resid = resid[:, -1:]  # [batch, 1, d_model]
        if stop_at_layer is not None:
            return resid
        return self.unembed(self.ln_final(resid))  # [batch, pos, vocab]

    def _layer_index(self, name: str, layer: int | None, default: int) -> int:
        """``layer`` in ``-n_layers..n_layers`` → ``0..n_layers`` (None → ``default``)."""
        n = self.config.n_layers
        if layer is None:
            return default
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer <= n:
            raise ValueError(f"{name} must be an integer in {-n}..{n} (n_layers={n}), got {layer!r}")
        return layer if layer >= 0 else layer + n

    def _check_resid(self, resid: Tensor) -> Tensor:
        if resid.dim() != 3 or resid.shape[-1] != self.config.d_model or not resid.is_floating_point():
            raise ValueError(
                f"with start_at_layer the input is the residual stream, a float tensor [batch, pos, d_model={self.config.d_model}]; "
                f"got {resid.dtype} of shape {tuple(resid.shape)}"
            )
        if resid.shape[1] > self.config.n_ctx:
            raise ValueError(f"the residual stream has {resid.shape[1]} positions but the context length n_ctx is {self.config.n_ctx}")
        return resid

    def _embed(self, tokens: Tensor, check: bool) -> Tensor:
        """``tokens [batch, pos]`` → token plus position embedding ``[batch, pos, d_model]``, after checking them."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape [batch, pos], got shape {tuple(tokens.shape)}")
        if tokens.dtype not in (torch.long, torch.int):
            raise ValueError(f"tokens must be an integer tensor (int64 or int32), got {tokens.dtype}")
        batch, pos = tokens.shape
        if pos > self.config.n_ctx:
            raise ValueError(f"tokens have {pos} positions but the context length n_ctx is {self.config.n_ctx}")
        if check and tokens.numel():
            low, high = (int(v) for v in torch.aminmax(tokens))  # one reduction; an embedding lookup out of range is an obscure IndexError
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(
                    f"tokens must lie in 0..{self.config.vocab_size - 1} (vocab_size={self.config.vocab_size}), "
                    f"got values from {low} to {high}"
                )
        positions = torch.arange(pos, device=tokens.device)  # [pos]
        embed = self.hook_embed(self.embed(tokens))  # [batch, pos, d_model]
        pos_embed = self.hook_pos_embed(self.pos_embed(positions).expand(batch, pos, -1))  # [batch, pos, d_model]
        return embed + pos_embed  # [batch, pos, d_model]
