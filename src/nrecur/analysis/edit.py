"""Editing a belief: can we make the model believe the rule ``(n*, t*)``, and does the belief hold?

A *destination* sequence follows one rule ``(n, t)`` up to the edit position
``p``; from ``p + 1`` on it continues with the tokens of a *donor* that follows
``(n*, t*)`` (``t* ≠ t``) with its next target at ``p + 1`` — the phase the edit
asserts. An edit acts at one hook on positions ``0..p`` (``context``) or on ``p``
alone (``position``), by one of :data:`EDIT_METHODS`, within its stated
:class:`Budget` (hooks, positions, rank):

* ``patch``: the donor's activation replaces the destination's there (the
  donor's context, as the model represents it at that hook);
* ``steer``: ``α`` times probe directions is added there — the target probe's
  direction for ``t*`` plus the (period, countdown) probe's direction for
  ``(n*, (p - i) mod n*)`` at position ``i`` (:mod:`nrecur.analysis.steering`
  fits both); ``α`` is chosen on the selection problems;
* ``rank_one``: a rank-one change of the last MLP's weights, ROME-style, keyed
  at ``p`` (:mod:`nrecur.analysis.weight_edit`); it stays in the model, so it
  also acts after ``p`` and on other sequences (its *specificity* cost, the mean
  KL(clean ‖ edited) on unrelated sequences).

Rewriting the context's tokens (patching the embeddings of ``0..p``) is the
*ceiling*, never a method: the model then reads a sequence that followed
``(n*, t*)`` all along.

The **hold** is the headline. After ``p`` nothing is intervened: the edit can
act there only through what attention reads of positions ``0..p`` (or, for the
weight edit, through the changed weights). At each later target position of
``(n*, t*)`` (``p + 1 + k·n*``, predicted at ``p + k·n*``, ``k = 1 … FOLLOWING``)
the tokens since ``p`` already show ``t*`` recurring; a position *counts* only
while they do not yet reveal the rule — while the exact observer of the tokens
since ``p`` alone does not predict ``t*`` there. The edit *holds* at a counted
position when the model's most likely token there is ``t*``; the **hold rate**
is the share of counted positions where it holds (``hold_positions`` of them).
It stands beside the same positions with no edit (``hold_rate_no_edit``: the
model on the spliced tokens), with the context's tokens rewritten
(``hold_rate_ceiling``), with a random edit of the same budget
(``hold_rate_random``: a patch or weight edit from a random donor — a sequence of
another target — a steer along random directions of the probe directions'
norms) and with the same edit on the run's initialization
(``hold_rate_random_init``).

Success at ``p`` itself — ``t*`` most likely at the edited position, predicting
``p + 1`` — stays in the result, flagged ``automatic`` where the edit gives it by
construction: a causal model's prediction at ``p`` after a patch of the donor
over ``0..p`` (at any hook), or a patch or weight edit that sets the final
residual stream at ``p`` to the donor's, *is* its prediction for the donor.
*Moved* is SPEC §5's ``1 - KL(O* ‖ M_edit) / KL(O* ‖ M_clean)`` at ``p``, with
``O*`` the exact observer's predictive for the donor and ``M_clean`` the model on
the spliced tokens without the edit; ``kl_after`` is the mean KL(O* ‖ model)
after ``p`` — an edit that makes ``t*`` likely everywhere holds at the targets
and still moves the predictions away from ``O*``.

How to read it: every site of every method is chosen on one set of problems
and reported on another (held out). An edit is chosen by its hold rate's gain
over the random edit of its budget — an edit that wrecks the context makes the
model fall back on the continuation, and a random edit of that size does the
same — ties within 0.01 going to the lowest ``kl_after``. The best site of each
method is in the headline (``hold_rate/patch`` beside ``hold_rate_random/patch``,
…), and the best of the activation edits — which act on ``0..p`` or ``p`` only —
is ``hold_rate``; a weight edit acts after ``p`` too, so its hold stands beside
the headline, never as it. An edit that installs the belief
holds well above ``hold_rate_no_edit`` and ``hold_rate_random``; the ceiling says
how far the model itself carries a belief it read from the tokens.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pydantic
import torch

from nrecur.analysis.base import progress_bar
from nrecur.analysis.contract import Analysis, OptionError, Options, Result, initial_model, register
from nrecur.analysis.edit_methods import EDIT_METHODS, EditedPredictions, Span, edit_belief, edit_hooks, steering_vectors
from nrecur.analysis.patching import deterministic_task
from nrecur.analysis.steering import ALPHAS, ProbeDirections, kl_per_row, probe_directions
from nrecur.analysis.weight_edit import key_second_moment, rank_one_edits, specificity
from nrecur.model import GPT
from nrecur.tasks import NRecurrence

__all__ = [
    "CEILING", "EDIT_METHODS", "Budget", "EditMethod", "EditOptions", "EditProblems", "EditResult", "EditScore", "EditedPredictions",
    "MethodScore", "NoEdit", "compute", "default_position", "edit_belief", "edit_hooks", "edit_problems", "hits", "hold_rate",
    "method_candidates", "score", "steering_vectors",
]  # fmt: skip (edit_belief and the methods live in edit_methods; re-exported here)

FOLLOWING = 3
"""Target positions of ``(n*, t*)`` after the first (``p + 1``) at which the hold is read."""


# ---------------------------------------------------------------------------- the sequences


@dataclass(frozen=True)
class EditProblems:
    """Destinations spliced with donors at ``position``; everything ``[batch, ...]``."""

    tokens: np.ndarray
    """``[batch, pos]`` the destination up to ``position``, the donor after it (what the model reads)."""
    donor: np.ndarray
    """``[batch, pos]`` a sequence that follows ``(period, target)`` throughout, next target at ``position + 1``."""
    random_donor: np.ndarray
    """``[batch, pos]`` a sequence of another target than ``t*`` (its own period and phase): the random edit's donor."""
    position: int
    """``p``: the last position the edit acts on."""
    period: np.ndarray
    """``[batch]`` ``n*``."""
    target: np.ndarray
    """``[batch]`` ``t*``."""
    destination_period: np.ndarray
    """``[batch]`` ``n`` of the destination."""
    destination_target: np.ndarray
    """``[batch]`` ``t`` of the destination (never ``t*``)."""
    desired: np.ndarray
    """``[batch, pos, vocab]`` ``O*``: the observer's predictive for the donor."""
    revealed: np.ndarray
    """``[batch, 1 + FOLLOWING]`` bool: the exact observer of the tokens since ``p`` alone predicts ``t*`` at the
    read (see :attr:`reads`); column 0, ``p`` itself, has no tokens since ``p`` (False)."""

    @property
    def reads(self) -> np.ndarray:
        """``[batch, 1 + FOLLOWING]`` positions predicting the next target positions of ``(n*, t*)``: ``p``,
        ``p + n*``, …; -1 past the end of the sequence."""
        reads = self.position + self.period[:, None] * np.arange(1 + FOLLOWING)[None, :]
        return np.where(reads < self.tokens.shape[1], reads, -1)

    @property
    def counted(self) -> np.ndarray:
        """``[batch, 1 + FOLLOWING]`` bool: the reads the hold counts — after ``p``, inside the sequence, and
        not yet revealed by the tokens since ``p``."""
        counted = (self.reads >= 0) & ~self.revealed
        counted[:, 0] = False
        return counted


