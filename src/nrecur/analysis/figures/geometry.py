"""Figures of the belief geometry: the simplex decoded at each hook, beside the observer's and the initialization's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nrecur.analysis.figures.common import pyplot, save_figure

__all__ = ["belief_colours", "draw", "draw_over_training", "draw_simplex", "label_vertices", "simplex_grid", "simplex_xy"]


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
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal")
    ax.axis("off")


def simplex_grid(panels: list[tuple[str, np.ndarray]], colours: np.ndarray, columns: int, panel: tuple[float, float], size: float):
    """A figure of ``(title, points [n, vertex])`` simplex panels, ``columns`` to a row, each ``panel`` inches;
    returns the figure and its axes (flat)."""
    plt = pyplot()

    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(panel[0] * columns, panel[1] * rows), squeeze=False, layout="constrained")
    axes = axes.ravel()
    for ax in axes[len(panels) :]:
        ax.axis("off")
    for ax, (title, points) in zip(axes, panels):
        draw_simplex(ax, points, colours, title, size=size)
    return fig, axes


def label_vertices(ax, names) -> None:
    """Write the vertex names at the corners of the simplex drawn by :func:`draw_simplex`, inside the axes (so
    the title clears them)."""
    for (x, y), name in zip(simplex_xy(np.eye(len(names))), names):
        ax.annotate(name, (x, y), fontsize=10, ha="center", va="bottom" if y > 0 else "top")
    low, high = ax.get_ylim()
    ax.set_ylim(low - 0.15 * (high - low), high + 0.15 * (high - low))


def draw(result, folder: Path) -> list[Path]:
    """The observer's simplex, the trained model's decoded simplex at every hook, and the initialization's at
    its best hook (the control)."""
    truth = np.asarray(result.points_true)
    best_init = result.random_init.best_hook
    panels = [("observer's beliefs", truth)]
    panels += [(f"{hook}\nR² {result.trained.r2[hook]:.3f}", np.asarray(result.points_mapped[hook])) for hook in result.hooks]
    panels += [(f"initialization (control)\n{best_init}, R² {result.random_init.r2[best_init]:.3f}", np.asarray(result.random_init.points))]
    fig, axes = simplex_grid(panels, belief_colours(truth), columns=5, panel=(2.9, 3.1), size=1.5)
    label_vertices(axes[0], result.vertices)
    fig.suptitle(
        "belief simplex: the observer's (first panel), linearly decoded from the trained model's residual stream\n"
        "at each hook, and from the run's initialization (last panel); each point coloured by its true belief",
        fontsize=11,
    )
    return save_figure(fig, folder, "geometry")


def draw_over_training(over, folder: Path) -> list[Path]:
    """A strip of the simplex decoded from the best hook at each checkpoint."""
    snapshots = [s for s in over.snapshots if s.get("points_mapped")]
    if not snapshots:
        return []
    truth = np.asarray(snapshots[-1]["points_true"])
    r2 = over.series.get("r2", [float("nan")] * len(over.steps))
    panels = [("observer", truth)] + [
        (f"step {step}\nR² {value:.3f}", np.asarray(s["points_mapped"])) for step, value, s in zip(over.steps, r2, over.snapshots)
    ]
    fig, _ = simplex_grid(panels, belief_colours(truth), columns=5, panel=(2.7, 2.9), size=0.8)
    fig.suptitle("belief simplex decoded from the best hook at each checkpoint (coloured by the true belief)", fontsize=11)
    return save_figure(fig, folder, "geometry_over_training")
