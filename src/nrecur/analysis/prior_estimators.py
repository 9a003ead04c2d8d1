"""Static estimators of an n-recurrence model's prior: the prior over targets and over periods, from its weights.

No data goes through the model: every estimator reads weights, or runs the model
(through :meth:`GPT.forward`'s ``start_at_layer`` / ``stop_at_layer``) on an input
made of weights. Each is registered in :data:`TARGET_ESTIMATORS` or
:data:`PERIOD_ESTIMATORS` with ``reads``: the hand-built models of
:mod:`nrecur.analysis.prior_validation` that carry a known prior where it looks,
on which it must return that prior (:func:`~nrecur.analysis.prior_validation.validate`).

Target estimators give the model's output distribution ``u [vocab]`` by one path,
turned into a prior by :func:`prior_from_marginal`, which inverts the emission of
the first position, ``u(v) = α·π(v) + β`` (:func:`emission_affine`, the period
prior taken uniform: the analyst does not know it). Period estimators give a
non-negative score per period, normalized (all-zero scores: the uniform
distribution).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from nrecur.model import GPT
from nrecur.tasks import NRecurrence

__all__ = [
    "FLOOR",
    "PERIOD_ESTIMATORS",
    "TARGET_ESTIMATORS",
    "StaticEstimator",
    "emission_affine",
    "prior_from_marginal",
    "static_priors",
]

FLOOR = 1e-4
"""The smallest probability an inverted estimate keeps (an inversion can go below zero)."""


@dataclass(frozen=True)
class StaticEstimator:
    """One way of reading a prior from the weights."""

    estimate: Callable[[GPT, NRecurrence], np.ndarray]
    """``(model, task) -> [vocab]`` output distribution (targets, before inversion) or ``[period]`` distribution."""
    reads: tuple[str, ...]
    """The hand-built models (:data:`nrecur.analysis.prior_validation.HAND_BUILT`) whose known prior sits where
    this estimator looks: it must return their prior."""
    doc: str
    """What it reads, in one line."""


TARGET_ESTIMATORS: dict[str, StaticEstimator] = {}
"""name → the estimator of the target prior (its output distribution ``u [vocab]``, before inversion)."""
PERIOD_ESTIMATORS: dict[str, StaticEstimator] = {}
"""name → the estimator of the period prior (``[period]`` over ``task.periods``)."""


def _register(table: dict[str, StaticEstimator], reads: tuple[str, ...]):
    def decorate(fn):
        table[fn.__name__.removeprefix("_")] = StaticEstimator(fn, reads, (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return decorate


# ---------------------------------------------------------------------------- weights → residual pieces


def _final_logits(model: GPT, resid: torch.Tensor) -> torch.Tensor:
    """``resid [..., d_model]`` → ``[..., vocab]`` through ``ln_final`` and the unembedding (position-wise)."""
    logits = model(resid.reshape(-1, 1, resid.shape[-1]), start_at_layer=model.config.n_layers)  # [..., 1, vocab]
    return logits.reshape(*resid.shape[:-1], -1)


def _constant_writes(model: GPT) -> torch.Tensor:
    """``[d_model]``: what the blocks add to the residual stream whatever their input's content — each head's
    value bias through ``W_O`` (attention weights sum to 1) and ``b_O``, and each MLP on its input bias."""
    total = torch.zeros(model.config.d_model)
    for block in model.blocks:
        attn = block.attn
        total = total + torch.einsum("hd,hdm->m", attn.b_V, attn.W_O) + attn.out.bias
        if block.mlp is not None:
            total = total + block.mlp(block.mlp.fc_in.bias.new_zeros(model.config.d_model))
    return total


def _averaged_embedding(model: GPT, length: int) -> torch.Tensor:
    """``[1, pos, d_model]``: the token-averaged embedding plus the position embedding (weights only)."""
    return (model.embed.weight.mean(0) + model.pos_embed.weight[:length])[None]


def _patterns(model: GPT, resid: torch.Tensor, layers: int) -> torch.Tensor:
    """The attention patterns ``[layer, head, query, key]`` of the first ``layers`` blocks run on the residual
    stream ``resid [pos, d_model]`` (made of weights) entering block 0."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(layers)]
    _, cache = model.run_with_cache(resid[None], start_at_layer=0, stop_at_layer=layers, names_filter=names)
    return torch.stack([cache[name][0] for name in names])