def _draw_other_targets(pool, target: np.ndarray, what: str) -> np.ndarray:
    """Row indices into ``pool``: for each ``t*`` the next unused sequence whose target differs."""
    used = np.zeros(len(pool.tokens), dtype=bool)
    chosen = np.empty(len(target), dtype=np.int64)
    for i, t in enumerate(target):
        candidates = np.flatnonzero(~used & (pool.target[:, 0] != t))
        if not len(candidates):
            raise ValueError(f"could not find {what} with a target other than t*; is there more than one target?")
        chosen[i] = candidates[0]
        used[chosen[i]] = True
    return chosen


def edit_problems(task: NRecurrence, per_rule: int, length: int, position: int, seed: int = 0) -> EditProblems:
    """``per_rule`` problems for every rule ``(n*, t*)`` of ``task``, sequences from ``task`` made
    deterministic; donors drawn by rejection until each rule has ``per_rule`` with its next target at
    ``position + 1`` (so any token distribution of the task's variant is kept). ``O*`` and what the tokens
    since ``position`` reveal come from ``task``'s own observer."""
    if not 0 <= position < length - 1:
        raise ValueError(f"the edit position must be in [0, {length - 2}] for sequences of length {length}, got {position}")
    rules = deterministic_task(task)
    wanted = task.rules()
    donors: dict[tuple[int, int], list[np.ndarray]] = {rule: [] for rule in wanted}
    pool_size, attempt = 256 * len(wanted), 0
    while any(len(found) < per_rule for found in donors.values()):
        if attempt > 12:
            short = [rule for rule, found in donors.items() if len(found) < per_rule]
            raise ValueError(f"could not draw {per_rule} donor sequences for the rules {short}; their prior is too small")
        pool = rules.sample(pool_size, length, seed * 1000 + attempt + 1)
        ok = pool.countdown[:, position + 1] == 0
        for row in np.flatnonzero(ok):
            found = donors[(int(pool.period[row, 0]), int(pool.target[row, 0]))]
            if len(found) < per_rule:
                found.append(pool.tokens[row])
        pool_size, attempt = pool_size * 2, attempt + 1
    donor = np.stack([tokens for rule in wanted for tokens in donors[rule]])
    period = np.repeat([n for n, _ in wanted], per_rule)
    target = np.repeat([t for _, t in wanted], per_rule)

    # Destinations and random donors: the next unused sequences whose target differs from t*.
    pool = rules.sample(4 * len(donor), length, seed * 1000 + 999)
    destination = pool.select(_draw_other_targets(pool, target, "destinations"))
    others = rules.sample(4 * len(donor), length, seed * 1000 + 998)
    random_donor = others.tokens[_draw_other_targets(others, target, "random donors")]
    tokens = np.concatenate([destination.tokens[:, : position + 1], donor[:, position + 1 :]], axis=1)
    desired = np.asarray(task.posterior(donor).predictive, dtype=np.float64)

    # What the tokens since p reveal: the observer of the continuation alone, read where the model is read.
    since = np.asarray(task.posterior(donor[:, position + 1 :]).predictive)  # [batch, pos - p - 1, vocab]
    reads = position + period[:, None] * np.arange(1 + FOLLOWING)[None, :]
    inside = (reads > position) & (reads < length)
    rows = np.arange(len(donor))[:, None]
    best = since[rows, np.where(inside, reads - position - 1, 0)].argmax(-1)  # [batch, read]
    revealed = inside & (best == target[:, None])
    return EditProblems(
        tokens=tokens,
        donor=donor,
        random_donor=random_donor,
        position=position,
        period=period,
        target=target,
        destination_period=destination.period[:, 0],
        destination_target=destination.target[:, 0],
        desired=desired,
        revealed=revealed,
    )


