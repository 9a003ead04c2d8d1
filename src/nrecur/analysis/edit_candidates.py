"""The edits to choose among: each method at each site within its budget, run on problems and ranked.

An :class:`EditMethod` is a method of :data:`~nrecur.analysis.edit_methods.EDIT_METHODS`
at a hook and span (and, for a steer, a strength), with its :class:`Budget`
(the hooks, positions and rank it may touch, and its random edit).
:func:`method_candidates` lists them for a model; :class:`EditTools` carries one
out on a set of problems, or its random edit, and ranks it by its hold rate's
gain over that random edit (:func:`best_of` picks among ranked candidates).
:data:`CEILING`, patching the whole context's embeddings, is never a candidate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from nrecur.analysis.edit_methods import EditedPredictions, Span, edit_belief, edit_hooks
from nrecur.analysis.edit_problems import EditProblems
from nrecur.analysis.edit_scores import hold_rate, kl_from_desired
from nrecur.analysis.edit_subspace import random_subspace, subspace_hooks, subspace_width
from nrecur.analysis.steering import ProbeDirections, probe_directions
from nrecur.analysis.weight_edit import key_second_moment
from nrecur.model import GPT

__all__ = ["CEILING", "Budget", "EditMethod", "EditTools", "best_of", "edit_tools", "method_candidates", "random_like"]


@dataclass(frozen=True)
class Budget:
    """What an edit may touch."""

    hooks: tuple[str, ...]
    """The hook points whose activations it changes (a weight edit: where its change enters the residual stream)."""
    positions: str
    """``0..p``, ``p``, or ``every position of every sequence`` (a weight edit stays in the model)."""
    rank: int
    """The largest rank its change can have: of the added activations ``[edited position, d_model]`` for an
    activation edit (a patch sets every coordinate; a steer adds one of at most ``max_period`` vectors per
    position), of the weight change for a weight edit."""
    random: str
    """The random edit of this budget (``hold_rate_random``)."""


@dataclass(frozen=True)
class EditMethod:
    """How and where to edit: ``patch`` from the donor, ``steer`` with strength ``alpha``, ``rank_one``, or
    ``subspace`` of rank ``rank``, at ``hook``."""

    method: str
    """A name in :data:`EDIT_METHODS`: ``patch``, ``steer``, ``rank_one`` or ``subspace``."""
    hook: str
    span: Span = "context"
    alpha: float = 0.0
    rank: int = 0
    """A ``subspace`` edit's rank (0 for the other methods)."""

    @property
    def name(self) -> str:
        """``method[span]@hook``, e.g. ``patch[context]@blocks.1.hook_resid_pre``; a subspace edit adds its rank
        (``subspace[context]@blocks.0.attn.hook_v k=8``)."""
        return f"{self.method}[{self.span}]@{self.hook}" + (f" k={self.rank}" if self.method == "subspace" else "")

    def budget(self, model: GPT, position: int, max_period: int) -> Budget:
        positions = position + 1 if self.span == "context" else 1
        d_model = model.config.d_model
        if self.method == "patch":
            return Budget((self.hook,), "0..p" if self.span == "context" else "p", min(positions, d_model), "a patch from a random donor (a sequence of another target)")
        if self.method == "steer":
            return Budget((self.hook,), "0..p" if self.span == "context" else "p", min(positions, max_period, d_model), "α times random directions of the probe directions' norms")
        if self.method == "subspace":
            return Budget((self.hook,), "0..p" if self.span == "context" else "p", self.rank, "the donor's coordinates along a random subspace of the same rank")
        return Budget((self.hook,), "every position of every sequence", 1, "a rank-one edit keyed at p toward a random donor (a sequence of another target)")

    @property
    def persistent(self) -> bool:
        """A weight edit: it stays in the model, so it acts after ``p`` too (and on other sequences)."""
        return self.method == "rank_one"

    def automatic(self, model: GPT) -> bool:
        """Whether success at ``p`` is given by construction: the prediction at ``p`` is the model's on the donor."""
        final = f"blocks.{model.config.n_layers - 1}.hook_resid_post"
        return self.method == "rank_one" or (self.method == "patch" and (self.span == "context" or self.hook == final))


CEILING = EditMethod("patch", "blocks.0.hook_resid_pre", "context")
"""Patching the token and position embeddings of the whole context: the model reads the donor's context itself
(the ceiling, ``hold_rate_ceiling``; never a method)."""


