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
says how low-dimensional the representation is. Over training
(``--checkpoints all``) a strip of small panels shows the decoded simplex at
every saved checkpoint, from the freshly initialized model on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nrecur.analysis.base import progress_bar, pyplot, register_analysis, save_figure
from nrecur.analysis.probes import CONCAT, RidgeProbe, best_hooks, probe_inputs, r2_score, split_sequences
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


def simplex_xy(beliefs: np.ndarray) -> np.ndarray:
    """``[n, vertex]`` → ``[n, 2]``: vertices on a regular polygon (a triangle for 3 states)."""
    k = beliefs.shape[-1]
    angles = np.pi / 2 + 2 * np.pi * np.arange(k) / k
    corners = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # [vertex, 2]
    return beliefs @ corners


VERTEX_COLOURS = np.array([[0.0, 0.447, 0.698], [0.941, 0.894, 0.259], [0.835, 0.369, 0.0]])
"""Colours of the first three vertices (Okabe–Ito blue, yellow, vermillion): distinct in lightness and on
the blue–yellow axis, so the colouring survives the common colour-vision deficiencies."""


def belief_colours(beliefs: np.ndarray) -> np.ndarray:
    """``[n, vertex]`` → ``[n, 3]`` RGB: each point the belief-weighted mix of its vertices' colours."""
    weights = np.clip(beliefs[:, :3], 0, None)
    weights = weights / np.maximum(weights.sum(1, keepdims=True), 1e-12)
    return np.clip(weights @ VERTEX_COLOURS[: weights.shape[1]], 0, 1)


def draw_simplex(ax, points: np.ndarray, colours: np.ndarray, title: str, size: float = 1.5) -> None:
    """Scatter belief-simplex ``points [n, vertex]`` inside the simplex's outline on ``ax``."""
    corners = simplex_xy(np.eye(points.shape[1]))
    xy = simplex_xy(points)
    ax.fill(corners[:, 0], corners[:, 1], facecolor="none", edgecolor="#999999", lw=0.8)
    ax.scatter(xy[:, 0], xy[:, 1], s=size, c=colours, alpha=0.7, linewidths=0)
    ax.set_title(title, fontsize=8)
    ax.set_aspect("equal")
    ax.axis("off")


def simplex_grid(panels: list[tuple[str, np.ndarray]], colours: np.ndarray, columns: int, panel: tuple[float, float], size: float):
    """A figure of ``(title, points [n, vertex])`` simplex panels, ``columns`` to a row, each ``panel`` inches;
    returns the figure and its axes (flat)."""
    plt = pyplot()

    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(panel[0] * columns, panel[1] * rows), squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(panels) :]:
        ax.axis("off")
    for ax, (title, points) in zip(axes, panels):
        draw_simplex(ax, points, colours, title, size=size)
    return fig, axes


def label_vertices(ax, names) -> None:
    """Write the vertex names at the corners of the simplex drawn by :func:`draw_simplex`."""
    for (x, y), name in zip(simplex_xy(np.eye(len(names))), names):
        ax.annotate(name, (x, y), fontsize=8, ha="center", va="bottom" if y > 0 else "top")