# ---------------------------------------------------------------------------- the candidates


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
    """How and where to edit: ``patch`` from the donor, ``steer`` with strength ``alpha``, or ``rank_one``, at ``hook``."""

    method: str
    """A name in :data:`EDIT_METHODS`: ``patch``, ``steer`` or ``rank_one``."""
    hook: str
    span: Span = "context"
    alpha: float = 0.0

    @property
    def name(self) -> str:
        """``method[span]@hook``, e.g. ``patch[context]@blocks.1.hook_resid_pre``."""
        return f"{self.method}[{self.span}]@{self.hook}"

    def budget(self, model: GPT, position: int, max_period: int) -> Budget:
        positions = position + 1 if self.span == "context" else 1
        d_model = model.config.d_model
        if self.method == "patch":
            return Budget((self.hook,), "0..p" if self.span == "context" else "p", min(positions, d_model), "a patch from a random donor (a sequence of another target)")
        if self.method == "steer":
            return Budget((self.hook,), "0..p" if self.span == "context" else "p", min(positions, max_period, d_model), "α times random directions of the probe directions' norms")
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


def method_candidates(model: GPT) -> list[EditMethod]:
    """Every patch site (not the embeddings: patching them rewrites tokens) and, when the model has an MLP, the
    rank-one edit of the last one; the steering sites are :func:`edit_hooks`, their α chosen by a scan."""
    hooks = [hook for hook in edit_hooks(model) if hook != CEILING.hook]
    candidates = [EditMethod("patch", hook, span) for span in ("context", "position") for hook in hooks]
    if model.config.d_mlp:
        candidates.append(EditMethod("rank_one", f"blocks.{model.config.n_layers - 1}.hook_mlp_out", "position"))
    return candidates


