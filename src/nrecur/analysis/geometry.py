"""Belief geometry: is the observer's belief simplex a linear image of the residual stream?

For a hidden Markov model the exact observer's belief over the hidden states
lives in a simplex; for Mess3 the beliefs form a fractal there. Following the
work on belief-state geometry in transformers, we fit a linear map (ridge, held
out by sequence) from the residual stream at each hook point, and from all of
them concatenated, to the belief, and draw the mapped activations in the simplex
beside the true beliefs, each point coloured by its true belief. For
n-recurrence the belief is the posterior over three periods (renormalized: a
2-simplex).

How to read it: held-out R² and the mean Euclidean distance in the simplex
between mapped and true beliefs say how much of the geometry is linearly there
(the fractal should reappear point for point when R² ≈ 1). The number of
principal components that explain 90/95/99 % of the residual stream's variance
says how low-dimensional the representation is. Every figure stands beside the
same fit on the run's own initialization (``r2_random_init``,
``mean_distance_random_init``): a random transformer's residual stream already
encodes the recent tokens, and on Mess3 that alone gives a high R², so only the
gain over the initialization says what training built. Over training
(``--checkpoints all``) a strip of small panels shows the decoded simplex at
every saved checkpoint, from the freshly initialized model on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydantic

from nrecur.analysis.contract import Analysis, Options, Result, initial_model, register
from nrecur.analysis.probes import CONCAT, RidgeProbe, best_hooks, probe_inputs, r2_score, split_sequences
from nrecur.model import GPT
from nrecur.tasks import HMMTask, NRecurrence, Task

VARIANCE_LEVELS = (0.90, 0.95, 0.99)


def beliefs_of(task: Task, post, periods: tuple[int, ...] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """``[batch, pos, vertex]`` beliefs on a simplex and the vertex names.

    For n-recurrence the vertices are three ``periods`` of the task (default: its first three), the
    posterior over them renormalized.
    """
    if isinstance(task, HMMTask):
        return np.asarray(post.belief), task.process.state_names
    if isinstance(task, NRecurrence):
        periods = tuple(task.periods[:3]) if periods is None else tuple(periods)
        if len(periods) != 3 or len(set(periods)) != 3 or not set(periods) <= set(task.periods):
            raise ValueError(f"periods must be three different periods of the task ({', '.join(map(str, task.periods))}), got {periods}")
        index = [task.periods.index(n) for n in periods]
        chosen = np.asarray(post.period)[..., index]  # [batch, pos, period]
        total = chosen.sum(-1, keepdims=True)
        return np.divide(chosen, total, out=np.full_like(chosen, 1 / 3), where=total > 0), tuple(f"n={n}" for n in periods)
    raise ValueError(f"task kind {task.kind!r} has no belief simplex to draw (HMM kinds and n-recurrence do)")


def components_for(activations: np.ndarray, levels=VARIANCE_LEVELS) -> list[int]:
    """Number of principal components explaining each share of the variance of ``activations [n, d_model]``."""
    centered = activations - activations.mean(0)
    variance = np.linalg.svd(centered.astype(np.float64), compute_uv=False) ** 2
    cumulative = np.cumsum(variance) / variance.sum()
    return [int(np.searchsorted(cumulative, level) + 1) for level in levels]


class GeometryOptions(Options):
    n_sequences: int = pydantic.Field(2048, ge=8)
    """Fresh sequences to fit and score the maps on."""
    held_out: float = pydantic.Field(0.2, gt=0, lt=1)
    """Share of the sequences held out for scoring (split by sequence)."""
    points: int = pydantic.Field(3000, ge=1)
    """Held-out points drawn in the figure."""
    periods: tuple[int, int, int] | None = None
    """For n-recurrence, the three periods whose posterior is the simplex (default: the task's first three)."""


@dataclass(frozen=True)
class Fit:
    """Linear maps from every hook point to the belief simplex, on one model."""

    r2: dict[str, float]
    """hook → held-out R² of the linear map to the belief."""
    mean_distance: dict[str, float]
    """hook → mean Euclidean distance between mapped and true belief (held out)."""
    components: dict[str, list[int]]
    """hook → principal components for 90/95/99 % of the residual stream's variance."""
    best_hook: str
    """The hook point (not ``concat``) whose map fits best on validation sequences (held-out ones play no part)."""
    points: list[list[float]]
    """The shown held-out points as the best hook's map gives them ``[n, vertex]``."""


@dataclass(frozen=True)
class GeometryResult(Result):
    """Linear maps from the residual stream to the belief simplex, on the trained model and on its initialization."""

    headline: dict[str, float]
    options: GeometryOptions
    step: int
    vertices: tuple[str, ...]
    hooks: tuple[str, ...]
    trained: Fit
    random_init: Fit
    """The same maps on the run's own initialization (the control)."""
    points_true: list[list[float]]
    """A held-out sample of true beliefs ``[n, vertex]`` for the figure."""
    points_mapped: dict[str, list[list[float]]]
    """hook → the same points as the trained model's linear map gives them."""


def _applies(run) -> str | None:
    if isinstance(run.task, NRecurrence) and len(run.task.periods) < 3:  # periods are distinct (the task checks)
        return f"the task has {len(run.task.periods)} periods; the belief simplex needs three as its vertices"
    if isinstance(run.task, (HMMTask, NRecurrence)):
        return None
    return f"task kind {run.task.kind!r} has no belief simplex to draw (HMM kinds and n-recurrence do)"


def map_to_simplex(acts: dict[str, np.ndarray], beliefs: np.ndarray, train_seq, test_seq, shown):
    """Ridge maps from each hook's activations to ``beliefs``, fitted on ``train_seq`` and scored on
    ``test_seq``: (hook → R², hook → mean distance, hook → mapped ``shown`` held-out points)."""
    y_train = beliefs[train_seq].reshape(-1, beliefs.shape[-1])
    y_test = beliefs[test_seq].reshape(-1, beliefs.shape[-1])
    r2, distance, mapped = {}, {}, {}
    for hook, x in acts.items():
        probe = RidgeProbe.fit(x[train_seq].reshape(-1, x.shape[-1]), y_train)
        predicted = probe.predict(x[test_seq].reshape(-1, x.shape[-1]))
        r2[hook] = r2_score(y_test, predicted)
        distance[hook] = float(np.linalg.norm(predicted - y_test, axis=-1).mean())
        mapped[hook] = predicted[shown].tolist()
    return r2, distance, mapped


def fit_model(model: GPT, tokens: np.ndarray, beliefs: np.ndarray, train_seq, test_seq, shown, seed: int) -> tuple[Fit, dict]:
    """The maps of every hook point of ``model`` on ``tokens [batch, pos]`` to ``beliefs [batch, pos, vertex]``,
    and hook → its mapped shown points."""
    acts = probe_inputs(model, tokens)
    r2, distance, mapped = map_to_simplex(acts, beliefs, train_seq, test_seq, shown)
    components = {hook: components_for(x.reshape(-1, x.shape[-1])) for hook, x in acts.items()}
    best = best_hooks(acts, {"belief": beliefs}, train_seq, seed)["belief"]
    return Fit(r2=r2, mean_distance=distance, components=components, best_hook=best, points=mapped[best]), mapped


def compute(run, options: GeometryOptions) -> GeometryResult:
    """Fit the residual stream at every hook point (and concatenated) to the observer's belief, on the trained
    model and on its initialization; see the module docstring."""
    seed = options.seed
    sample = run.task.sample(options.n_sequences, run.config.length, seed)
    beliefs, vertices = beliefs_of(run.task, run.task.posterior(sample.tokens), options.periods)
    train_seq, test_seq = split_sequences(options.n_sequences, options.held_out, seed)
    y_test = beliefs[test_seq].reshape(-1, beliefs.shape[-1])
    shown = np.random.default_rng(seed).choice(len(y_test), size=min(options.points, len(y_test)), replace=False)
    trained, mapped = fit_model(run.model, sample.tokens, beliefs, train_seq, test_seq, shown, seed)
    control, _ = fit_model(initial_model(run), sample.tokens, beliefs, train_seq, test_seq, shown, seed)
    best, best_init = trained.best_hook, control.best_hook
    headline = {
        "r2": trained.r2[best],
        "r2_random_init": control.r2[best_init],
        "mean_distance": trained.mean_distance[best],
        "mean_distance_random_init": control.mean_distance[best_init],
        "r2_concat": trained.r2[CONCAT],
        "r2_concat_random_init": control.r2[CONCAT],
        **{f"components_{level}": float(c) for level, c in zip(("90", "95", "99"), trained.components[best])},
        **{f"components_{level}_random_init": float(c) for level, c in zip(("90", "95", "99"), control.components[best_init])},
    }
    return GeometryResult(
        headline=headline,
        options=options,
        step=run.step,
        vertices=tuple(vertices),
        hooks=tuple(trained.r2),
        trained=trained,
        random_init=control,
        points_true=y_test[shown].tolist(),
        points_mapped=mapped,
    )


def snapshot(result: GeometryResult) -> dict:
    """Over training, each checkpoint keeps its best hook and its decoded points (the report's slider)."""
    return {"best_hook": result.trained.best_hook, "points_true": result.points_true, "points_mapped": result.trained.points, "vertices": list(result.vertices)}


GEOMETRY = register(
    Analysis(
        name="geometry",
        description="the residual stream mapped linearly onto the belief simplex, beside the same map on the run's initialization",
        options=GeometryOptions,
        result=GeometryResult,
        compute=compute,
        applies=_applies,
        figures="nrecur.analysis.figures.geometry:draw",
        over_training={"points": 1500},
        snapshot=snapshot,
        over_training_figures="nrecur.analysis.figures.geometry:draw_over_training",
    )
)
