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
* ``subspace``: the donor's coordinates along a learned rank-``k`` subspace
  replace the destination's there (:mod:`nrecur.analysis.edit_subspace`: the
  subspace found by distributed alignment search against ``O*`` on problems of
  its own), beside the donor's coordinates along a random subspace of the same
  rank; its sites include the first attention's values, a linear map of the
  embeddings, where a subspace holding the token identities rewrites the
  context as that attention reads it: a function of each position's token
  alone, like the ceiling. So ``hold_rate/subspace`` is the best subspace edit
  in the residual stream (after an attention has read the context: a belief
  edit), and the best at the first attention's values is reported beside it as
  ``hold_rate/subspace_tokens`` and never chosen as the headline's edit;
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

The problems are drawn by :mod:`nrecur.analysis.edit_problems`, the edits
carried out by :mod:`nrecur.analysis.edit_methods`, listed, run and ranked by
:mod:`nrecur.analysis.edit_candidates` and scored by
:mod:`nrecur.analysis.edit_scores`; this module chooses among them and gathers
the result.
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
from nrecur.analysis.edit_candidates import CEILING, Budget, EditMethod, best_of, edit_tools, method_candidates
from nrecur.analysis.edit_methods import EDIT_METHODS, EditedPredictions, edit_belief, edit_hooks, steering_vectors
from nrecur.analysis.edit_problems import FOLLOWING, EditProblems, default_position, edit_problems
from nrecur.analysis.edit_scores import EditScore, hits, hold_by_rule, hold_rate, kl_from_desired, predict_log_probs, score, share_by_read
from nrecur.analysis.edit_subspace import SUBSPACE_RANKS, fit_edit_subspace, subspace_hooks
from nrecur.analysis.steering import ALPHAS
from nrecur.analysis.weight_edit import rank_one_edits, specificity
from nrecur.tasks import NRecurrence

__all__ = [
    "CEILING", "EDIT_METHODS", "FOLLOWING", "Budget", "EditMethod", "EditOptions", "EditProblems", "EditResult", "EditScore", "EditedPredictions",
    "MethodScore", "NoEdit", "compute", "default_position", "edit_belief", "edit_hooks", "edit_problems", "hits", "hold_rate",
    "method_candidates", "reads_tokens", "score", "steering_vectors",
]  # fmt: skip (the methods live in edit_methods, the problems in edit_problems, the scores in edit_scores, the candidates in edit_candidates; re-exported here)