# ---------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class EditScore:
    """Success, hold and moved of one edit on a set of problems."""

    success: np.ndarray
    """``[batch, 1 + FOLLOWING]`` t* most likely at the k-th next target position (NaN past the end)."""
    success_clean: np.ndarray
    """The same without the edit."""
    moved: np.ndarray
    """``[batch, pos - position]`` moved toward ``O*`` at positions ``p, p + 1, …``."""
    hold: float
    """Share of the counted reads (:attr:`EditProblems.counted`) with t* most likely; NaN if none counts."""
    hold_clean: float
    """The same without the edit."""


def hits(problems: EditProblems, log_probs) -> np.ndarray:
    """``[batch, 1 + FOLLOWING]``: 1 where t* is most likely at the read, 0 where not, NaN past the end."""
    reads = problems.reads
    best = torch.as_tensor(log_probs).argmax(-1).cpu().numpy()[np.arange(len(reads))[:, None], np.maximum(reads, 0)]
    return np.where(reads >= 0, best == problems.target[:, None], np.nan)


def hold_rate(problems: EditProblems, log_probs) -> float:
    """Share of the counted reads where t* is most likely under ``log_probs [batch, pos, vocab]``."""
    counted = problems.counted
    return float(hits(problems, log_probs)[counted].mean()) if counted.any() else math.nan


def score(problems: EditProblems, edited: EditedPredictions) -> EditScore:
    p = problems.position
    desired = torch.as_tensor(problems.desired[:, p:])
    before = kl_per_row(desired, edited.clean[:, p:])
    after = kl_per_row(desired, edited.log_probs[:, p:])
    moved = (1.0 - after / before).numpy()
    return EditScore(
        success=hits(problems, edited.log_probs),
        success_clean=hits(problems, edited.clean),
        moved=moved,
        hold=hold_rate(problems, edited.log_probs),
        hold_clean=hold_rate(problems, edited.clean),
    )


def _share(values: np.ndarray) -> tuple[float, ...]:
    """``[batch, read]`` 0/1/NaN → per read the share of hits among the sequences long enough (NaN if none is)."""
    counted = np.isfinite(values).sum(0)
    return tuple(float(v) for v in np.where(counted > 0, np.nansum(values, 0) / np.maximum(counted, 1), np.nan))


def _kl(problems: EditProblems, log_probs) -> tuple[tuple[float, ...], float]:
    """Mean KL(O* ‖ model) at each position from ``p`` on, and its mean after ``p``."""
    p = problems.position
    kl = kl_per_row(torch.as_tensor(problems.desired[:, p:]), torch.as_tensor(log_probs)[:, p:]).mean(0)  # [pos - p]
    return tuple(float(v) for v in kl), float(kl[1:].mean()) if len(kl) > 1 else math.nan


