"""Editing a belief: can we make the model believe the rule ``(n*, t*)``, and for how long does it hold?

A *destination* sequence follows one rule ``(n, t)`` up to the edit position
``p``; from ``p + 1`` on it continues with the tokens of a *donor* that follows
``(n*, t*)`` (``t* ≠ t``) with its next target at ``p + 1`` — the phase the edit
asserts. The edit acts at one hook on positions ``0..p`` (``context``) or on
``p`` alone (``position``), by one of :data:`EDIT_METHODS`:

* ``patch``: the donor's activation replaces the destination's there (the
  donor's context, as the model represents it at that hook);
* ``steer``: ``α`` times probe directions is added there — the target probe's
  direction for ``t*`` plus the (period, countdown) probe's direction for
  ``(n*, (p - i) mod n*)`` at position ``i`` (:mod:`nrecur.analysis.steering`
  fits both); ``α`` is chosen on separate sequences;
* ``rank_one``: a rank-one change of the last MLP's weights, ROME-style, keyed
  at ``p`` (:mod:`nrecur.analysis.weight_edit`); it stays in the model, so it
  also acts after ``p`` and on other sequences (its *specificity* cost).

The desired predictive ``O*`` at every position is the exact observer's for
the donor itself (which has followed ``(n*, t*)`` all along); *moved* is SPEC
§5's ``1 - KL(O* ‖ M_edit) / KL(O* ‖ M_clean)`` with ``M_clean`` the model on
the same spliced tokens without the edit. The edit *succeeds* on a sequence
when, at the next target position of ``(n*, t*)`` (``p + 1``, predicted at
``p``), the model's most likely token is ``t*``. Whether it *holds* as the
sequence continues is read two ways after ``p``, at positions an activation
edit reaches only through attention: success at the following target
positions ``p + 1 + k·n*``, and the mean KL(O* ‖ model) over all positions
after ``p`` — an edit that merely makes ``t*`` likely everywhere succeeds at
the targets and still moves the predictions away from ``O*``. Both are given
beside the clean model's, which sees ``t*`` recur in the continuation.

How to read it: success, moved, hold and KL for every method and site, chosen
on one set of sequences and reported on another (held out); the chosen edit's
success for every ``(n*, t*)``. Any ``context`` patch gives the model's
prediction for the donor at ``p`` (causality), so only its hold tells sites
apart; patching the final residual stream overrides the prediction at ``p``
outright and holds nothing; patching the token embeddings
(``blocks.0.hook_resid_pre``) rewrites the context itself and is the ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from nrecur.analysis.base import OKABE_ITO, progress_bar, pyplot, save_figure
from nrecur.analysis.legacy import register_analysis
from nrecur.analysis.edit_methods import EDIT_METHODS, EditedPredictions, Span, edit_belief, edit_hooks, steering_vectors
from nrecur.analysis.patching import deterministic_task
from nrecur.analysis.steering import ALPHAS, kl_per_row, probe_directions
from nrecur.analysis.weight_edit import key_second_moment, rank_one_edits, specificity
from nrecur.tasks import NRecurrence

__all__ = [
    "EDIT_METHODS", "EditMethod", "EditProblems", "EditResult", "EditedPredictions", "edit", "edit_belief", "edit_hooks",
    "edit_problems", "score", "steering_vectors",
]  # fmt: skip (edit_belief and the methods live in edit_methods; re-exported here)

FOLLOWING = 3
"""Target positions after the first at which the edit's hold is measured."""


# ---------------------------------------------------------------------------- the sequences


@dataclass(frozen=True)
class EditProblems:
    """Destinations spliced with donors at ``position``; everything ``[batch, ...]``."""

    tokens: np.ndarray
    """``[batch, pos]`` the destination up to ``position``, the donor after it (what the model reads)."""
    donor: np.ndarray
    """``[batch, pos]`` a sequence that follows ``(period, target)`` throughout, next target at ``position + 1``."""
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

    @property
    def reads(self) -> np.ndarray:
        """``[batch, 1 + FOLLOWING]`` positions predicting the next target positions of ``(n*, t*)``: ``p``,
        ``p + n*``, …; -1 past the end of the sequence."""
        reads = self.position + self.period[:, None] * np.arange(1 + FOLLOWING)[None, :]
        return np.where(reads < self.tokens.shape[1], reads, -1)