def method_candidates(model: GPT, subspace_ranks: tuple[int, ...] = ()) -> list[EditMethod]:
    """Every patch site (not the embeddings: patching them rewrites tokens), when the model has an MLP the
    rank-one edit of the last one, and a subspace edit at every :func:`subspace_hooks` for each of
    ``subspace_ranks`` up to the hook's width (none by default); the steering sites are :func:`edit_hooks`, their α
    chosen by a scan."""
    hooks = [hook for hook in edit_hooks(model) if hook != CEILING.hook]
    candidates = [EditMethod("patch", hook, span) for span in ("context", "position") for hook in hooks]
    if model.config.d_mlp:
        candidates.append(EditMethod("rank_one", f"blocks.{model.config.n_layers - 1}.hook_mlp_out", "position"))
    for hook in subspace_hooks(model) if subspace_ranks else ():
        candidates += [EditMethod("subspace", hook, "context", rank=k) for k in subspace_ranks if k <= subspace_width(model, hook)]
    return candidates


@dataclass(frozen=True)
class EditTools:
    """What the edit methods need besides the problems, for one model."""

    model: GPT
    directions: dict[str, ProbeDirections]
    second_moment: torch.Tensor | None
    periods: tuple[int, ...]
    bases: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    """hook → the nested basis ``[width, max rank]`` of the subspace edits there (:func:`~nrecur.analysis.edit_subspace.fit_edit_subspace`)."""

    def run(self, candidate: EditMethod, problems: EditProblems, clean: torch.Tensor, random: bool = False, seed: int = 0) -> EditedPredictions:
        """``candidate`` on ``problems`` (``clean``: the model's log-probs on their tokens), or its random edit."""
        directions = self.directions.get(candidate.hook)
        if random and directions is not None:
            directions = random_like(directions, seed)
        basis = None
        if candidate.method == "subspace":
            width = subspace_width(self.model, candidate.hook)
            basis = random_subspace(width, candidate.rank, seed) if random else self.bases[candidate.hook][:, : candidate.rank]
        return edit_belief(
            self.model, problems.tokens, problems.period, problems.target, position=problems.position, method=candidate.method,
            span=candidate.span, hook=candidate.hook, donor=problems.random_donor if random else problems.donor,
            directions=directions, periods=self.periods, alpha=candidate.alpha, second_moment=self.second_moment, clean=clean, basis=basis,
        )  # fmt: skip

    def rank(self, candidate: EditMethod, problems: EditProblems, clean: torch.Tensor, seed: int) -> tuple[float, float]:
        """What edits are chosen by: the hold rate's gain over the random edit of the same budget, and ``kl_after``."""
        edited = self.run(candidate, problems, clean).log_probs
        random = self.run(candidate, problems, clean, random=True, seed=seed).log_probs
        return hold_rate(problems, edited) - hold_rate(problems, random), kl_from_desired(problems, edited)[1]


def edit_tools(run, model: GPT, hooks: list[str], seed: int, probe_sequences: int) -> EditTools:
    """What the edit methods need for ``model`` (the run's, or its initialization): steering probes fitted at
    ``hooks`` on ``probe_sequences`` fresh sequences, and the last MLP's key second moment."""
    task, length = run.task, run.config.length
    on_model = dataclasses.replace(run, model=model)
    directions = probe_directions(on_model, hooks, seed, probe_sequences) if hooks else {}
    second_moment = key_second_moment(model, task.sample(512, length, seed + 4).tokens) if model.config.d_mlp else None
    return EditTools(model, directions, second_moment, tuple(task.periods))


def random_like(directions: ProbeDirections, seed: int) -> ProbeDirections:
    """``directions`` with every vector replaced by a random one of the same norm."""
    rng = np.random.default_rng(seed)

    def same_norms(vectors: np.ndarray) -> np.ndarray:
        random = rng.normal(size=vectors.shape)
        return random * np.linalg.norm(vectors, axis=-1, keepdims=True) / np.linalg.norm(random, axis=-1, keepdims=True)

    return dataclasses.replace(directions, target=same_norms(directions.target), countdown=same_norms(directions.countdown))


def best_of(scored: list[tuple[float, float, object]]):
    """Of ``(gain, kl_after, item)`` on the selection problems (:meth:`EditTools.rank`): the largest gain; within
    0.01 of it, the lowest ``kl_after``."""
    holds = [hold if np.isfinite(hold) else -1.0 for hold, _, _ in scored]
    near = [(kl, index) for index, (hold, (_, kl, _)) in enumerate(zip(holds, scored)) if hold >= max(holds) - 0.01]
    return scored[min(near, key=lambda pair: (pair[0] if np.isfinite(pair[0]) else np.inf, pair[1]))[1]][2]