def _ov_norms(model: GPT, layer: int) -> torch.Tensor:
    """``[head]``: Frobenius norm of each head's OV circuit ``W_V[h] @ W_O[h]``."""
    attn = model.blocks[layer].attn
    return torch.linalg.matrix_norm(attn.W_V @ attn.W_O)


# ---------------------------------------------------------------------------- target estimators


@_register(TARGET_ESTIMATORS, reads=("embedding",))
def _direct(model: GPT, task: NRecurrence) -> np.ndarray:
    """The direct path, token embedding → ln_final → unembed, its logits averaged over input tokens."""
    logits = _final_logits(model, model.embed.weight)  # [vocab_in, vocab]
    return logits.mean(0).softmax(-1).double().numpy()


@_register(TARGET_ESTIMATORS, reads=("biases",))
def _constant(model: GPT, task: NRecurrence) -> np.ndarray:
    """The position embedding of the first positions plus every constant write (value biases through W_O,
    output biases, each MLP on its input bias) → ln_final → unembed."""
    positions = model.pos_embed.weight[: min(task.max_period, model.config.n_ctx)]  # [pos, d_model]
    logits = _final_logits(model, positions + _constant_writes(model))  # [pos, vocab]
    return logits.log_softmax(-1).mean(0).softmax(-1).double().numpy()


@_register(TARGET_ESTIMATORS, reads=("embedding", "biases"))
def _mean_input(model: GPT, task: NRecurrence) -> np.ndarray:
    """The whole network on the token-averaged embedding at the first ``max_period`` positions."""
    logits = model(_averaged_embedding(model, min(task.max_period, model.config.n_ctx)), start_at_layer=0)[0]  # [pos, vocab]
    return logits.log_softmax(-1).mean(0).softmax(-1).double().numpy()


# ---------------------------------------------------------------------------- period estimators


def _lag_excess(pattern: torch.Tensor, periods: tuple[int, ...]) -> np.ndarray:
    """``pattern [head, query, key]`` → ``[head, period]``: the mean over queries ``i ≥ max(periods) - 1`` (the
    same queries for every period, so no period gets more short, noisy rows) of the mass on key ``i - (n - 1)``
    minus what uniform causal attention puts there (``1 / (i + 1)``), clipped at 0 per head."""
    length = pattern.shape[-1]
    queries = np.arange(max(periods) - 1, length)
    out = np.zeros((pattern.shape[0], len(periods)))
    if len(queries) == 0:
        return out
    for index, n in enumerate(periods):
        mass = pattern[:, queries, queries - (n - 1)].double().numpy()  # [head, query]
        out[:, index] = np.clip((mass - 1.0 / (queries + 1)).mean(-1), 0, None)
    return out


def _normalized(scores: np.ndarray) -> np.ndarray:
    total = scores.sum()
    return scores / total if total > 0 else np.full(len(scores), 1.0 / len(scores))


def _positional_pattern(model: GPT) -> torch.Tensor:
    """``[head, query, key]``: layer 0's pattern on the position embeddings alone."""
    return _patterns(model, model.pos_embed.weight, 1)[0]


@_register(PERIOD_ESTIMATORS, reads=("head_counts",))
def _qk_pos(model: GPT, task: NRecurrence) -> np.ndarray:
    """Layer 0's positional QK circuit: per period ``n``, the mass on the key ``n - 1`` back above uniform,
    summed over heads."""
    return _normalized(_lag_excess(_positional_pattern(model), task.periods).sum(0))