# ---------------------------------------------------------------------------- the result


class EditOptions(Options):
    n_sequences: int = pydantic.Field(512, ge=8)
    """Edit problems in each of two sets (edits are chosen on one, reported on the other), ⌈n_sequences / rules⌉ for each rule (n*, t*)."""
    position: int | None = pydantic.Field(None, ge=0)
    """p, the last position an edit acts on (default: room for three more target positions of the longest period after it, and at least half the context before it)."""
    alphas: tuple[float, ...] = tuple(alpha for alpha in ALPHAS if alpha > 0)
    """Steering strengths scanned on the selection problems (how much each probe's reading is raised)."""
    probe_sequences: int = pydantic.Field(1024, ge=8)
    """Fresh sequences the steering probes are fitted on."""

    @pydantic.field_validator("alphas")
    @classmethod
    def _some_strength(cls, alphas: tuple[float, ...]) -> tuple[float, ...]:
        if not alphas or min(alphas) < 0 or max(alphas) <= 0:
            raise ValueError("give strengths >= 0, at least one of them > 0")
        return alphas


@dataclass(frozen=True)
class MethodScore:
    """One edit (method and site) on the held-out problems."""

    name: str
    method: str
    hook: str
    span: str
    alpha: float
    budget: Budget
    hold_rate: float
    """Share of the counted reads after ``p`` where t* is most likely (the headline's measure)."""
    hold_rate_random: float
    """The random edit of the same budget (:attr:`Budget.random`) on the same positions."""
    gain_selection: float
    """What the edits are chosen by: the hold rate's gain over the random edit, on the selection problems."""
    success: tuple[float, ...]
    """Share with t* most likely at ``p`` and at each of the FOLLOWING next target positions (all of them, counted
    or not)."""
    success_at_p_automatic: bool
    """Success at ``p`` is given by construction (see the module docstring)."""
    moved: float
    """Mean moved toward ``O*`` at ``p``."""
    kl: tuple[float, ...]
    """Mean KL(O* ‖ model) at each position from ``p`` on."""
    kl_after: float
    """Its mean after ``p``."""
    specificity_kl: float | None = None
    """A weight edit's cost: mean KL(clean ‖ edited) on unrelated sequences (the best weight edit's only)."""


@dataclass(frozen=True)
class NoEdit:
    """The model without an edit of its own: on the spliced tokens (no edit) or on the donor (the ceiling)."""

    hold_rate: float
    success: tuple[float, ...]
    kl: tuple[float, ...]
    kl_after: float


@dataclass(frozen=True)
class EditResult(Result):
    """Every edit method and site, chosen on one set of problems and scored on held-out ones, beside no edit,
    the ceiling, random edits and the same edit on the run's initialization."""

    headline: dict[str, float]
    options: EditOptions
    step: int
    position: int
    """``p`` (the option's value or its default)."""
    length: int
    periods: tuple[int, ...]
    held_out_problems: int
    hold_positions: int
    """Counted reads over the held-out problems."""
    hold_positions_by_read: tuple[int, ...]
    """Counted reads at ``p + k·n*`` for ``k = 0 … FOLLOWING`` (``k = 0`` never counts)."""
    chosen: str
    """The name of the edit of ``hold_rate``: the best of the best sites of the methods that act on ``0..p`` or ``p``
    only (on the selection problems); a weight edit acts after ``p`` too, so its hold is beside it, never it."""
    best_by_method: dict[str, str]
    """method → the name of its best site."""
    methods: tuple[MethodScore, ...]
    no_edit: NoEdit
    ceiling: NoEdit
    hold_rate_random_init: float
    """The chosen edit (same method, site and α; its probes or second moment refitted) on the run's initialization."""
    hold_rate_no_edit_random_init: float
    by_rule: tuple[tuple[float, ...], ...]
    """``[period, vocab]`` the chosen edit's held-out hold rate per rule ``(n*, t*)``; NaN where no read counts
    (or off the prior)."""
    probe_r2: dict[str, dict[str, float]]
    """hook → held-out R² of the steering probes (``target``, ``countdown``)."""

    def method(self, name: str) -> MethodScore:
        return next(m for m in self.methods if m.name == name)


