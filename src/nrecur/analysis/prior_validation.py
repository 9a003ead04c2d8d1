"""Hand-built models whose prior is known, and the check of every static estimator on them.

A static estimator of the prior (:mod:`nrecur.analysis.prior_estimators`) is only
worth reading on a trained model if it returns the prior of a model that holds a
known one where the estimator looks. Each model here is built by hand for a
task's vocabulary and periods, with no norms and every weight zero except those
that carry the prior:

* ``embedding`` (targets): every token embeds as the logits ``log(α·π + β)`` of
  the first token's marginal under target prior ``π`` (:func:`emission_affine`),
  the unembedding the identity: the direct path outputs that marginal;
* ``biases`` (targets): the same logits written in thirds by the constant
  writes — a head's value bias through ``W_O``, the attention output bias and
  the MLP's output bias — with zero embeddings;
* ``head_counts`` (periods): one-hot position embeddings; layer 0 has, for
  period ``n``, a number of heads proportional to its prior, each attending
  (almost) all its mass to the key ``n - 1`` back, every OV circuit the same;
* ``head_norms`` (periods): one such head per period, its OV circuit's norm
  proportional to the period's prior.

:func:`validate` runs every estimator on each model it ``reads``, built for a
skewed prior and for that prior reversed (a skew must come out the right way
round), and says whether the estimate is within :data:`TOLERANCE` (total
variation) of the known prior both times.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from nrecur.analysis.prior_estimators import PERIOD_ESTIMATORS, TARGET_ESTIMATORS, emission_affine, prior_from_marginal
from nrecur.model import GPT, GPTConfig
from nrecur.tasks import NRecurrence

__all__ = ["HAND_BUILT", "TOLERANCE", "Check", "HandBuilt", "known_prior", "validate"]

TOLERANCE = 0.01
"""The largest total-variation distance between a hand-built model's prior and an estimate that passes."""

SHARP = 30.0
"""The attention score of a hand-built head on its key (0 elsewhere): its mass there is ``1 - O(pos·e^-30)``."""


@dataclass(frozen=True)
class HandBuilt:
    """A hand-built model of known prior: ``build(task, n_ctx, prior) -> GPT``, for ``quantity``."""

    quantity: str
    """``"target"`` (``prior [vocab]``) or ``"period"`` (``prior [period]``)."""
    build: Callable[[NRecurrence, int, np.ndarray], GPT]


