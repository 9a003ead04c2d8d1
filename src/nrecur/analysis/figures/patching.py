"""Figures of activation patching and steering: the trained model beside its initialization."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nrecur.analysis.figures.common import OKABE_ITO, pyplot, save_figure

__all__ = ["draw", "draw_heads", "draw_sites", "draw_steering"]

ROW_INCHES = 0.26
"""Height of one position's row: room for a value written at 10 pt."""


def draw(result, folder: Path) -> list[Path]:
    """The sites heatmap, the heads heatmap and (with steering) the steering curves."""
    paths = draw_sites(result, folder)
    paths += draw_heads(result, folder)
    if result.steering is not None:
        paths += draw_steering(result, folder)
    return paths


def _site_columns(result) -> tuple[list[str], list[tuple[str, int]]]:
    """Column labels and ``(kind, row)`` of every non-head site, grouped by kind (layers in order)."""
    labels, where = [], []
    for kind, hooks in result.sites.items():
        if kind == "head":
            continue
        for row, hook in enumerate(hooks):
            layer = hook.split(".")[1] if hook.startswith("blocks.") else "final"
            name = {"resid": "resid in", "attn_out": "attn", "mlp_out": "MLP"}.get(kind, kind)
            if hook.endswith("hook_resid_post") or hook.startswith("ln_final"):
                name = "resid out"
            labels.append(f"{name}\nL{layer}")
            where.append((kind, row))
    return labels, where


def _site_matrix(scan, where: list[tuple[str, int]]) -> np.ndarray:
    """``[pos, site]``: mean moved at each patched position of each site."""
    return np.stack([np.asarray(scan.moved[kind], dtype=float)[row] for kind, row in where], axis=1)


def _write_values(ax, matrix: np.ndarray, low: float, high: float) -> None:
    """Each cell that moves by 0.05 or more either way carries its value, horizontally at 10 pt."""
    middle = (low + high) / 2
    for (row, column), value in np.ndenumerate(matrix):
        if np.isfinite(value) and abs(value) >= 0.05:
            ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=10, color="black" if value > middle else "white")


def draw_sites(result, folder: Path) -> list[Path]:
    """Per model (trained, initialization), a position × site heatmap of the mean moved toward the source's rule."""
    plt = pyplot()
    labels, where = _site_columns(result)
    panels = [("trained", _site_matrix(result.trained, where)), ("initialization (control)", _site_matrix(result.random_init, where))]
    low = min(0.0, *(float(np.nanmin(m)) for _, m in panels))
    high = max(1.0, *(float(np.nanmax(m)) for _, m in panels))
    pos = panels[0][1].shape[0]
    row_inches = min(ROW_INCHES, 10.0 / pos)
    written = row_inches >= 0.2  # values only where a row has room for them
    width = 0.58 * len(labels)
    fig, axes = plt.subplots(1, 2, figsize=(2 * width + 3.0, row_inches * pos + 2.4), layout="constrained", sharey=True)
    for ax, (title, matrix) in zip(axes, panels):
        image = ax.imshow(matrix, cmap="cividis", vmin=low, vmax=high, aspect="auto")
        ax.set_xticks(range(len(labels)), labels, fontsize=10)
        ax.xaxis.tick_top()
        step = max(1, int(np.ceil(0.2 / row_inches)))
        ax.set_yticks(range(0, pos, step), [str(p) for p in range(0, pos, step)], fontsize=10)
        ax.set_title(f"{title}: best {(result.trained if title == 'trained' else result.random_init).best.moved:.2f}", fontsize=11)
        for boundary in [i for i in range(len(where) - 1) if where[i][0] != where[i + 1][0]]:
            ax.axvline(boundary + 0.5, color="white", lw=2)  # between site kinds
        if written:
            _write_values(ax, matrix, low, high)
    axes[0].set_ylabel("patched position (the prediction is read at the last one)", fontsize=10)
    bar = fig.colorbar(image, ax=axes, shrink=0.6, pad=0.02)
    bar.set_label("moved (0: no effect, 1: the source's belief)", fontsize=10)
    bar.ax.tick_params(labelsize=10)
    fig.suptitle(
        f"activation patching: how far copying the source's activation at one site and position moves the prediction\n"
        f"toward the source's rule, mean over {result.options.n_sequences} pairs whose source has another target"
        + (" (values ≥ 0.05 written)" if written else ""),
        fontsize=11,
    )
    return save_figure(fig, folder, "patching_sites")


def _head_matrix(scan) -> np.ndarray:
    """``[pos, layer·head]``."""
    moved = np.asarray(scan.moved["head"], dtype=float)  # [layer, head, pos]
    return moved.reshape(-1, moved.shape[-1]).T