# ---------------------------------------------------------------------------- the analysis


@dataclass(frozen=True)
class _Tools:
    """What the edit methods need besides the problems, for one model."""

    model: GPT
    directions: dict[str, ProbeDirections]
    second_moment: torch.Tensor | None
    periods: tuple[int, ...]

    def run(self, candidate: EditMethod, problems: EditProblems, clean: torch.Tensor, random: bool = False, seed: int = 0) -> EditedPredictions:
        """``candidate`` on ``problems`` (``clean``: the model's log-probs on their tokens), or its random edit."""
        directions = self.directions.get(candidate.hook)
        if random and directions is not None:
            directions = _random_like(directions, seed)
        return edit_belief(
            self.model, problems.tokens, problems.period, problems.target, position=problems.position, method=candidate.method,
            span=candidate.span, hook=candidate.hook, donor=problems.random_donor if random else problems.donor,
            directions=directions, periods=self.periods, alpha=candidate.alpha, second_moment=self.second_moment, clean=clean,
        )  # fmt: skip

    def rank(self, candidate: EditMethod, problems: EditProblems, clean: torch.Tensor, seed: int) -> tuple[float, float]:
        """What edits are chosen by: the hold rate's gain over the random edit of the same budget, and ``kl_after``."""
        edited = self.run(candidate, problems, clean).log_probs
        random = self.run(candidate, problems, clean, random=True, seed=seed).log_probs
        return hold_rate(problems, edited) - hold_rate(problems, random), _kl(problems, edited)[1]


def _tools(run, model: GPT, hooks: list[str], options: EditOptions) -> _Tools:
    task, length, seed = run.task, run.config.length, options.seed
    on_model = dataclasses.replace(run, model=model)
    directions = probe_directions(on_model, hooks, seed, options.probe_sequences) if hooks else {}
    second_moment = key_second_moment(model, task.sample(512, length, seed + 4).tokens) if model.config.d_mlp else None
    return _Tools(model, directions, second_moment, tuple(task.periods))


def _random_like(directions: ProbeDirections, seed: int) -> ProbeDirections:
    """``directions`` with every vector replaced by a random one of the same norm."""
    rng = np.random.default_rng(seed)

    def same_norms(vectors: np.ndarray) -> np.ndarray:
        random = rng.normal(size=vectors.shape)
        return random * np.linalg.norm(vectors, axis=-1, keepdims=True) / np.linalg.norm(random, axis=-1, keepdims=True)

    return dataclasses.replace(directions, target=same_norms(directions.target), countdown=same_norms(directions.countdown))


def _best(scored: list[tuple[float, float, object]]):
    """Of ``(gain, kl_after, item)`` on the selection problems (:meth:`_Tools.rank`): the largest gain; within
    0.01 of it, the lowest ``kl_after``."""
    holds = [hold if np.isfinite(hold) else -1.0 for hold, _, _ in scored]
    near = [(kl, index) for index, (hold, (_, kl, _)) in enumerate(zip(holds, scored)) if hold >= max(holds) - 0.01]
    return scored[min(near, key=lambda pair: (pair[0] if np.isfinite(pair[0]) else np.inf, pair[1]))[1]][2]


