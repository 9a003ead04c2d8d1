"""A model whose local learning coefficient is known, for calibrating and testing the LLC estimator.

Softmax regression without biases: ``K`` classes, ``p`` features, logits ``W x`` with ``W [K, p]``, fitted by
maximum likelihood to samples drawn from a true ``W``. Adding one vector to every row of ``W`` leaves every
softmax unchanged, so ``p`` of the ``K·p`` parameters are unidentified and the model is regular in the remaining
``(K − 1)·p``: at the maximum-likelihood point λ = (K − 1)·p / 2. With ``duplicate`` the last feature is a copy of
the one before, so one more direction per class difference, ``K − 1`` in all, changes nothing:
λ = (K − 1)·(p − 1) / 2.

``scale`` multiplies the features (and divides the true weights, so the logits keep their size): the loss's
curvature grows as ``scale²`` while λ stays put, which lets a calibration match a transformer's curvature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class KnownModel:
    model: torch.nn.Module
    loss: Callable[..., torch.Tensor]
    """``loss(model, x, y) -> [batch]``: each sample's negative log-likelihood (nats)."""
    pool: tuple[torch.Tensor, torch.Tensor]
    """``x [sample, p]``, ``y [sample]``."""
    llc: float
    """The known λ at the fitted point."""


def per_sample_cross_entropy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y, reduction="none")


def softmax_regression(p: int = 4, classes: int = 5, n: int = 4000, scale: float = 1.0, seed: int = 0, duplicate: bool = False) -> KnownModel:
    """The fitted model (maximum likelihood by L-BFGS from the true weights) and its known λ."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=generator) * scale
    if duplicate:
        x[:, -1] = x[:, -2]
    truth = torch.randn(classes, p, generator=generator) / (p**0.5 * scale)
    y = torch.multinomial(torch.softmax(x @ truth.T, -1), 1, generator=generator)[:, 0]
    model = torch.nn.Linear(p, classes, bias=False)
    with torch.no_grad():
        model.weight.copy_(truth)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=1000, tolerance_grad=1e-10, tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        value = per_sample_cross_entropy(model, x, y).mean()
        value.backward()
        return value

    optimizer.step(closure)
    model.zero_grad(set_to_none=True)
    identified = p - 1 if duplicate else p
    return KnownModel(model=model, loss=per_sample_cross_entropy, pool=(x, y), llc=(classes - 1) * identified / 2)


def top_curvature(model: torch.nn.Module, loss: Callable[..., torch.Tensor], pool, iterations: int = 30, seed: int = 0) -> float:
    """The largest eigenvalue of the Hessian of the mean loss over ``pool`` (power iteration on Hessian-vector products)."""
    params = [q for q in model.parameters() if q.requires_grad]
    generator = torch.Generator().manual_seed(seed)
    vector = [torch.randn(q.shape, generator=generator) for q in params]
    value = torch.tensor(0.0)
    for _ in range(iterations):
        grads = torch.autograd.grad(loss(model, *pool).mean(), params, create_graph=True)
        product = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vector)), params)
        value = torch.sqrt(sum((h**2).sum() for h in product))
        vector = [h / value for h in product]
    return float(value)