@dataclass(frozen=True)
class GeometryResult:
    """Linear maps from the residual stream to the belief simplex, per hook point."""

    name: str
    vertices: tuple[str, ...]
    hooks: tuple[str, ...]
    r2: dict[str, float]
    """hook → held-out R² of the linear map to the belief."""
    mean_distance: dict[str, float]
    """hook → mean Euclidean distance between mapped and true belief (held out)."""
    components: dict[str, list[int]]
    """hook → principal components for 90/95/99 % of the residual stream's variance."""
    best_hook: str
    points_true: list[list[float]]
    """A held-out sample of true beliefs ``[n, vertex]`` for the figure."""
    points_mapped: dict[str, list[list[float]]]
    """hook → the same points as the linear map gives them."""
    step: int
    n_sequences: int
    headline: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "step": self.step,
            "n_sequences": self.n_sequences,
            "vertices": list(self.vertices),
            "hooks": list(self.hooks),
            "best_hook": self.best_hook,
            "r2": self.r2,
            "mean_distance": self.mean_distance,
            "components": {hook: dict(zip(("90%", "95%", "99%"), c)) for hook, c in self.components.items()},
            "points_true": self.points_true,
            "points_mapped": self.points_mapped,
        }

    def plot(self, folder: Path) -> list[Path]:
        truth = np.asarray(self.points_true)
        panels = [("observer's beliefs", truth)] + [
            (f"{hook}\nR² {self.r2[hook]:.3f}", np.asarray(self.points_mapped[hook])) for hook in self.hooks
        ]
        fig, axes = simplex_grid(panels, belief_colours(truth), columns=6, panel=(2.7, 2.9), size=1.5)
        label_vertices(axes[0], self.vertices)
        fig.suptitle("belief simplex: true (first panel) and linearly decoded from the residual stream at each hook,\n"
                     "each point coloured by its true belief", fontsize=9)
        fig.tight_layout()
        return save_figure(fig, folder, "geometry")


def _applies(run) -> str | None:
    if isinstance(run.task, NRecurrence) and len(run.task.periods) < 3:  # periods are distinct (the task checks)
        return f"the task has {len(run.task.periods)} periods; the belief simplex needs three as its vertices"
    if isinstance(run.task, (HMMTask, NRecurrence)):
        return None
    return f"task kind {run.task.kind!r} has no belief simplex to draw (HMM kinds and n-recurrence do)"


def _sample_beliefs(task: Task, n_sequences: int, length: int, seed: int, periods: tuple[int, ...] | None = None):
    """Fresh sequences and their beliefs ``[batch, pos, vertex]``, with the vertex names."""
    sample = task.sample(n_sequences, length, seed)
    beliefs, vertices = beliefs_of(task, task.posterior(sample.tokens), periods)
    return sample.tokens, beliefs, vertices


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


def geometry(
    run, n_sequences: int = 2048, seed: int = 0, held_out: float = 0.2, points: int = 3000, periods: tuple[int, ...] | None = None
) -> GeometryResult:
    """Fit the residual stream at every hook point (and concatenated) to the observer's belief; see the module
    docstring. ``periods``: for n-recurrence, the three periods whose posterior is the simplex (default: the first three)."""
    tokens, beliefs, vertices = _sample_beliefs(run.task, n_sequences, run.config.length, seed, periods)
    acts = probe_inputs(run.model, tokens)
    train_seq, test_seq = split_sequences(n_sequences, held_out, seed)
    y_test = beliefs[test_seq].reshape(-1, beliefs.shape[-1])
    shown = np.random.default_rng(seed).choice(len(y_test), size=min(points, len(y_test)), replace=False)
    r2, distance, mapped = map_to_simplex(acts, beliefs, train_seq, test_seq, shown)
    components = {hook: components_for(x.reshape(-1, x.shape[-1])) for hook, x in acts.items()}
    best = best_hooks(acts, {"belief": beliefs}, train_seq, seed)["belief"]
    headline = {
        "r2": r2[best],
        "mean_distance": distance[best],
        "r2_concat": r2[CONCAT],
        "mean_distance_concat": distance[CONCAT],
        **{f"components_{level}": float(c) for level, c in zip(("90", "95", "99"), components[best])},
    }
    return GeometryResult(
        name="geometry",
        vertices=tuple(vertices),
        hooks=tuple(acts),
        r2=r2,
        mean_distance=distance,
        components=components,
        best_hook=best,
        points_true=y_test[shown].tolist(),
        points_mapped=mapped,
        step=run.step,
        n_sequences=n_sequences,
        headline=headline,
    )


# ---------------------------------------------------------------------------- over training