@_register(PERIOD_ESTIMATORS, reads=("head_counts", "head_norms"))
def _qk_pos_ov(model: GPT, task: NRecurrence) -> np.ndarray:
    """As ``qk_pos``, each head weighted by the Frobenius norm of its OV circuit (a head that writes nothing
    carries no prior)."""
    weights = _ov_norms(model, 0).double().numpy()[:, None]
    return _normalized((weights * _lag_excess(_positional_pattern(model), task.periods)).sum(0))


@_register(PERIOD_ESTIMATORS, reads=("head_counts", "head_norms"))
def _mean_input_attn(model: GPT, task: NRecurrence) -> np.ndarray:
    """The patterns of every layer on the token-averaged input, scored like ``qk_pos_ov``."""
    patterns = _patterns(model, _averaged_embedding(model, model.config.n_ctx)[0], model.config.n_layers)
    scores = sum((_ov_norms(model, layer).double().numpy()[:, None] * _lag_excess(p, task.periods)).sum(0)
                 for layer, p in enumerate(patterns))  # fmt: skip
    return _normalized(np.asarray(scores))


# ---------------------------------------------------------------------------- from an output distribution to a prior


def emission_affine(task: NRecurrence, period_probs: np.ndarray | None = None) -> tuple[float, float]:
    """``(α, β)`` with ``P(x_0 = v) = α·π(v) + β`` for target prior ``π``: the first token is a target position
    with probability ``E_n[1/n]`` (``period_probs``, uniform by default) and there shows ``t`` with probability
    ``1 - p_noise(n)``, else a fake uniform over the other ``V - 1`` tokens; other positions are uniform over
    ``V \\ {t}`` (over all ``V`` with ``target_outside``)."""
    V = task.vocab_size
    probs = np.full(task.n_periods, 1.0 / task.n_periods) if period_probs is None else np.asarray(period_probs, float)
    inv_n = 1.0 / np.asarray(task.periods, float)
    noise = task.noise_by_period
    # target position: (1-p)[v=t] + p[v≠t]/(V-1) = [v=t](1-p-p/(V-1)) + p/(V-1)
    alpha = float(np.sum(probs * inv_n * (1 - noise - noise / (V - 1))))
    beta = float(np.sum(probs * inv_n * noise / (V - 1)))
    if task.target_outside:
        beta += float(np.sum(probs * (1 - inv_n))) / V
    else:  # [v≠t]/(V-1) = 1/(V-1) - [v=t]/(V-1)
        alpha -= float(np.sum(probs * (1 - inv_n))) / (V - 1)
        beta += float(np.sum(probs * (1 - inv_n))) / (V - 1)
    return alpha, beta


def prior_from_marginal(task: NRecurrence, marginal: np.ndarray, period_probs: np.ndarray | None = None) -> np.ndarray:
    """``marginal [vocab]`` (a distribution of one token) → the target prior ``[vocab]`` that gives it, by inverting
    :func:`emission_affine`; clipped at :data:`FLOOR` and renormalized."""
    alpha, beta = emission_affine(task, period_probs)
    if abs(alpha) < 1e-12:
        return np.full(task.vocab_size, 1.0 / task.vocab_size)
    raw = (np.asarray(marginal, float) - beta) / alpha
    clipped = np.clip(raw, FLOOR, None)
    return clipped / clipped.sum()


@torch.no_grad()
def static_priors(model: GPT, task: NRecurrence) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every static estimate: ``(targets, periods, raw_targets)``, each name → distribution (targets: inverted by
    :func:`prior_from_marginal`; raw: the output distribution before inversion). No data goes through the model."""
    was_training = model.training
    model.eval()
    try:
        model_cpu = model if next(model.parameters()).device.type == "cpu" else _cpu_copy(model)
        raw = {name: e.estimate(model_cpu, task) for name, e in TARGET_ESTIMATORS.items()}
        periods = {name: e.estimate(model_cpu, task) for name, e in PERIOD_ESTIMATORS.items()} if model.config.n_layers else {}
    finally:
        model.train(was_training)
    targets = {name: prior_from_marginal(task, u) for name, u in raw.items()}
    return targets, periods, raw


def _cpu_copy(model: GPT) -> GPT:
    copy = GPT(model.config)
    copy.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    return copy.eval()
