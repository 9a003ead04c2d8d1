"""Distributed alignment search: a learned low-rank subspace where swapping activations swaps a variable.

At one hook point, an orthonormal basis ``U [d_model, rank]`` (the first
``rank`` rows of a rotation) spans candidate coordinates of a variable. An
*interchange intervention* of rank ``k`` replaces the base run's coordinates
along ``U[:, :k]`` by the source run's, at a set of positions, and leaves the
orthogonal complement alone::

    h' = h_base + (h_source - h_base) U_k U_kᵀ

The basis is trained so that the intervened model's prediction matches a
counterfactual distribution (the exact observer's, :mod:`nrecur.observer.counterfactual`):
soft cross-entropy on training pairs, one rank per step in turn, so the
first ``k`` columns are the best ``k``-dimensional subspace the search found
for each ``k`` (nested, as in a Matryoshka search). The rotation is torch's
orthogonal parametrization. A pair is scored on held-out pairs by
*interchange-intervention accuracy* (the intervened model's most likely token
is the counterfactual's, on pairs whose counterfactual has one most likely
token) and by ``KL(counterfactual ‖ intervened)``.

The search needs only a :class:`Site`: the base's and the source's activations
at the hook and a function that runs the rest of the model from an intervened
activation. :func:`nrecur.analysis.causal.model_site` builds one for a GPT hook;
a hand-built stand-in whose coordinates are known goes through the same code.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import orthogonal

__all__ = ["Score", "Site", "Subspace", "decisive", "fit_subspace", "frozen", "interchange", "principal_angles", "random_basis", "score", "score_log_probs"]

TIE = 1e-6
"""A counterfactual whose two most likely tokens are closer than this has no most likely token."""


@dataclass(frozen=True)
class Site:
    """Where the search intervenes: activations of the base and the source runs at one hook, and the model after it."""

    base: Tensor
    """``[batch, pos, d_model]`` the base's activation at the hook (what the unintervened run sees)."""
    source: Tensor
    """``[batch, pos, d_model]`` the source's activation at the hook, pair by pair."""
    positions: Tensor
    """``[pos]`` bool: the positions whose coordinates are swapped."""
    run: Callable[[Tensor, Tensor], Tensor]
    """``run(activation [row, pos, d_model], pairs [row]) -> logits [row, vocab]`` at the predicting position,
    the rest of the model from the hook with ``activation`` there (row ``r`` is pair ``pairs[r]``)."""