class EditOptions(Options):
    n_sequences: int = pydantic.Field(512, ge=8)
    """Edit problems in each of two sets (edits are chosen on one, reported on the other), ⌈n_sequences / rules⌉ for each rule (n*, t*)."""
    position: int | None = pydantic.Field(None, ge=0)
    """p, the last position an edit acts on (default: room for three more target positions of the longest period after it, and at least half the context before it)."""
    alphas: tuple[float, ...] = tuple(alpha for alpha in ALPHAS if alpha > 0)
    """Steering strengths scanned on the selection problems (how much each probe's reading is raised)."""
    probe_sequences: int = pydantic.Field(1024, ge=8)
    """Fresh sequences the steering probes are fitted on."""
    subspace_steps: int = pydantic.Field(150, ge=0)
    """Adam steps fitting each subspace edit's basis, on problems of their own (0: no subspace edits)."""
    subspace_ranks: tuple[int, ...] = (4, 16)
    """Ranks of the subspace edits tried at each site (at most ``max(SUBSPACE_RANKS)``, the budget; one nested basis per site serves them all)."""

    @pydantic.field_validator("subspace_ranks")
    @classmethod
    def _subspace_ranks(cls, ranks: tuple[int, ...]) -> tuple[int, ...]:
        if not ranks or list(ranks) != sorted(set(ranks)) or ranks[0] < 1 or ranks[-1] > max(SUBSPACE_RANKS):
            raise ValueError(f"give distinct ranks in increasing order, each in 1..{max(SUBSPACE_RANKS)}")
        return ranks

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
    rank: int = 0
    """A subspace edit's rank (0 for the other methods; every budget's rank is in ``budget``)."""


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
    only (on the selection problems); a weight edit acts after ``p`` too, and an edit at the first attention's
    values rewrites what it reads of the tokens, so their holds are beside it, never it."""
    best_by_method: dict[str, str]
    """method → the name of its best site (``subspace``: the best subspace edit in the residual stream;
    ``subspace_tokens``: the best at the first attention's values)."""
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
        tools = edit_tools(run, model, hooks, options.seed, options.probe_sequences)
        fitting = edit_problems(task, per_rule, length, position, seed + 2) if options.subspace_steps else None
        if fitting is not None:
            tools = dataclasses.replace(tools, bases=_subspace_bases(model, subspace_hooks(model), fitting, options))
        clean_selection, clean = predict_log_probs(model, selection.tokens), predict_log_probs(model, held_out.tokens)
        candidates = method_candidates(model, options.subspace_ranks if fitting is not None else ())
        for hook in progress_bar(hooks, "edit: steering strengths", total=len(hooks)):
            scanned = [EditMethod("steer", hook, "context", float(alpha)) for alpha in options.alphas if alpha > 0]
            candidates.append(best_of([(*tools.rank(c, selection, clean_selection, seed), c) for c in scanned]))
        methods, log_probs, ranks = [], {}, {}
        for candidate in progress_bar(candidates, "edit: methods", total=len(candidates)):
            ranks[candidate.name] = tools.rank(candidate, selection, clean_selection, seed)
            edited = tools.run(candidate, held_out, clean)
            log_probs[candidate.name] = edited.log_probs
            result = score(held_out, edited)
            kl, kl_after = kl_from_desired(held_out, edited.log_probs)
            methods.append(
                MethodScore(
                    name=candidate.name, method=candidate.method, hook=candidate.hook, span=candidate.span, alpha=candidate.alpha, rank=candidate.rank,
                    budget=candidate.budget(model, position, task.max_period), hold_rate=result.hold,
                    hold_rate_random=hold_rate(held_out, tools.run(candidate, held_out, clean, random=True, seed=seed).log_probs),
                    gain_selection=ranks[candidate.name][0], success=share_by_read(result.success),
                    success_at_p_automatic=candidate.automatic(model), moved=float(np.mean(result.moved[:, 0])), kl=kl, kl_after=kl_after,
                )  # fmt: skip
            )
        by_name = {c.name: c for c in candidates}
        best = {method: best_of([(*ranks[s.name], s) for s in methods if s.method == method]) for method in dict.fromkeys(s.method for s in methods)}
        best.pop("subspace", None)
        for key, sites in (("subspace", [s for s in methods if s.method == "subspace" and not reads_tokens(s.hook)]),
                           (TOKEN_SUBSPACE, [s for s in methods if s.method == "subspace" and reads_tokens(s.hook)])):
            if sites:
                best[key] = best_of([(*ranks[s.name], s) for s in sites])
        if "rank_one" in best:
            edits = rank_one_edits(model, held_out.tokens, held_out.donor, position, tools.second_moment)
            rows = np.unique(np.linspace(0, len(held_out.tokens) - 1, SPECIFICITY_EDITS).round().astype(int))  # across the rules
            reference = task.sample(SPECIFICITY_SEQUENCES, length, seed + 3).tokens  # unrelated sequences
            best["rank_one"] = dataclasses.replace(best["rank_one"], specificity_kl=float(specificity(model, edits, rows, reference).mean()))
            methods = [best["rank_one"] if s.name == best["rank_one"].name else s for s in methods]
        chosen = best_of([(*ranks[s.name], s) for s in best.values() if not by_name[s.name].persistent and not reads_tokens(s.hook)])
        ceiling_log_probs = predict_log_probs(model, held_out.donor)
    finally:
        model.train(was_training)

    init = initial_model(run)
    init_tools = edit_tools(run, init, [chosen.hook] if chosen.method == "steer" else [], options.seed, options.probe_sequences)
    if chosen.method == "subspace":
        init_tools = dataclasses.replace(init_tools, bases=_subspace_bases(init, [chosen.hook], fitting, options))
    init_clean = predict_log_probs(init, held_out.tokens)
    init_edited = init_tools.run(by_name[chosen.name], held_out, init_clean)

    no_edit = NoEdit(hold_rate(held_out, clean), share_by_read(hits(held_out, clean)), *kl_from_desired(held_out, clean))
    ceiling = NoEdit(hold_rate(held_out, ceiling_log_probs), share_by_read(hits(held_out, ceiling_log_probs)), *kl_from_desired(held_out, ceiling_log_probs))
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
        if s.method == "subspace":
            headline[f"rank/{method}"] = float(s.rank)
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
        by_rule=hold_by_rule(held_out, log_probs[chosen.name], task),
        probe_r2={hook: {"target": d.target_r2, "countdown": d.countdown_r2} for hook, d in tools.directions.items()},
    )


TOKEN_SUBSPACE = "subspace_tokens"
"""The key of the best subspace edit at the first attention's values (``hold_rate/subspace_tokens``), beside the best
in the residual stream (``hold_rate/subspace``); never the headline's edit."""


def reads_tokens(hook: str) -> bool:
    """Whether an activation at ``hook`` is a function of its position's token alone (before the first attention
    has read the context): editing it there rewrites the tokens as the model reads them, like the ceiling."""
    return hook in ("hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre") or hook.startswith(("blocks.0.ln1", "blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v"))


def _subspace_bases(model, hooks: list[str], problems: EditProblems, options: EditOptions) -> dict[str, torch.Tensor]:
    """hook → the nested basis of the subspace edits there, fitted on ``problems`` (with gradients: the caller's
    ``no_grad`` does not reach inside)."""
    with torch.enable_grad():
        return {
            hook: fit_edit_subspace(
                model, hook, problems, ranks=options.subspace_ranks, steps=options.subspace_steps, batch_size=32, lr=0.01, seed=options.seed + index
            )
            for index, hook in enumerate(progress_bar(hooks, "edit: subspaces", total=len(hooks)))
        }  # fmt: skip


SPECIFICITY_EDITS, SPECIFICITY_SEQUENCES = 32, 64
"""Weight edits scored for specificity, and the unrelated sequences each is scored on."""


EDIT = register(
    Analysis(
        name="edit",
        description="make the model believe a rule (n*, t*) by patching, steering, a learned subspace or a rank-one weight edit: does it hold after the edit, beside no edit, the ceiling and a random edit",
        options=EditOptions,
        result=EditResult,
        compute=compute,
        applies=_applies,
        figures="nrecur.analysis.figures.edit:draw",
    )
)