def draw_heads(result, folder: Path) -> list[Path]:
    """Per model, a position × (layer, head) heatmap of patching one head's ``z`` at one position."""
    plt = pyplot()
    layers, heads, pos = np.asarray(result.trained.moved["head"], dtype=float).shape
    panels = [("trained", _head_matrix(result.trained)), ("initialization (control)", _head_matrix(result.random_init))]
    low = min(0.0, *(float(np.nanmin(m)) for _, m in panels))
    high = max(0.05, *(float(np.nanmax(m)) for _, m in panels))
    row_inches = min(0.22, 10.0 / pos)
    column = min(0.34, 4.0 / (layers * heads))
    fig, axes = plt.subplots(1, 2, figsize=(2 * column * layers * heads + 3.0, row_inches * pos + 2.2), layout="constrained", sharey=True)
    label_every = max(1, int(np.ceil(0.3 / column)))
    for ax, (title, matrix) in zip(axes, panels):
        image = ax.imshow(matrix, cmap="cividis", vmin=low, vmax=high, aspect="auto")
        ticks = [i for i in range(layers * heads) if (i % heads) % label_every == 0]
        ax.set_xticks(ticks, [str(i % heads) for i in ticks], fontsize=10)
        for layer in range(1, layers):
            ax.axvline(layer * heads - 0.5, color="white", lw=2)
        ax.set_xlabel("head, layer by layer (" + " | ".join(f"layer {l}" for l in range(layers)) + ")", fontsize=10)
        step = max(1, int(np.ceil(0.2 / row_inches)))
        ax.set_yticks(range(0, pos, step), [str(p) for p in range(0, pos, step)], fontsize=10)
        ax.set_title(title, fontsize=11)
    axes[0].set_ylabel("patched position", fontsize=10)
    bar = fig.colorbar(image, ax=axes, shrink=0.6, pad=0.02)
    bar.set_label("moved toward the source's rule", fontsize=10)
    bar.ax.tick_params(labelsize=10)
    fig.suptitle(f"patching one head's output (z) at one position, mean over {result.options.n_sequences} pairs", fontsize=11)
    return save_figure(fig, folder, "patching_heads")


def draw_steering(result, folder: Path) -> list[Path]:
    """Moved and edit success against α per hook: the probe direction (solid), a random direction of the same norm
    (dashed), and the probe direction of the run's initialization (dotted)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.6), layout="constrained")
    scans = [(result.steering, "-", "o", "trained, probe direction", "moved", "success")]
    scans.append((result.steering, "--", None, "trained, random direction", "moved_random", "success_random"))
    if result.steering_random_init is not None:
        scans.append((result.steering_random_init, ":", None, "initialization, probe direction", "moved", "success"))
    for index, hook in enumerate(result.steering.hooks):
        colour = OKABE_ITO[index % len(OKABE_ITO)]
        for scan, style, marker, _, moved, success in scans:
            axes[0].plot(scan.alphas, getattr(scan, moved)[index], ls=style, marker=marker, color=colour)
            axes[1].plot(scan.alphas, getattr(scan, success)[index], ls=style, marker=marker, color=colour)
    hooks = [plt.Line2D([], [], color=OKABE_ITO[i % len(OKABE_ITO)], label=f"{hook} (probe R² {result.steering.probe_r2[hook]:.2f})") for i, hook in enumerate(result.steering.hooks)]
    styles = [plt.Line2D([], [], color="#555555", ls=style, marker=marker, label=label) for _, style, marker, label, _, _ in scans]
    steering = result.steering
    best = steering.hooks.index(steering.best_hook), steering.alphas.index(steering.best_alpha)
    axes[0].plot(steering.best_alpha, steering.moved[best[0]][best[1]], marker="*", ms=14, color="#000000", ls="none")
    styles.append(plt.Line2D([], [], color="#000000", marker="*", ms=10, ls="none", label="hook and α chosen on the selection half"))
    axes[0].axhline(0, color="#999999", lw=0.8)
    axes[0].axhline(1, color="#999999", lw=0.8, ls=":")
    axes[0].set_ylabel("moved toward (n, t*)", fontsize=10)
    axes[0].set_title("steering along the target probe's direction", fontsize=11)
    if steering.held_out:
        fig.suptitle(f"steering: hook and α chosen on {len(steering.selection)} destinations, every curve on the {len(steering.held_out)} held out", fontsize=11)
    axes[1].set_ylabel("share with t* most likely\n(next position a target position)", fontsize=10)
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_title("edit success", fontsize=11)
    for ax in axes:
        ax.set_xscale("symlog", linthresh=0.5)
        ax.set_xlim(0, max(result.steering.alphas) * 1.1)
        ax.set_xticks(result.steering.alphas, [f"{a:g}" for a in result.steering.alphas])
        ax.minorticks_off()
        ax.set_xlabel("α (raise of the probe's P(t*))", fontsize=10)
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
    fig.legend(handles=hooks + styles, fontsize=10, frameon=False, loc="outside lower center", ncol=2)
    return save_figure(fig, folder, "patching_steering")
