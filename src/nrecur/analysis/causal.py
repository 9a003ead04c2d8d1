"""Causal variables: where the model keeps *what* (the target) and *when* (period and countdown), and in what form.

For pairs of sequences of the run's task (a *base* and a *source*, drawn
independently, of the run's context length), the exact observer's
counterfactual (:mod:`nrecur.observer.counterfactual`) says what the next token
would be if the base's belief about one variable were the source's: *what*
(the target ``t``), *when* (the timing ``(n, c)``) or *both*. Distributed
alignment search (:mod:`nrecur.analysis.das`) looks, at every residual hook of
the last block (``layers="all"``: of every block) and for two position sets — the predicting (last) position only, and every context
position — for a subspace of rank ``k`` whose interchange from the source makes
the model predict the counterfactual. One nested basis per (hook, positions,
variable) serves every ``k`` in ``ranks``; it is trained on training pairs,
scored on selection pairs to choose among cells, ranks and dimensions, and
reported on held-out pairs (other sequences again) by interchange-intervention accuracy
(IIA: the intervened model's most likely token is the counterfactual's, on
pairs whose counterfactual has one) and by ``KL(counterfactual ‖ intervened)``.

How to read it: ``iia_what`` and ``iia_when`` are, on held-out pairs, the
cells (hook, positions, rank) best on the selection pairs. Each stands beside controls computed in
the same call: the same search on the run's initialization
(``_random_init``), a random basis of the same rank at the same cell
(``_random``), the found intervention scored against the *other* variable's
counterfactual (``_other_labels``: a subspace that carries only its variable
scores low there), and the base model with no intervention (``_no_edit``, the
floor: how often the counterfactual's token is what the model predicts anyway).
The best cell is chosen on the selection pairs for the trained model and for
its initialization alike, and both are reported on the held-out pairs. At the embeddings with every position swapped, a
subspace holding the token identities rewrites the context itself, so *both*
reaches its ceiling there by construction; the predicting-position cells say
where the model keeps the belief it reads out. A dimension (below) means
something only where its IIA stands above the controls.

Factored or joint: ``dim_VAR`` is the smallest rank whose IIA on the
selection pairs reaches ``dim_share`` of the best there, at that variable's best cell. At the cell where
both variables are best carried together, the principal angles between the
*what* and the *when* subspaces (each at its own dimension) say whether they
overlap: ``subspace_overlap`` is the mean squared cosine of those angles, 0 for
orthogonal subspaces, beside the same for random subspaces of the same
dimensions (``_random``). ``dim_both`` is the dimension needed to swap the
whole belief; a factored code needs about ``dim_what + dim_when``, a joint
code over states about ``V·Σn − 1`` (``dim_joint_states``) against
``Σn + V − 2`` for separate factors (``dim_factored_states``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pydantic
import torch

from nrecur.analysis.base import progress_bar
from nrecur.analysis.contract import Analysis, Options, Result, initial_model, register
from nrecur.analysis.das import Site, decisive, fit_subspace, frozen, principal_angles, random_basis, score, score_log_probs
from nrecur.model import GPT
from nrecur.observer.counterfactual import counterfactual
from nrecur.tasks import NRecurrence

__all__ = ["Best", "CausalOptions", "CausalResult", "Cell", "Search", "compute", "model_site", "search", "search_hooks"]

VARIABLES = ("what", "when", "both")
OTHER = {"what": "when", "when": "what"}
"""The variable whose counterfactual labels are the ``_other_labels`` control (``both`` has none)."""


class CausalOptions(Options):
    train_pairs: int = pydantic.Field(768, ge=8)
    """(base, source) pairs the subspaces are trained on."""
    select_pairs: int = pydantic.Field(256, ge=8)
    """Selection pairs (other sequences): each variable's best cell and rank, and its dimension, are chosen on them."""
    test_pairs: int = pydantic.Field(512, ge=8)
    """Held-out pairs (other sequences again) the chosen interventions are reported on."""
    ranks: tuple[int, ...] = (1, 2, 4, 8, 16)
    """Ranks ``k`` of the interchange interventions (each at most d_model); one nested basis serves them all."""
    positions: tuple[Literal["last", "all"], ...] = ("last", "all")
    """Position sets swapped: the predicting position only, every context position (where it differs)."""
    layers: Literal["last", "all"] = "last"
    """Blocks whose residual hooks are searched: the last (its input, middle and output, where the belief the
    prediction reads must be by then) or every block (each earlier block's cells cost several times a last block's)."""
    steps: int = pydantic.Field(1000, ge=1)
    """Adam steps per basis (one rank per step, in turn)."""
    batch_size: int = pydantic.Field(64, ge=1)
    """Training pairs per step (each run at every rank)."""
    lr: float = pydantic.Field(0.01, gt=0)
    """Adam's learning rate for the rotation."""
    dim_share: float = pydantic.Field(0.95, gt=0, le=1)
    """A variable's dimension is the smallest rank whose IIA reaches this share of its best."""

    @pydantic.field_validator("ranks")
    @classmethod
    def _ranks(cls, ranks: tuple[int, ...]) -> tuple[int, ...]:
        if not ranks or any(k < 1 for k in ranks) or list(ranks) != sorted(set(ranks)):
            raise ValueError("ranks must be distinct positive integers in increasing order")
        return ranks