def default_position(length: int, max_period: int) -> int:
    """Room for FOLLOWING more target positions of the longest period after ``p``, and at least half the context before."""
    return min(length - 2, max(length - 1 - FOLLOWING * max_period, length // 2))


def _applies(run) -> str | None:
    if not isinstance(run.task, NRecurrence):
        return f"edits assert an n-recurrence rule; task kind {run.task.kind!r} has none"
    if run.task.vocab_size < 2 or len({t for _, t in run.task.rules()}) < 2:
        return "needs at least two targets"
    if run.config.length < 4:
        return "needs sequences of at least 4 tokens"
    return None


@torch.no_grad()
def compute(run, options: EditOptions) -> EditResult:
    """Edit ``run.model`` toward every rule of its task with every method at every site, choose on one set of
    problems and report on another, beside the controls; see the module docstring."""
    task, length, seed = run.task, run.config.length, options.seed
    position = default_position(length, task.max_period) if options.position is None else options.position
    if position > length - 2:
        raise OptionError(f"edit option position: must be in [0, {length - 2}] for the run's sequences of length {length} (got {position})")
    per_rule = max(1, math.ceil(options.n_sequences / len(task.rules())))
    selection = edit_problems(task, per_rule, length, position, seed)
    held_out = edit_problems(task, per_rule, length, position, seed + 1)
    model = run.model
    was_training = model.training
    model.eval()
    try:
        hooks = edit_hooks(model)
        tools = _tools(run, model, hooks, options)
        clean_selection, clean = _log_probs(model, selection.tokens), _log_probs(model, held_out.tokens)
        candidates = method_candidates(model)
        for hook in progress_bar(hooks, "edit: steering strengths", total=len(hooks)):
            scanned = [EditMethod("steer", hook, "context", float(alpha)) for alpha in options.alphas if alpha > 0]
            candidates.append(_best([(*tools.rank(c, selection, clean_selection, seed), c) for c in scanned]))
        methods, log_probs, ranks = [], {}, {}
        for candidate in progress_bar(candidates, "edit: methods", total=len(candidates)):
            ranks[candidate.name] = tools.rank(candidate, selection, clean_selection, seed)
            edited = tools.run(candidate, held_out, clean)
            log_probs[candidate.name] = edited.log_probs
            result = score(held_out, edited)
            kl, kl_after = _kl(held_out, edited.log_probs)
            methods.append(
                MethodScore(
                    name=candidate.name, method=candidate.method, hook=candidate.hook, span=candidate.span, alpha=candidate.alpha,
                    budget=candidate.budget(model, position, task.max_period), hold_rate=result.hold,
                    hold_rate_random=hold_rate(held_out, tools.run(candidate, held_out, clean, random=True, seed=seed).log_probs),
                    gain_selection=ranks[candidate.name][0], success=_share(result.success),
                    success_at_p_automatic=candidate.automatic(model), moved=float(np.mean(result.moved[:, 0])), kl=kl, kl_after=kl_after,
                )  # fmt: skip
            )
        by_name = {c.name: c for c in candidates}
        best = {method: _best([(*ranks[s.name], s) for s in methods if s.method == method]) for method in dict.fromkeys(s.method for s in methods)}
        if "rank_one" in best:
            edits = rank_one_edits(model, held_out.tokens, held_out.donor, position, tools.second_moment)
            rows = np.unique(np.linspace(0, len(held_out.tokens) - 1, SPECIFICITY_EDITS).round().astype(int))  # across the rules
            reference = task.sample(SPECIFICITY_SEQUENCES, length, seed + 3).tokens  # unrelated sequences
            best["rank_one"] = dataclasses.replace(best["rank_one"], specificity_kl=float(specificity(model, edits, rows, reference).mean()))
            methods = [best["rank_one"] if s.name == best["rank_one"].name else s for s in methods]
        chosen = _best([(*ranks[s.name], s) for s in best.values() if not by_name[s.name].persistent])
        ceiling_log_probs = _log_probs(model, held_out.donor)
    finally:
        model.train(was_training)

    init = initial_model(run)
    init_tools = _tools(run, init, [chosen.hook] if chosen.method == "steer" else [], options)
    init_clean = _log_probs(init, held_out.tokens)
    init_edited = init_tools.run(by_name[chosen.name], held_out, init_clean)

    no_edit = NoEdit(hold_rate(held_out, clean), _share(hits(held_out, clean)), *_kl(held_out, clean))
    ceiling = NoEdit(hold_rate(held_out, ceiling_log_probs), _share(hits(held_out, ceiling_log_probs)), *_kl(held_out, ceiling_log_probs))
    counted = held_out.counted
    headline = {
        "hold_rate": chosen.hold_rate,
        "hold_rate_no_edit": no_edit.hold_rate,
        "hold_rate_ceiling": ceiling.hold_rate,
        "hold_rate_random": chosen.hold_rate_random,
        "hold_rate_random_init": hold_rate(held_out, init_edited.log_probs),
        "hold_positions": float(counted.sum()),
        "moved": chosen.moved,
        "kl_after": chosen.kl_after,
        "kl_after_no_edit": no_edit.kl_after,
        "kl_after_ceiling": ceiling.kl_after,
    }
    for method, s in best.items():
        headline[f"hold_rate/{method}"] = s.hold_rate
        headline[f"hold_rate_random/{method}"] = s.hold_rate_random
        headline[f"moved/{method}"] = s.moved
        headline[f"success_at_p{'_automatic' if s.success_at_p_automatic else ''}/{method}"] = s.success[0]
        if s.specificity_kl is not None:
            headline[f"specificity_kl/{method}"] = s.specificity_kl
    return EditResult(
        headline=headline,
        options=options,
        step=run.step,
        position=position,
        length=length,
        periods=tuple(task.periods),
        held_out_problems=len(held_out.tokens),
        hold_positions=int(counted.sum()),
        hold_positions_by_read=tuple(int(v) for v in counted.sum(0)),
        chosen=chosen.name,
        best_by_method={method: s.name for method, s in best.items()},
        methods=tuple(methods),
        no_edit=no_edit,
        ceiling=ceiling,
        hold_rate_random_init=headline["hold_rate_random_init"],
        hold_rate_no_edit_random_init=hold_rate(held_out, init_clean),
        by_rule=_by_rule(held_out, log_probs[chosen.name], task),
        probe_r2={hook: {"target": d.target_r2, "countdown": d.countdown_r2} for hook, d in tools.directions.items()},
    )


SPECIFICITY_EDITS, SPECIFICITY_SEQUENCES = 32, 64
"""Weight edits scored for specificity, and the unrelated sequences each is scored on."""


def _log_probs(model: GPT, tokens: np.ndarray) -> torch.Tensor:
    device = next(model.parameters()).device
    logits = model(torch.as_tensor(tokens, dtype=torch.long, device=device))
    return torch.log_softmax(logits.double(), -1).cpu()


def _by_rule(problems: EditProblems, log_probs, task: NRecurrence) -> tuple[tuple[float, ...], ...]:
    """``[period, vocab]`` hold rate per rule over its counted reads; NaN where none counts."""
    found = hits(problems, log_probs)
    counted = problems.counted
    table = np.full((len(task.periods), task.vocab_size), np.nan)
    for index, n in enumerate(task.periods):
        for t in range(task.vocab_size):
            rows = (problems.period == n) & (problems.target == t)
            mask = counted & rows[:, None]
            if mask.any():
                table[index, t] = found[mask].mean()
    return tuple(tuple(float(v) for v in row) for row in table)


EDIT = register(
    Analysis(
        name="edit",
        description="make the model believe a rule (n*, t*) by patching, steering or a rank-one weight edit: does it hold after the edit, beside no edit, the ceiling and a random edit",
        options=EditOptions,
        result=EditResult,
        compute=compute,
        applies=_applies,
        figures="nrecur.analysis.figures.edit:draw",
    )
)