def edit_problems(task: NRecurrence, per_rule: int, length: int, position: int, seed: int = 0) -> EditProblems:
    """``per_rule`` problems for every rule ``(n*, t*)`` of ``task``, sequences from ``task`` made
    deterministic; donors drawn by rejection until each rule has ``per_rule`` with its next target at
    ``position + 1`` (so any token distribution of the task's variant is kept)."""
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

    # Destinations: the next unused sequence whose target differs from t*.
    pool = rules.sample(4 * len(donor), length, seed * 1000 + 999)
    used = np.zeros(len(pool), dtype=bool)
    chosen = np.empty(len(donor), dtype=np.int64)
    for i, t in enumerate(target):
        candidates = np.flatnonzero(~used & (pool.target[:, 0] != t))
        if not len(candidates):
            raise ValueError("could not find destinations with a target other than t*; is there more than one target?")
        chosen[i] = candidates[0]
        used[chosen[i]] = True
    destination = pool.select(chosen)
    tokens = np.concatenate([destination.tokens[:, : position + 1], donor[:, position + 1 :]], axis=1)
    desired = np.asarray(task.posterior(donor).predictive, dtype=np.float64)
    return EditProblems(
        tokens=tokens,
        donor=donor,
        position=position,
        period=period,
        target=target,
        destination_period=destination.period[:, 0],
        destination_target=destination.target[:, 0],
        desired=desired,
    )


# ---------------------------------------------------------------------------- the candidates


@dataclass(frozen=True)
class EditMethod:
    """How and where to edit: ``patch`` from the donor, or ``steer`` with strength ``alpha``, at ``hook``."""

    method: str
    """A name in :data:`EDIT_METHODS`: ``patch``, ``steer`` or ``rank_one``."""
    hook: str
    span: Span = "context"
    alpha: float = 0.0

    @property
    def name(self) -> str:
        """``method[span]@hook``, e.g. ``patch[context]@blocks.1.hook_resid_pre`` (the name in the headline)."""
        return f"{self.method}[{self.span}]@{self.hook}"


SPECIFICITY_EDITS, SPECIFICITY_SEQUENCES = 32, 64
"""Weight edits scored for specificity, and the unrelated sequences each is scored on."""
CEILING = EditMethod("patch", "blocks.0.hook_resid_pre", "context")
"""Patching the token and position embeddings of the whole context: the model reads the donor's context itself."""


# ---------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class EditScore:
    """Success and moved of one edit on a set of problems."""

    success: np.ndarray
    """``[batch, 1 + FOLLOWING]`` t* most likely at the k-th next target position (NaN past the end)."""
    success_clean: np.ndarray
    """The same without the edit."""
    moved: np.ndarray
    """``[batch, pos - position]`` moved toward ``O*`` at positions ``p, p + 1, …``."""


def score(problems: EditProblems, edited: EditedPredictions) -> EditScore:
    reads = problems.reads
    rows = np.arange(len(reads))[:, None]
    valid = reads >= 0

    def hits(log_probs: Tensor) -> np.ndarray:
        best = log_probs.argmax(-1).numpy()[rows, np.maximum(reads, 0)]
        return np.where(valid, best == problems.target[:, None], np.nan)

    p = problems.position
    desired = torch.as_tensor(problems.desired[:, p:])
    before = kl_per_row(desired, edited.clean[:, p:])
    after = kl_per_row(desired, edited.log_probs[:, p:])
    moved = (1.0 - after / before).numpy()
    return EditScore(success=hits(edited.log_probs), success_clean=hits(edited.clean), moved=moved)


# ---------------------------------------------------------------------------- the analysis