@dataclass(frozen=True)
class Cell:
    """One (hook, position set) of the search on one model: per variable, one value per rank."""

    hook: str
    positions: str
    iia: dict[str, list[float]]
    """On the held-out pairs (what is reported)."""
    kl: dict[str, list[float]]
    iia_random: dict[str, list[float]]
    """A random orthonormal basis of the same rank (the same random basis for every variable)."""
    kl_random: dict[str, list[float]]
    iia_other_labels: dict[str, list[float]]
    """The variable's trained intervention scored against the other variable's counterfactual."""
    angles: list[float]
    """Principal angles (degrees) between the *what* and *when* subspaces, each at its dimension here."""
    dims: dict[str, int]
    """Per variable, the smallest rank reaching ``dim_share`` of its best IIA in this cell (on the selection pairs)."""
    iia_select: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    """On the selection pairs (what cells, ranks and dimensions are chosen by)."""
    kl_select: dict[str, list[float]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Search:
    """The search on one model: every cell, and the unintervened floor."""

    cells: list[Cell]
    iia_no_edit: dict[str, float]
    """The base model's most likely token against each counterfactual's, with no intervention."""
    kl_no_edit: dict[str, float]


@dataclass(frozen=True)
class Best:
    """A variable's best cell and rank on one model."""

    hook: str
    positions: str
    rank: int
    cell: int
    """Index into ``Search.cells``."""
    iia: float
    """On the held-out pairs."""
    kl: float
    iia_select: float = float("nan")
    """On the selection pairs, where the cell and rank were chosen."""


@dataclass(frozen=True)
class CausalResult(Result):
    """Distributed alignment search for *what*, *when* and *both* on the trained model and on its initialization."""

    headline: dict[str, float]
    options: CausalOptions
    step: int
    share_decisive: dict[str, float]
    """Per variable, the share of held-out pairs whose counterfactual has one most likely token (IIA's pairs)."""
    trained: Search
    random_init: Search
    best: dict[str, Best]
    best_random_init: dict[str, Best]
    shared_cell: int
    """The trained cell where the weaker of *what* and *when* is best carried: the angles' cell."""


# ---------------------------------------------------------------------------- sites of a GPT


def search_hooks(model: GPT, layers: Literal["last", "all"] = "all") -> list[tuple[str, tuple[str, ...]]]:
    """The residual hooks searched (of the last block or of every one), each with the position sets that differ
    there: ``all`` only before the last attention (after it only the predicting position reaches the prediction)."""
    n = model.config.n_layers
    hooks = []
    for layer in range(n - 1 if layers == "last" else 0, n):
        hooks.append((f"blocks.{layer}.hook_resid_pre", ("last", "all")))
        if model.blocks[layer].mlp is not None:
            hooks.append((f"blocks.{layer}.hook_resid_mid", ("last", "all") if layer < n - 1 else ("last",)))
    hooks.append((f"blocks.{n - 1}.hook_resid_post", ("last",)))
    return hooks


@torch.no_grad()
def _caches(model: GPT, base: torch.Tensor, source: torch.Tensor, hooks: list[str]) -> tuple[dict, dict, torch.Tensor]:
    starts = {f"blocks.{int(h.split('.')[1])}.hook_resid_pre" for h in hooks}
    base_logits, base_cache = model.run_with_cache(base, names_filter=lambda n: n in starts or n in hooks)
    _, source_cache = model.run_with_cache(source, names_filter=lambda n: n in hooks)
    return dict(base_cache), dict(source_cache), base_logits[:, -1]


def model_site(model: GPT, hook: str, positions: str, base_cache: dict, source_cache: dict) -> Site:
    """The :class:`Site` of ``hook`` on ``model``: the rest of the model runs from the residual stream entering
    the hook's block (cached), the hook's activation replaced, the last block at the predicting position only."""
    layer = int(hook.split(".")[1])
    start = base_cache[f"blocks.{layer}.hook_resid_pre"]  # [batch, pos, d_model]
    length = start.shape[1]
    mask = torch.zeros(length, dtype=torch.bool)
    mask[-1 if positions == "last" else slice(None)] = True

    def run(activation: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        def replace(seen: torch.Tensor, _hook) -> torch.Tensor:  # the last block may run at one position
            return activation[:, length - seen.shape[1] :]

        with model.hooks([(hook, replace)]):
            return model(start[pairs], start_at_layer=layer, last_position_only=True)[:, -1]  # [row, vocab]

    return Site(base=base_cache[hook], source=source_cache[hook], positions=mask, run=run)


# ---------------------------------------------------------------------------- the search


def _dim(iia: np.ndarray, ranks: tuple[int, ...], share: float) -> int:
    if not np.isfinite(iia).any():
        return ranks[-1]
    return int(ranks[int(np.flatnonzero(iia >= share * np.nanmax(iia))[0])])


def search(
    model: GPT, base_tokens: np.ndarray, source_tokens: np.ndarray, targets: dict[str, np.ndarray], splits: tuple[int, int], options: CausalOptions, label: str = ""
) -> Search:
    """Train a basis per (hook, positions, variable) on pairs ``:splits[0]``, score it on the selection pairs
    ``splits[0]:splits[1]`` and on the held-out pairs ``splits[1]:`` against ``targets`` (variable →
    counterfactual ``[batch, vocab]``); see the module docstring."""
    fit, split = splits
    device = next(model.parameters()).device
    base = torch.as_tensor(base_tokens, dtype=torch.long, device=device)
    source = torch.as_tensor(source_tokens, dtype=torch.long, device=device)
    plan = search_hooks(model, options.layers)
    ranks = tuple(k for k in options.ranks if k <= model.config.d_model)
    cells = []
    with frozen(model):
        base_cache, source_cache, clean = _caches(model, base, source, [hook for hook, _ in plan])
        clean = torch.log_softmax(clean.double(), -1).cpu().numpy()[split:]
        floor = {v: score_log_probs(targets[v][split:], clean) for v in targets}
        todo = [(hook, positions) for hook, allowed in plan for positions in options.positions if positions in allowed]
        for index, (hook, positions) in enumerate(progress_bar(todo, f"causal{label}: sites", total=len(todo))):
            site = model_site(model, hook, positions, base_cache, source_cache)
            train_site, select_site, test_site = (_rows(site, rows) for rows in (slice(None, fit), slice(fit, split), slice(split, None)))
            generator = torch.Generator().manual_seed(options.seed + 7919 * index)
            control = random_basis(model.config.d_model, max(ranks), generator).to(device)
            bases, scores, selected, random_scores, other = {}, {}, {}, {}, {}
            for v_index, variable in enumerate(targets):
                bases[variable] = fit_subspace(
                    train_site, torch.as_tensor(targets[variable][:fit], device=device), ranks,
                    steps=options.steps, batch_size=options.batch_size, lr=options.lr, seed=options.seed + 31 * index + v_index,
                )  # fmt: skip
                selected[variable] = score(select_site, targets[variable][fit:split], bases[variable], ranks)
                scores[variable] = score(test_site, targets[variable][split:], bases[variable], ranks)
                random_scores[variable] = score(test_site, targets[variable][split:], control, ranks)
                if variable in OTHER and OTHER[variable] in targets:
                    other[variable] = score(test_site, targets[OTHER[variable]][split:], bases[variable], ranks).iia.tolist()
            dims = {v: _dim(s.iia, ranks, options.dim_share) for v, s in selected.items()}
            angles = []
            if "what" in bases and "when" in bases:
                angles = np.degrees(principal_angles(bases["what"][:, : dims["what"]].cpu(), bases["when"][:, : dims["when"]].cpu())).tolist()
            cells.append(Cell(
                hook=hook, positions=positions,
                iia={v: s.iia.tolist() for v, s in scores.items()}, kl={v: s.kl.tolist() for v, s in scores.items()},
                iia_random={v: s.iia.tolist() for v, s in random_scores.items()}, kl_random={v: s.kl.tolist() for v, s in random_scores.items()},
                iia_other_labels=other, angles=angles, dims=dims,
                iia_select={v: s.iia.tolist() for v, s in selected.items()}, kl_select={v: s.kl.tolist() for v, s in selected.items()},
            ))  # fmt: skip
    return Search(cells=cells, iia_no_edit={v: f.iia.item() for v, f in floor.items()}, kl_no_edit={v: f.kl.item() for v, f in floor.items()})


def _rows(site: Site, rows: slice) -> Site:
    """``site`` on the pairs ``rows`` (a contiguous slice), renumbered from 0."""
    offset = rows.start or 0
    return Site(base=site.base[rows], source=site.source[rows], positions=site.positions, run=lambda activation, pairs: site.run(activation, pairs + offset))


def _best(found: Search, ranks: tuple[int, ...], variable: str) -> Best:
    """The cell and rank of the highest IIA for ``variable`` on the selection pairs (ties: the lower KL there,
    then the lower rank), with its figures on the held-out pairs."""
    candidates = [
        (np.nan_to_num(cell.iia_select[variable][r], nan=-1.0), -cell.kl_select[variable][r], -ranks[r], index, r)
        for index, cell in enumerate(found.cells) for r in range(len(cell.iia_select[variable]))
    ]  # fmt: skip
    _, _, _, index, r = max(candidates)
    cell = found.cells[index]
    return Best(
        hook=cell.hook, positions=cell.positions, rank=ranks[r], cell=index, iia=cell.iia[variable][r], kl=cell.kl[variable][r],
        iia_select=cell.iia_select[variable][r],
    )  # fmt: skip


def _overlap(angles_degrees: list[float]) -> float:
    return float(np.mean(np.cos(np.radians(angles_degrees)) ** 2)) if angles_degrees else float("nan")


def _random_overlap(d_model: int, k: int, m: int, seed: int, draws: int = 200) -> float:
    generator = torch.Generator().manual_seed(seed)
    values = [_overlap(np.degrees(principal_angles(random_basis(d_model, k, generator), random_basis(d_model, m, generator))).tolist()) for _ in range(draws)]
    return float(np.mean(values))


# ---------------------------------------------------------------------------- the analysis


def _applies(run) -> str | None:
    if not isinstance(run.task, NRecurrence):
        return f"the causal variables what and when are n-recurrence's; task kind {run.task.kind!r} has none"
    if run.model.config.n_layers < 1:
        return "needs a model with at least one layer"
    return None


def _pairs(run, options: CausalOptions) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    n = options.train_pairs + options.select_pairs + options.test_pairs
    base = run.task.sample(n, run.config.length, options.seed).tokens
    source = run.task.sample(n, run.config.length, options.seed + 1).tokens
    found = {v: counterfactual(run.task, base, source, v) for v in VARIABLES}
    keep = np.logical_and.reduce([c.defined[:, -1] for c in found.values()])
    return base[keep], source[keep], {v: c.predictive[keep, -1] for v, c in found.items()}


def _splits(n_pairs: int, options: CausalOptions) -> tuple[int, int]:
    """Where the training pairs end and where the selection pairs end, in proportion to the options (the pairs
    whose counterfactual is undefined are dropped before)."""
    total = options.train_pairs + options.select_pairs + options.test_pairs
    fit = max(1, round(n_pairs * options.train_pairs / total))
    split = max(fit + 1, round(n_pairs * (options.train_pairs + options.select_pairs) / total))
    if split >= n_pairs:
        raise ValueError(f"too few pairs with a defined counterfactual ({n_pairs}) for training, selection and held-out pairs")
    return fit, split


def compute(run, options: CausalOptions) -> CausalResult:
    """The search on ``run.model`` and on its initialization, on the same pairs; see the module docstring."""
    why = _applies(run)
    if why is not None:
        raise ValueError(f"causal does not apply: {why}")
    base, source, targets = _pairs(run, options)
    splits = _splits(len(base), options)
    split = splits[1]
    ranks = tuple(k for k in options.ranks if k <= run.model.config.d_model)
    trained = search(run.model, base, source, targets, splits, options)
    control = search(initial_model(run), base, source, targets, splits, options, " (initialization)")
    best = {v: _best(trained, ranks, v) for v in VARIABLES}
    best_init = {v: _best(control, ranks, v) for v in VARIABLES}
    headline: dict[str, float] = {}
    for v in VARIABLES:
        b, cell = best[v], trained.cells[best[v].cell]
        r = ranks.index(b.rank)
        headline[f"iia_{v}"] = b.iia
        headline[f"iia_{v}_random_init"] = best_init[v].iia
        headline[f"iia_{v}_random"] = cell.iia_random[v][r]
        if v in OTHER:
            headline[f"iia_{v}_other_labels"] = cell.iia_other_labels[v][r]
        headline[f"iia_{v}_no_edit"] = trained.iia_no_edit[v]
        headline[f"kl_{v}"] = b.kl
        headline[f"kl_{v}_random_init"] = best_init[v].kl
        headline[f"kl_{v}_random"] = cell.kl_random[v][r]
        headline[f"kl_{v}_no_edit"] = trained.kl_no_edit[v]
    for v in VARIABLES:
        headline[f"dim_{v}"] = float(trained.cells[best[v].cell].dims[v])
        headline[f"dim_{v}_random_init"] = float(control.cells[best_init[v].cell].dims[v])
    shared = max(range(len(trained.cells)), key=lambda i: min(np.nanmax(trained.cells[i].iia_select["what"]), np.nanmax(trained.cells[i].iia_select["when"])))
    cell = trained.cells[shared]
    headline["subspace_overlap"] = _overlap(cell.angles)
    headline["subspace_overlap_random"] = _random_overlap(run.model.config.d_model, cell.dims["what"], cell.dims["when"], options.seed)
    headline["min_angle_deg"] = float(min(cell.angles)) if cell.angles else float("nan")
    task = run.task
    headline["dim_joint_states"] = float(task.vocab_size * sum(task.periods) - 1)
    headline["dim_factored_states"] = float(sum(task.periods) + task.vocab_size - 2)
    share = {v: float(decisive(t[split:]).mean()) for v, t in targets.items()}
    return CausalResult(
        headline=headline, options=options, step=run.step, share_decisive=share, trained=trained, random_init=control,
        best=best, best_random_init=best_init, shared_cell=shared,
    )  # fmt: skip


CAUSAL = register(
    Analysis(
        name="causal",
        description="where the model keeps the target (what) and the timing (when): distributed alignment search against the "
        "observer's counterfactual, beside the initialization, a random subspace, the other variable's labels and no edit",
        options=CausalOptions,
        result=CausalResult,
        compute=compute,
        applies=_applies,
        figures="nrecur.analysis.figures.causal:draw",
        over_training={"train_pairs": 256, "select_pairs": 128, "test_pairs": 256, "steps": 100, "positions": ("last",)},
        in_all=False,
    )
)