def _zeroed(config: GPTConfig) -> GPT:
    model = GPT(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    return model.eval()


def _marginal_logits(task: NRecurrence, prior: np.ndarray) -> torch.Tensor:
    """``[vocab]``: the log of the first token's marginal under target prior ``prior`` (uniform periods)."""
    alpha, beta = emission_affine(task)
    return torch.as_tensor(np.log(alpha * np.asarray(prior, float) + beta), dtype=torch.float32)


def _target_config(task: NRecurrence, n_ctx: int) -> GPTConfig:
    V = task.vocab_size
    return GPTConfig(vocab_size=V, n_ctx=n_ctx, d_model=V, n_layers=1, n_heads=1, d_head=4, d_mlp=8, norm="none")


@torch.no_grad()
def embedding_model(task: NRecurrence, n_ctx: int, prior: np.ndarray) -> GPT:
    """The ``embedding`` model (see the module docstring)."""
    model = _zeroed(_target_config(task, n_ctx))
    model.embed.weight[:] = _marginal_logits(task, prior)
    model.unembed.weight[:] = torch.eye(task.vocab_size)
    return model


@torch.no_grad()
def biases_model(task: NRecurrence, n_ctx: int, prior: np.ndarray) -> GPT:
    """The ``biases`` model (see the module docstring)."""
    model = _zeroed(_target_config(task, n_ctx))
    third = _marginal_logits(task, prior) / 3
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    attn.qkv.bias.view(3, 1, attn.d_head)[2, 0, 0] = 1.0  # b_V[0] = e_0 ...
    attn.out.weight[:, 0] = third  # ... and W_O[0][0] = third: the head writes `third` whatever it reads
    attn.out.bias[:] = third
    mlp.fc_out.bias[:] = third
    model.unembed.weight[:] = torch.eye(task.vocab_size)
    return model


def _heads_model(task: NRecurrence, n_ctx: int, lags: list[int], ov_scales: list[float]) -> GPT:
    """Attention only, one-hot positions; head ``h`` attends from query ``i`` to key ``i - lags[h]`` with score
    :data:`SHARP` (0 elsewhere) and writes ``ov_scales[h]`` times its value (``W_V[h] @ W_O[h] = scale · I``)."""
    heads = len(lags)
    model = _zeroed(GPTConfig(vocab_size=task.vocab_size, n_ctx=n_ctx, d_model=n_ctx, n_layers=1, n_heads=heads, d_head=n_ctx, d_mlp=0, norm="none"))
    attn = model.blocks[0].attn
    with torch.no_grad():
        model.pos_embed.weight[:] = torch.eye(n_ctx)
        qkv = attn.qkv.weight.view(3, heads, n_ctx, n_ctx)  # [q/k/v, head, d_head, d_model]: x @ W_Q[h] = qkv[0, h] @ x
        eye = torch.eye(n_ctx)
        for h, (lag, scale) in enumerate(zip(lags, ov_scales)):
            qkv[0, h] = SHARP * math.sqrt(n_ctx) * eye  # q_i = e_i (scaled against the 1/sqrt(d_head))
            qkv[1, h] = torch.diag(torch.ones(n_ctx - lag), -lag)  # k_j = e_{j + lag}: q_i · k_j = [i = j + lag]
            qkv[2, h] = scale * eye
            attn.out.weight[:, h * n_ctx : (h + 1) * n_ctx] = eye
    return model


def _counts(prior: np.ndarray) -> list[int]:
    counts = np.asarray(prior, float) / np.min(prior)
    if not np.allclose(counts, counts.round()):
        raise ValueError(f"head_counts needs a prior proportional to whole numbers, got {prior}")
    return [int(c) for c in counts.round()]


def head_counts_model(task: NRecurrence, n_ctx: int, prior: np.ndarray) -> GPT:
    """The ``head_counts`` model (see the module docstring); ``prior`` proportional to whole numbers."""
    lags = [n - 1 for n, count in zip(task.periods, _counts(prior)) for _ in range(count)]
    return _heads_model(task, n_ctx, lags, [1.0] * len(lags))


def head_norms_model(task: NRecurrence, n_ctx: int, prior: np.ndarray) -> GPT:
    """The ``head_norms`` model (see the module docstring)."""
    return _heads_model(task, n_ctx, [n - 1 for n in task.periods], [float(p) for p in prior])


HAND_BUILT: dict[str, HandBuilt] = {
    "embedding": HandBuilt("target", embedding_model),
    "biases": HandBuilt("target", biases_model),
    "head_counts": HandBuilt("period", head_counts_model),
    "head_norms": HandBuilt("period", head_norms_model),
}
"""name → a hand-built model of known prior (the estimators' ``reads`` name these)."""


def known_prior(quantity: str, size: int) -> np.ndarray:
    """The skewed prior the hand-built models hold: ``∝ size, size - 1, …, 1`` (whole numbers, for head counts)."""
    weights = np.arange(size, 0, -1, dtype=float)
    return weights / weights.sum()


@dataclass(frozen=True)
class Check:
    """One static estimator on one hand-built model, built for a skewed prior and for it reversed."""

    estimator: str
    quantity: str
    model: str
    known: list[float]
    estimate: list[float]
    """The estimate on the model built for ``known``."""
    estimate_reversed: list[float]
    """The estimate on the model built for ``known`` reversed."""
    distance: float
    """The larger total-variation distance of the two estimates from their known priors."""
    passed: bool
    """``distance`` ≤ :data:`TOLERANCE`."""


def _estimate(quantity: str, name: str, model: GPT, task: NRecurrence) -> np.ndarray:
    if quantity == "target":
        return prior_from_marginal(task, TARGET_ESTIMATORS[name].estimate(model, task))
    return np.asarray(PERIOD_ESTIMATORS[name].estimate(model, task), float)


@torch.no_grad()
def validate(task: NRecurrence, n_ctx: int) -> tuple[Check, ...]:
    """Every static estimator on every hand-built model it reads, for ``task``'s vocabulary and periods and a
    context of ``n_ctx`` positions (at least the task's largest period)."""
    checks = []
    for quantity, table in (("target", TARGET_ESTIMATORS), ("period", PERIOD_ESTIMATORS)):
        known = known_prior(quantity, task.vocab_size if quantity == "target" else task.n_periods)
        for name, estimator in table.items():
            for model_name in estimator.reads:
                built = HAND_BUILT[model_name]
                if built.quantity != quantity:
                    raise ValueError(f"{quantity} estimator {name} reads {model_name}, a hand-built {built.quantity} model")
                forward = _estimate(quantity, name, built.build(task, n_ctx, known), task)
                backward = _estimate(quantity, name, built.build(task, n_ctx, known[::-1]), task)
                distance = max(0.5 * np.abs(forward - known).sum(), 0.5 * np.abs(backward - known[::-1]).sum())
                checks.append(Check(name, quantity, model_name, known.tolist(), forward.tolist(), backward.tolist(), float(distance), bool(distance <= TOLERANCE)))
    return tuple(checks)