@dataclass(frozen=True)
class EditResult:
    """Every edit method and site, chosen on one set of problems and scored on held-out ones."""

    name: str
    headline: dict[str, float]
    methods: list[dict]
    """Per candidate (held-out): method, hook, alpha, success at each next target position, the clean model's
    success there, mean moved at ``p``, mean KL(O* ‖ M) at positions ``p..`` with and without the edit."""
    chosen: dict
    """The edit of the headline: the best success on the selection problems (ties within 0.01 go to the one
    with the lowest mean KL to the desired observer after ``p``), never the ceiling that rewrites the context."""
    by_rule: np.ndarray
    """``[period, vocab]`` the chosen edit's held-out success at ``p`` per rule ``(n*, t*)``; NaN off the prior."""
    options: dict

    def to_json(self) -> dict:
        return {"options": self.options, "chosen": self.chosen, "methods": self.methods, "by_rule": self.by_rule}

    def plot(self, folder: Path) -> list[Path]:
        return plot_methods(self, folder, f"{self.name}_methods") + plot_by_rule(self, folder, f"{self.name}_by_rule")


def _summary(candidate: EditMethod, problems: EditProblems, result: EditScore, edited: EditedPredictions) -> dict:
    p = problems.position
    desired = torch.as_tensor(problems.desired[:, p:])
    return {
        "name": candidate.name,
        "method": candidate.method,
        "hook": candidate.hook,
        "span": candidate.span,
        "alpha": candidate.alpha,
        "ceiling": candidate == CEILING,
        "success": _share(result.success),
        "success_clean": _share(result.success_clean),
        "moved": float(result.moved[:, 0].mean()),
        "kl": kl_per_row(desired, edited.log_probs[:, p:]).mean(0).numpy(),
        "kl_clean": kl_per_row(desired, edited.clean[:, p:]).mean(0).numpy(),
        "kl_after": float(kl_per_row(desired[:, 1:], edited.log_probs[:, p + 1 :]).mean()),
        "kl_after_clean": float(kl_per_row(desired[:, 1:], edited.clean[:, p + 1 :]).mean()),
    }


def _share(hits: np.ndarray) -> np.ndarray:
    """``[batch, read]`` 0/1/NaN → ``[read]`` share of hits among the sequences long enough (NaN if none is)."""
    counted = np.isfinite(hits).sum(0)
    return np.where(counted > 0, np.nansum(hits, 0) / np.maximum(counted, 1), np.nan)


def _hold(success: np.ndarray) -> float:
    """Mean success at the target positions after the first (those inside the sequence); NaN if none is."""
    following = success[1:][np.isfinite(success[1:])]
    return float(following.mean()) if len(following) else float("nan")


def _key(summary: dict) -> tuple[float, float]:
    """Rank edits by success at p, then by how close the predictions after p come to the desired observer."""
    return float(summary["success"][0]), -summary["kl_after"] if np.isfinite(summary["kl_after"]) else -np.inf


def _applies(run) -> str | None:
    if not isinstance(run.task, NRecurrence):
        return f"edits assert an n-recurrence rule; task kind {run.task.kind!r} has none"
    if run.task.vocab_size < 2 or len({t for _, t in run.task.rules()}) < 2:
        return "needs at least two targets"
    if run.config.length < 4:
        return "needs sequences of at least 4 tokens"
    return None


