"""The local learning coefficient (LLC): how many effective parameters a model uses at a point of its loss landscape.

Singular learning theory measures a model's complexity at a local minimum ``w*`` of the loss by the local
learning coefficient λ(w*): the volume of parameters within loss ε of the minimum scales as ε^λ. A regular model
with ``d`` identifiable parameters has λ = d/2; symmetries and degenerate directions lower it. Developmental
interpretability follows λ over training: a model whose loss stays put while λ drops has simplified its solution,
a rise marks a new structure it pays for.

The estimator (Lau et al., "The local learning coefficient: a singularity-aware complexity measure") is

    λ̂(w*) = nβ · (E_w[L(w)] − L(w*)),  w ~ exp(−nβ·L(w) − γ/2·‖w − w*‖²),

where ``L`` is the mean loss (nats) on a fixed pool of data, ``nβ`` the inverse temperature times the number of
samples and ``γ`` the localization that keeps the chain near ``w*``. The expectation is taken by stochastic-gradient
Langevin dynamics: devinterp's SGLD step (:meth:`devinterp.optim.SGMCMC.sgld`, step size ε), on minibatches of the
pool, in several independent chains, each started at ``w*``; the first ``burnin`` steps of a chain are dropped and
the minibatch loss at every later step is a draw, less the loss of the same minibatch at ``w*`` (a control variate:
the expectation is unchanged, the minibatch's sampling noise cancels). The estimate is the mean over chains of each
chain's λ̂, its spread their standard deviation.

How to read it: λ̂ is only comparable between models estimated with the same settings and data; the settings are
those that recover a known answer in ``benchmarks/bench_llc_calibration.py`` (λ = (K−1)·p/2 for a softmax regression with
``K`` classes and ``p`` features, whose shift symmetry removes ``p`` of its ``K·p`` parameters). A negative λ̂ means
the chains found lower loss than ``w*``: the point is not a local minimum (early in training, before the loss
settles), and the estimate there measures descent, not complexity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

__all__ = ["LLCEstimate", "SamplerSettings", "estimate_llc"]


@dataclass(frozen=True)
class SamplerSettings:
    """The SGLD sampler's settings (see the module docstring for each symbol)."""

    step_size: float
    """ε: the SGLD step size."""
    localization: float
    """γ: the pull toward ``w*``."""
    nbeta: float
    """nβ: the inverse temperature times the number of samples."""
    chains: int
    draws: int
    """Draws per chain, one per step after the burn-in."""
    burnin: int
    """Steps dropped at the start of each chain."""
    batch_size: int
    """Samples of the pool in each SGLD step's minibatch."""


@dataclass(frozen=True)
class LLCEstimate:
    """λ̂ at one point, over the chains."""

    mean: float
    """The mean over chains of λ̂."""
    std: float
    """The standard deviation over chains of λ̂ (0 with one chain)."""
    per_chain: tuple[float, ...]
    init_loss: float
    """L(w*): the loss on the whole pool at the point estimated."""
    drift: float
    """nβ · (mean draw loss of each chain's second half − its first half), averaged over chains: near 0 when the
    chains have settled; of the order of λ̂ itself when they still climb (too few steps or too small a step)."""
    diverged: int
    """Chains whose loss became non-finite (left out of the mean)."""


def _per_sample(model: torch.nn.Module, loss: Callable, pool: Sequence[torch.Tensor], chunk: int) -> torch.Tensor:
    """``[sample]``: ``loss`` of every sample of the pool, in chunks of ``chunk`` samples."""
    n = len(pool[0])
    with torch.no_grad():
        return torch.cat([loss(model, *[tensor[start : start + chunk] for tensor in pool]).detach().float() for start in range(0, n, chunk)])


def estimate_llc(model: torch.nn.Module, loss: Callable[..., torch.Tensor], pool: Sequence[torch.Tensor], settings: SamplerSettings, seed: int = 0) -> LLCEstimate:
    """λ̂ of ``model`` at its current parameters.

    ``pool``: tensors sharing their first dimension (the samples); ``loss(model, *batch) -> [batch]``: the loss in
    nats of each sample of ``batch`` (each tensor of the pool indexed by the same rows); its mean is what the
    sampler descends. Every parameter that
    requires a gradient is sampled; the model's parameters are restored afterwards, even on error, so hooks active
    on it stay active for the sampler and afterwards. Each chain's minibatches and noise come from ``seed`` and the
    chain's index alone.
    """
    try:
        from devinterp.optim import SGMCMC  # imported only when an LLC is estimated
    except ImportError as error:
        raise ImportError("the local learning coefficient needs devinterp: pip install 'nrecur[llc]'") from error

    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    device = params[0].device
    n = len(pool[0])
    batch_size = min(settings.batch_size, n)
    was_training = model.training
    at_start = _per_sample(model, loss, pool, max(batch_size, 256))  # [sample]: the loss at w*
    per_chain, drifts, diverged = [], [], 0
    try:
        model.eval()  # the loss of the model as it predicts (no dropout noise)
        for chain in range(settings.chains):
            generator = torch.Generator(device="cpu").manual_seed(seed * 7919 + chain)
            noise = torch.Generator(device=device).manual_seed(seed * 7919 + chain + 10**6)
            optimizer = SGMCMC.sgld(params, lr=settings.step_size, localization=settings.localization, nbeta=settings.nbeta)
            draws = []
            for step in range(settings.burnin + settings.draws):
                rows = torch.randint(0, n, (batch_size,), generator=generator).to(pool[0].device)
                optimizer.zero_grad(set_to_none=True)
                value = loss(model, *[tensor[rows] for tensor in pool]).mean()
                if not torch.isfinite(value):
                    break
                if step >= settings.burnin:
                    # L_B(w) − L_B(w*) on the same minibatch: the same expectation as L_B(w) − L(w*), without
                    # the minibatch's own sampling noise.
                    draws.append(float(value.detach()) - float(at_start[rows.cpu()].mean()))
                value.backward()
                optimizer.step(noise_generator=noise)
            with torch.no_grad():
                for p, original in zip(params, saved):
                    p.copy_(original)
            if len(draws) < settings.draws:
                diverged += 1
                continue
            draws_arr = np.asarray(draws)
            half = len(draws_arr) // 2
            per_chain.append(settings.nbeta * float(draws_arr.mean()))
            drifts.append(settings.nbeta * (float(draws_arr[half:].mean()) - float(draws_arr[:half].mean())) if half else 0.0)
    finally:
        with torch.no_grad():
            for p, original in zip(params, saved):
                p.copy_(original)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    chains = np.asarray(per_chain)
    return LLCEstimate(
        mean=float(chains.mean()) if len(chains) else float("nan"),
        std=float(chains.std()) if len(chains) else float("nan"),
        per_chain=tuple(float(c) for c in chains),
        init_loss=float(at_start.mean()),
        drift=float(np.mean(drifts)) if drifts else float("nan"),
        diverged=diverged,
    )
