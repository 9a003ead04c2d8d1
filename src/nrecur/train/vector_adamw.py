"""AdamW, gradient clipping and Grokfast for many same-shape models at once, each with its own hyper-parameters.

The parameters of ``M`` models live in one flat buffer ``[model, param]``
(:class:`FlatLayout` says which columns hold which named tensor, matrices and
embeddings first), and so do their gradients and optimizer state. One
optimizer step is then a dozen tensor operations on the whole buffer, whatever
the number of models and parameters, with the per-model learning rate, weight
decay, betas and Grokfast constants as ``[model, 1]`` columns that broadcast
over the row. The arithmetic per model is the one of ``torch.optim.AdamW``
(decoupled weight decay on matrices and embeddings only, as
:func:`~nrecur.train.optimizers.make_optimizer` sets it up), of
``torch.nn.utils.clip_grad_norm_`` and of
:class:`~nrecur.train.grokfast.GrokfastEMA`, so a model's trajectory is the one
it has when trained alone, to float rounding (sums are taken in another order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nrecur.train.weights import is_decayed


@dataclass(frozen=True)
class Segment:
    """Where one named parameter lies in a row of the flat buffer."""

    name: str
    shape: tuple[int, ...]
    start: int
    stop: int


@dataclass(frozen=True)
class FlatLayout:
    """The columns of each parameter of a model in a flat ``[model, param]`` buffer.

    Parameters with two or more dimensions (weight-decayed) come first, in
    ``named_parameters`` order, then the others: the decayed columns are ``[0, decayed)``.
    """

    segments: tuple[Segment, ...]
    decayed: int
    """Number of leading columns that get weight decay."""
    size: int
    """Columns per model (its number of parameters)."""

    @classmethod
    def of(cls, model: nn.Module) -> FlatLayout:
        named = list(model.named_parameters())
        ordered = [item for item in named if is_decayed(item[1])] + [item for item in named if not is_decayed(item[1])]
        segments, start = [], 0
        for name, param in ordered:
            segments.append(Segment(name, tuple(param.shape), start, start + param.numel()))
            start += param.numel()
        decayed = sum(param.numel() for _, param in named if is_decayed(param))
        return cls(tuple(segments), decayed, start)

    def flatten(self, model: nn.Module) -> Tensor:
        """``[param]``: the model's parameters in layout order (a copy)."""
        params = dict(model.named_parameters())
        return torch.cat([params[s.name].detach().reshape(-1) for s in self.segments])

    def views(self, flat: Tensor) -> dict[str, Tensor]:
        """``{name: [..., *shape]}`` views of ``flat [..., param]`` (a row, or the whole ``[model, param]`` buffer)."""
        lead = flat.shape[:-1]
        return {s.name: flat[..., s.start : s.stop].view(*lead, *s.shape) for s in self.segments}

    def alias(self, model: nn.Module, row: Tensor) -> None:
        """Point the model's parameters at ``row [param]``: they then read and follow that row in place."""
        views = self.views(row)
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.data = views[name]


def per_model(values: Sequence[float], like: Tensor) -> Tensor:
    """``[model, 1]`` column of per-model scalars (computed in float64, stored in ``like``'s dtype and device)."""
    return torch.tensor(values, dtype=torch.float64).to(like.device, like.dtype).unsqueeze(1)


def clip_grad_norms(grad: Tensor, max_norms: Sequence[float]) -> Tensor:
    """Scale each row of ``grad [model, param]`` to at most its ``max_norm`` (inf: no clipping), in place.

    Returns ``[model]``: the norms before clipping. As ``clip_grad_norm_``: coefficient
    ``max_norm / (norm + 1e-6)``, capped at 1.
    """
    norms = torch.linalg.vector_norm(grad, dim=1)  # [model]
    if all(math.isinf(value) for value in max_norms):
        return norms
    limit = torch.tensor(max_norms, dtype=grad.dtype, device=grad.device)
    grad.mul_((limit / (norms + 1e-6)).clamp(max=1.0).unsqueeze(1))
    return norms