@contextlib.contextmanager
def frozen(model: nn.Module):
    """``model`` in eval mode with no parameter gradients inside the block (both restored after, also on error):
    a subspace is fitted through the model, never the model itself."""
    was_training, needed = model.training, [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    try:
        yield model
    finally:
        for parameter, need in zip(model.parameters(), needed):
            parameter.requires_grad_(need)
        model.train(was_training)


class Subspace(nn.Module):
    """An orthonormal basis ``U [d_model, rank]`` (columns orthonormal under torch's orthogonal parametrization)."""

    def __init__(self, d_model: int, rank: int, generator: torch.Generator) -> None:
        super().__init__()
        if not 1 <= rank <= d_model:
            raise ValueError(f"rank must lie in 1..d_model={d_model}, got {rank}")
        # The orthogonal parametrization completes the basis to a square rotation with torch's global random
        # state (and the layer's initialization draws from it too): both draw from a seed taken from
        # ``generator`` inside a forked state, so the fit depends on ``generator`` alone and leaves the global
        # state as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            self.map = nn.Linear(rank, d_model, bias=False)  # weight [d_model, rank]
            with torch.no_grad():
                self.map.weight.copy_(random_basis(d_model, rank, generator))
            orthogonal(self.map)

    @property
    def basis(self) -> Tensor:
        """``[d_model, rank]`` with orthonormal columns."""
        return self.map.weight


def random_basis(d_model: int, rank: int, generator: torch.Generator) -> Tensor:
    """A uniformly random orthonormal ``[d_model, rank]`` (QR of a Gaussian matrix, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(d_model, rank, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))[None, :]).float()


def interchange(base: Tensor, source: Tensor, basis: Tensor, positions: Tensor) -> Tensor:
    """``base``, ``source`` ``[row, pos, d_model]``, ``basis [d_model, k]`` → ``base`` with its coordinates
    along ``basis`` replaced by ``source``'s at ``positions`` ``[pos]`` (bool)."""
    delta = (source - base) @ basis @ basis.T  # [row, pos, d_model]
    return base + delta * positions[None, :, None].to(delta.dtype)


def _intervened_logits(site: Site, basis: Tensor, ranks: tuple[int, ...], pairs: Tensor) -> Tensor:
    """``[rank, row, vocab]``: logits with every rank's intervention, one forward pass for all ranks."""
    base, source = site.base[pairs], site.source[pairs]  # [row, pos, d_model]
    activation = torch.cat([interchange(base, source, basis[:, :k], site.positions) for k in ranks])
    logits = site.run(activation, pairs.repeat(len(ranks)))  # [rank·row, vocab]
    return logits.view(len(ranks), len(pairs), -1)


def fit_subspace(
    site: Site,
    target: Tensor,
    ranks: tuple[int, ...],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    cycle: bool = True,
) -> Tensor:
    """Train a basis ``[d_model, max(ranks)]`` on the pairs of ``site`` so that every rank's interchange
    intervention predicts ``target`` ``[batch, vocab]`` (probabilities): Adam on the soft cross-entropy, at
    one rank per step in turn (``cycle``; else every rank at every step, averaged). Returns the basis (detached)."""
    generator = torch.Generator().manual_seed(seed)
    subspace = Subspace(site.base.shape[-1], max(ranks), generator)
    optimizer = torch.optim.Adam(subspace.parameters(), lr=lr)
    target = target.float()
    n_pairs = len(target)
    for step in range(steps):
        pairs = torch.randint(n_pairs, (min(batch_size, n_pairs),), generator=generator)
        rank = (ranks[step % len(ranks)],) if cycle else ranks
        log_probs = F.log_softmax(_intervened_logits(site, subspace.basis, rank, pairs), -1)  # [rank, row, vocab]
        loss = -(target[pairs][None] * log_probs).sum(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return subspace.basis.detach().clone()


def decisive(target: np.ndarray) -> np.ndarray:
    """``[batch]`` bool: the counterfactual ``[batch, vocab]`` has one most likely token (ties count as none)."""
    top = np.sort(target, axis=-1)
    return (top[:, -1] - top[:, -2]) > TIE


@dataclass(frozen=True)
class Score:
    """An intervention on held-out pairs, per rank."""

    iia: np.ndarray
    """``[rank]`` share of decisive pairs whose intervened most likely token is the counterfactual's."""
    kl: np.ndarray
    """``[rank]`` mean ``KL(counterfactual ‖ intervened)`` over all pairs."""


@torch.no_grad()
def score(site: Site, target: np.ndarray, basis: Tensor, ranks: tuple[int, ...], chunk: int = 512) -> Score:
    """IIA and KL of the interventions of ``basis`` (one per rank) on every pair of ``site`` against ``target``
    ``[batch, vocab]``."""
    parts = []
    for first in range(0, len(target), chunk):
        pairs = torch.arange(first, min(len(target), first + chunk))
        parts.append(F.log_softmax(_intervened_logits(site, basis, ranks, pairs).double(), -1))
    return score_log_probs(target, torch.cat(parts, 1).numpy())


def score_log_probs(target: np.ndarray, log_probs: np.ndarray) -> Score:
    """``target [batch, vocab]`` (the counterfactual), ``log_probs [..., batch, vocab]`` (a model's) → IIA and
    KL for each leading index."""
    keep = decisive(target)
    hit = log_probs.argmax(-1) == target.argmax(-1)  # [..., batch]
    iia = hit[..., keep].mean(-1) if keep.any() else np.full(hit.shape[:-1], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(target > 0, target * (np.log(np.where(target > 0, target, 1.0)) - log_probs), 0.0).sum(-1).mean(-1)
    return Score(iia=np.asarray(iia, dtype=float), kl=np.asarray(kl, dtype=float))


def principal_angles(a: Tensor, b: Tensor) -> np.ndarray:
    """Principal angles (radians, ascending) between the spans of the orthonormal ``a [d_model, k]`` and
    ``b [d_model, m]``: ``min(k, m)`` of them, 0 where the spans share a direction, π/2 where orthogonal."""
    cosines = torch.linalg.svdvals(a.double().T @ b.double()).clamp(-1.0, 1.0)
    return np.sort(np.arccos(cosines.numpy()))