@register_analysis("edit", applies=_applies, description="make the model believe a rule (n*, t*): patching, steering and rank-one weight edits, success, moved, how long it holds")
def edit(run, per_rule: int = 16, seed: int = 0, position: int | None = None, alphas=ALPHAS, show_progress: bool = False) -> EditResult:
    """Edit ``run.model`` toward every rule of its task with every method at every :func:`edit_hooks` point;
    ``per_rule`` problems per rule on each of the selection and held-out sets; see the module docstring."""
    why = _applies(run)
    if why is not None:
        raise ValueError(f"edit does not apply: {why}")
    model, task, length = run.model, run.task, run.config.length
    if position is None:  # room for the following target positions, and at least half the context before
        position = min(length - 2, max(length - 1 - FOLLOWING * task.max_period, length // 2))
    selection = edit_problems(task, per_rule, length, position, seed)
    held_out = edit_problems(task, per_rule, length, position, seed + 1)
    hooks = edit_hooks(model)
    directions = probe_directions(run, hooks, seed)
    reference = task.sample(SPECIFICITY_SEQUENCES, length, seed + 3).tokens  # unrelated sequences
    second_moment = key_second_moment(model, task.sample(512, length, seed + 4).tokens) if model.config.d_mlp else None
    was_training = model.training
    model.eval()

    def run_edit(candidate: EditMethod, problems: EditProblems):
        edited = edit_belief(
            model, problems.tokens, problems.period, problems.target, position=problems.position, method=candidate.method,
            span=candidate.span, hook=candidate.hook, donor=problems.donor, directions=directions.get(candidate.hook), periods=task.periods, alpha=candidate.alpha,
            second_moment=second_moment,
        )  # fmt: skip
        return edited, score(problems, edited)

    try:
        candidates = [EditMethod("patch", hook, span) for span in ("context", "position") for hook in hooks]
        for hook in progress_bar(hooks, "edit: steering strengths", show_progress):
            scans = [EditMethod("steer", hook, "context", float(alpha)) for alpha in alphas if alpha > 0]
            scored = []
            for candidate in scans:
                edited, result = run_edit(candidate, selection)
                scored.append((_key(_summary(candidate, selection, result, edited)), candidate))
            candidates.append(max(scored, key=lambda pair: pair[0])[1])
        if second_moment is not None:
            candidates.append(EditMethod("rank_one", f"blocks.{model.config.n_layers - 1}.hook_mlp_out", "position"))
        chosen_on_selection = {}
        for candidate in candidates:
            edited, result = run_edit(candidate, selection)
            chosen_on_selection[candidate.name] = _key(_summary(candidate, selection, result, edited))
        methods = []
        per_rule_hits = {}
        for candidate in candidates:
            edited, result = run_edit(candidate, held_out)
            methods.append(_summary(candidate, held_out, result, edited))
            per_rule_hits[candidate.name] = result.success[:, 0]
            if candidate.method == "rank_one":
                edits = rank_one_edits(model, held_out.tokens, held_out.donor, position, second_moment)
                rows = np.unique(np.linspace(0, len(held_out.tokens) - 1, SPECIFICITY_EDITS).round().astype(int))  # across the rules
                methods[-1]["specificity_kl"] = float(specificity(model, edits, rows, reference).mean())
    finally:
        model.train(was_training)

    eligible = [c for c in candidates if c != CEILING]
    best_first = max(chosen_on_selection[c.name][0] for c in eligible)
    near = [c for c in eligible if chosen_on_selection[c.name][0] >= best_first - 0.01]
    chosen_method = max(near, key=lambda c: chosen_on_selection[c.name][1])
    chosen = next(m for m in methods if m["name"] == chosen_method.name)
    by_rule = np.full((len(task.periods), task.vocab_size), np.nan)
    hits = per_rule_hits[chosen_method.name]
    for index, n in enumerate(task.periods):
        for t in range(task.vocab_size):
            mask = (held_out.period == n) & (held_out.target == t)
            if mask.any():
                by_rule[index, t] = hits[mask].mean()
    period_differs = held_out.period != held_out.destination_period
    headline = {
        "success_rate": float(chosen["success"][0]),
        "moved": chosen["moved"],
        "success_rate_clean": float(chosen["success_clean"][0]),
        "success_next": _hold(chosen["success"]),
        "success_next_clean": _hold(chosen["success_clean"]),
        "kl_after": chosen["kl_after"],
        "kl_after_clean": chosen["kl_after_clean"],
        "success_rate/period_differs": float(hits[period_differs].mean()) if period_differs.any() else float("nan"),
        "success_rate/same_period": float(hits[~period_differs].mean()) if (~period_differs).any() else float("nan"),
        "success_rate_worst_rule": float(np.nanmin(by_rule)),
    }
    for summary in methods:
        headline[f"success_rate/{summary['name']}"] = float(summary["success"][0])
        headline[f"success_next/{summary['name']}"] = _hold(summary["success"])
        headline[f"moved/{summary['name']}"] = summary["moved"]
        headline[f"kl_after/{summary['name']}"] = summary["kl_after"]
        if "specificity_kl" in summary:
            headline[f"specificity_kl/{summary['name']}"] = summary["specificity_kl"]
    options = {
        "per_rule": per_rule,
        "seed": seed,
        "position": position,
        "length": length,
        "following": FOLLOWING,
        "held_out_sequences": len(held_out.tokens),
        "probe_r2": {hook: {"target": d.target_r2, "countdown": d.countdown_r2} for hook, d in directions.items()},
        "periods": list(task.periods),
    }
    return EditResult(name="edit", headline=headline, methods=methods, chosen=chosen, by_rule=by_rule, options=options)


# ---------------------------------------------------------------------------- figures


def _label(summary: dict) -> str:
    hook = summary["hook"].replace("blocks.", "L").replace(".hook_", " ")
    if summary["method"] == "rank_one":
        return f"rank-one weight edit, {hook.replace(' mlp_out', ' MLP')} (cost elsewhere: KL {summary['specificity_kl']:.3f})"
    text = f"{summary['method']} {summary['span']} {hook}" + (f" α={summary['alpha']:g}" if summary["method"] == "steer" else "")
    return text + (" (ceiling: the donor's context)" if summary["ceiling"] else "")


STYLES = {("patch", "context"): "-", ("patch", "position"): ":", ("steer", "context"): "-.", ("rank_one", "position"): (0, (4, 1, 1, 1, 1, 1))}
"""Line style per (method, span); the colour is the hook."""


def plot_methods(result: EditResult, folder: Path, stem: str) -> list[Path]:
    """Left: success at the next target positions of (n*, t*) per edit (grey dashed: no edit). Right: mean
    KL(O* ‖ model) at the positions from the edit on. Colour: the hook; line style: method and span."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), layout="constrained")
    p = result.options["position"]
    hooks = list(dict.fromkeys(summary["hook"] for summary in result.methods))
    for summary in result.methods:
        style = {
            "color": OKABE_ITO[hooks.index(summary["hook"]) % len(OKABE_ITO)],
            "ls": STYLES.get((summary["method"], summary["span"]), "--"),
            "lw": 3.0 if summary["name"] == result.chosen["name"] else 1.4,
        }
        axes[0].plot(np.arange(len(summary["success"])), summary["success"], marker="o", label=_label(summary), **style)
        axes[1].plot(np.arange(p, p + len(summary["kl"])), summary["kl"], **style)
    first = result.methods[0]
    axes[0].plot(np.arange(len(first["success_clean"])), first["success_clean"], ls="--", color="grey", marker="x", label="no edit")
    axes[1].plot(np.arange(p, p + len(first["kl_clean"])), first["kl_clean"], ls="--", color="grey")
    axes[0].set_xticks(range(len(first["success"])), ["p (edited)"] + [f"p + {k}·n*" for k in range(1, len(first["success"]))])
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("share with t* most likely")
    axes[0].set_xlabel("where the next target of (n*, t*) is predicted")
    axes[0].set_title(f"edit success, held out (thick: the chosen edit, {result.headline['success_rate']:.0%} at p)", fontsize=9)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("position (the edit acts on 0..p, or p alone)")
    axes[1].set_ylabel("mean KL(O* ‖ model), nats")
    axes[1].set_title("distance to the observer of a sequence that followed (n*, t*) all along", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=8)
    fig.suptitle(f"editing the belief to (n*, t*): {result.options['held_out_sequences']} held-out sequences, edit position p = {p}", fontsize=10)
    return save_figure(fig, folder, stem)


def plot_by_rule(result: EditResult, folder: Path, stem: str) -> list[Path]:
    """The chosen edit's held-out success at ``p`` for every rule ``(n*, t*)``."""
    plt = pyplot()
    periods = result.options["periods"]
    fig, ax = plt.subplots(figsize=(0.6 * result.by_rule.shape[1] + 2.5, 0.5 * len(periods) + 1.6), layout="constrained")
    image = ax.imshow(result.by_rule, cmap="cividis", vmin=0, vmax=1, aspect="auto")
    for (row, column), value in np.ndenumerate(result.by_rule):
        if np.isfinite(value):
            ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color="black" if value > 0.5 else "white")
    ax.set_yticks(range(len(periods)), [str(n) for n in periods])
    ax.set_xticks(range(result.by_rule.shape[1]))
    ax.set_ylabel("n*")
    ax.set_xlabel("t*")
    ax.set_title(f"success of {_label(result.chosen)} per rule", fontsize=9)
    fig.colorbar(image, ax=ax, label="share with t* most likely at p")
    return save_figure(fig, folder, stem)