class VectorGrokfast:
    """Grokfast's EMA filter per model: ``h <- alpha*h + (1-alpha)*g; g <- g + lambda*h`` row by row.

    A model with ``lambda = 0`` keeps its gradient exactly (``g + 0*h``); its ``h`` is not used.
    """

    def __init__(self, alphas: Sequence[float], lambdas: Sequence[float], like: Tensor) -> None:
        self.alphas, self.lambdas = list(alphas), list(lambdas)
        self._alpha = per_model(self.alphas, like)  # [model, 1]
        self._lambda = per_model(self.lambdas, like)  # [model, 1]
        self.ema: Tensor | None = None
        """``[model, param]``, None before the first gradient (which starts the average)."""

    @torch.no_grad()
    def filter(self, grad: Tensor) -> None:
        """Update the average with ``grad [model, param]`` and amplify ``grad`` in place."""
        if self.ema is None:
            self.ema = grad.clone()
        else:
            self.ema.mul_(self._alpha).add_(grad * (1.0 - self._alpha))
        grad.add_(self.ema * self._lambda)

    def select(self, rows: Sequence[int]) -> VectorGrokfast:
        """The filter of the models ``rows`` only (a copy)."""
        kept = VectorGrokfast([self.alphas[i] for i in rows], [self.lambdas[i] for i in rows], self._alpha)
        if self.ema is not None:
            kept.ema = self.ema[list(rows)].clone()
        return kept


class VectorAdamW:
    """``torch.optim.AdamW`` for every row of ``params [model, param]``, with per-model lr, decay and betas.

    Weight decay applies to the layout's decayed columns only. ``exp_avg`` and ``exp_avg_sq``
    are ``[model, param]``; ``steps`` is the common number of steps taken.
    """

    def __init__(
        self,
        params: Tensor,
        decayed: int,
        weight_decays: Sequence[float],
        betas: Sequence[tuple[float, float]],
        eps: float = 1e-8,
    ) -> None:
        self.params = params
        self.decayed = decayed
        self.weight_decays = list(weight_decays)
        self.betas = [tuple(pair) for pair in betas]
        self.eps = eps
        self.exp_avg = torch.zeros_like(params)
        self.exp_avg_sq = torch.zeros_like(params)
        self.steps = 0
        self._one_minus_beta1 = per_model([1.0 - b1 for b1, _ in self.betas], params)  # [model, 1]
        self._beta2 = per_model([b2 for _, b2 in self.betas], params)
        self._one_minus_beta2 = per_model([1.0 - b2 for _, b2 in self.betas], params)

    @torch.no_grad()
    def step(self, grad: Tensor, lrs: Sequence[float]) -> None:
        """One AdamW step of every row with ``grad [model, param]`` and learning rates ``lrs [model]``."""
        self.steps += 1
        step = self.steps
        # Scalars per model in float64, as torch computes them in Python floats.
        shrink = per_model([1.0 - lr * wd for lr, wd in zip(lrs, self.weight_decays)], grad)
        step_size = per_model([lr / (1.0 - b1**step) for lr, (b1, _) in zip(lrs, self.betas)], grad)
        root_correction2 = per_model([math.sqrt(1.0 - b2**step) for _, b2 in self.betas], grad)
        self.params[:, : self.decayed].mul_(shrink)
        self.exp_avg.lerp_(grad, self._one_minus_beta1)
        self.exp_avg_sq.mul_(self._beta2).addcmul_(grad * self._one_minus_beta2, grad)
        denom = self.exp_avg_sq.sqrt().div_(root_correction2).add_(self.eps)
        self.params.sub_(self.exp_avg.div(denom).mul_(step_size))

    def select(self, params: Tensor, rows: Sequence[int]) -> VectorAdamW:
        """The optimizer of the models ``rows`` only, over their new buffer ``params`` (state copied)."""
        rows = list(rows)
        kept = VectorAdamW(params, self.decayed, [self.weight_decays[i] for i in rows], [self.betas[i] for i in rows], self.eps)
        kept.exp_avg = self.exp_avg[rows].clone()
        kept.exp_avg_sq = self.exp_avg_sq[rows].clone()
        kept.steps = self.steps
        return kept
