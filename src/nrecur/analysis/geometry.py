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
says how low-dimensional the representation is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nrecur.analysis.base import pyplot, register_analysis, save_figure
from nrecur.analysis.probes import CONCAT, RidgeProbe, best_single_hook, probe_inputs, r2_score, split_sequences
from nrecur.tasks import HMMTask, NRecurrence, Task

VARIANCE_LEVELS = (0.90, 0.95, 0.99)


def beliefs_of(task: Task, post) -> tuple[np.ndarray, tuple[str, ...]]:
    """``[batch, pos, vertex]`` beliefs on a simplex and the vertex names."""
    if isinstance(task, HMMTask):
        return np.asarray(post.belief), task.process.state_names
    if isinstance(task, NRecurrence):
        chosen = np.asarray(post.period)[..., :3]  # [batch, pos, period]: the first three periods
        total = chosen.sum(-1, keepdims=True)
        return np.divide(chosen, total, out=np.full_like(chosen, 1 / chosen.shape[-1]), where=total > 0), tuple(
            f"n={n}" for n in task.periods[:3]
        )
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
        plt = pyplot()

        truth = np.asarray(self.points_true)
        colours = np.clip(truth[:, :3] if truth.shape[1] >= 3 else np.pad(truth, ((0, 0), (0, 3 - truth.shape[1]))), 0, 1)
        panels = [("observer's beliefs", truth)] + [
            (f"{hook}\nR² {self.r2[hook]:.3f}", np.asarray(self.points_mapped[hook])) for hook in self.hooks
        ]
        columns = min(6, len(panels))
        rows = -(-len(panels) // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(2.7 * columns, 2.9 * rows), squeeze=False)
        axes = axes.ravel()
        for ax in axes[len(panels) :]:
            ax.axis("off")
        corners = simplex_xy(np.eye(len(self.vertices)))
        for ax, (title, points) in zip(axes, panels):
            xy = simplex_xy(points)
            ax.fill(corners[:, 0], corners[:, 1], facecolor="none", edgecolor="#999999", lw=0.8)
            ax.scatter(xy[:, 0], xy[:, 1], s=1.5, c=colours, alpha=0.7, linewidths=0)
            ax.set_title(title, fontsize=8)
            ax.set_aspect("equal")
            ax.axis("off")
        for (x, y), name in zip(corners, self.vertices):
            axes[0].annotate(name, (x, y), fontsize=8, ha="center", va="bottom" if y > 0 else "top")
        fig.suptitle("belief simplex: true (first panel) and linearly decoded from the residual stream at each hook,\n"
                     "each point coloured by its true belief", fontsize=9)
        fig.tight_layout()
        return save_figure(fig, folder, "geometry")


def _applies(run) -> str | None:
    if isinstance(run.task, (HMMTask, NRecurrence)):
        return None
    return f"task kind {run.task.kind!r} has no belief simplex to draw (HMM kinds and n-recurrence do)"


@register_analysis("geometry", applies=_applies, description="the residual stream mapped linearly onto the belief simplex")
def geometry(run, n_sequences: int = 2048, seed: int = 0, held_out: float = 0.2, points: int = 3000) -> GeometryResult:
    """Fit the residual stream at every hook point (and concatenated) to the observer's belief; see the module docstring."""
    task, length = run.task, run.config.length
    sample = task.sample(n_sequences, length, seed)
    beliefs, vertices = beliefs_of(task, task.posterior(sample.tokens))  # [batch, pos, vertex]
    acts = probe_inputs(run.model, sample.tokens)
    train_seq, test_seq = split_sequences(n_sequences, held_out, seed)
    y_train = beliefs[train_seq].reshape(-1, beliefs.shape[-1])
    y_test = beliefs[test_seq].reshape(-1, beliefs.shape[-1])
    shown = np.random.default_rng(seed).choice(len(y_test), size=min(points, len(y_test)), replace=False)
    r2, distance, components, mapped = {}, {}, {}, {}
    for hook, x in acts.items():
        probe = RidgeProbe.fit(x[train_seq].reshape(-1, x.shape[-1]), y_train)
        predicted = probe.predict(x[test_seq].reshape(-1, x.shape[-1]))
        r2[hook] = r2_score(y_test, predicted)
        distance[hook] = float(np.linalg.norm(predicted - y_test, axis=-1).mean())
        components[hook] = components_for(x.reshape(-1, x.shape[-1]))
        mapped[hook] = predicted[shown].tolist()
    best = best_single_hook(r2)
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