@dataclass(frozen=True)
class GeometryTrainingResult:
    """The belief simplex decoded from the best hook at every saved checkpoint (``--checkpoints all``)."""

    name: str
    steps: tuple[int, ...]
    vertices: tuple[str, ...]
    best_hook: list[str]
    """Per checkpoint, the hook point whose linear map fits best."""
    r2_best: list[float]
    r2_concat: list[float]
    mean_distance: list[float]
    """Per checkpoint, at the best hook."""
    points_true: list[list[float]]
    points_mapped: list[list[list[float]]]
    """Per checkpoint, the held-out points as the best hook's linear map gives them."""
    n_sequences: int
    headline: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "steps": list(self.steps),
            "n_sequences": self.n_sequences,
            "vertices": list(self.vertices),
            "best_hook": self.best_hook,
            "r2_best": self.r2_best,
            "r2_concat": self.r2_concat,
            "mean_distance": self.mean_distance,
            "points_true": self.points_true,
            "points_mapped": self.points_mapped,
        }

    def plot(self, folder: Path) -> list[Path]:
        truth = np.asarray(self.points_true)
        panels = [("observer", truth)] + [
            (f"step {step}\nR² {r2:.3f}", np.asarray(points)) for step, r2, points in zip(self.steps, self.r2_best, self.points_mapped)
        ]
        fig, _ = simplex_grid(panels, belief_colours(truth), columns=5, panel=(2.6, 2.8), size=0.8)
        fig.suptitle("belief simplex decoded from the best hook at each checkpoint (coloured by the true belief)", fontsize=9)
        fig.tight_layout()
        return save_figure(fig, folder, "geometry_over_training")


def geometry_over_training(
    run,
    steps,
    load,
    n_sequences: int = 2048,
    seed: int = 0,
    held_out: float = 0.2,
    points: int = 1500,
    periods: tuple[int, ...] | None = None,
    show_progress: bool = False,
) -> GeometryTrainingResult:
    """:func:`geometry`'s linear maps at each checkpoint step; ``load(step)`` gives that step's run.

    The same sequences, split and shown points at every step, so the panels differ only by the weights; with
    the defaults of :func:`geometry`, the last panel's figures are the latest checkpoint's.
    """
    tokens, beliefs, vertices = _sample_beliefs(run.task, n_sequences, run.config.length, seed, periods)
    train_seq, test_seq = split_sequences(n_sequences, held_out, seed)
    y_test = beliefs[test_seq].reshape(-1, beliefs.shape[-1])
    shown = np.random.default_rng(seed).choice(len(y_test), size=min(points, len(y_test)), replace=False)
    chosen, r2_best, r2_concat, distances, mapped_points = [], [], [], [], []
    for step in progress_bar(steps, "geometry over training", show_progress):
        acts = probe_inputs(load(step).model, tokens)
        r2, distance, mapped = map_to_simplex(acts, beliefs, train_seq, test_seq, shown)
        best = best_hooks(acts, {"belief": beliefs}, train_seq, seed)["belief"]
        chosen.append(best)
        r2_best.append(r2[best])
        r2_concat.append(r2[CONCAT])
        distances.append(distance[best])
        mapped_points.append(mapped[best])
    return GeometryTrainingResult(
        name="geometry_over_training",
        steps=tuple(steps),
        vertices=tuple(vertices),
        best_hook=chosen,
        r2_best=r2_best,
        r2_concat=r2_concat,
        mean_distance=distances,
        points_true=y_test[shown].tolist(),
        points_mapped=mapped_points,
        n_sequences=n_sequences,
        headline={"r2_final": r2_best[-1], "mean_distance_final": distances[-1], "checkpoints": float(len(steps))},
    )


register_analysis(
    "geometry",
    applies=_applies,
    description="the residual stream mapped linearly onto the belief simplex",
    over_training=geometry_over_training,
)(geometry)
