"""Figures of the updates analysis: curves around events, the distributions of learning rate and discreteness,
and the decoded beliefs — the model beside the observer (its ceiling) and the run's initialization (its control)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nrecur.analysis.figures.common import OKABE_ITO, plain_log_ticks, pyplot, save_figure

__all__ = ["COLOURS", "band", "draw", "draw_decoded", "kl_axis"]

COLOURS = {"model": OKABE_ITO[0], "observer": OKABE_ITO[1], "random_init": OKABE_ITO[7]}
"""Colour of each predictor: the trained model, the observer (ceiling), the run's initialization (control)."""
LABELS = {"model": "model", "observer": "observer (ceiling)", "random_init": "initialization (control)"}
STYLES = {"model": "-", "observer": "-", "random_init": ":"}
KIND_COLOURS = {"transition": OKABE_ITO[0], "noise": OKABE_ITO[2]}
EVENT = {"transition": "a transition", "noise": "a noise token"}
WHO = ("observer", "model", "random_init")


def band(ax, offsets, curve, colour: str, style: str = "-", label: str | None = None, marker: str | None = "o") -> None:
    """Draw a :class:`~nrecur.analysis.events.Band` (mean and its 95 % interval) over ``offsets``, where it has values."""
    offsets = np.asarray(offsets)
    mean, half = np.asarray(curve.mean, dtype=float), np.asarray(curve.ci95, dtype=float)
    good = ~np.isnan(mean)
    ax.plot(offsets[good], mean[good], style, color=colour, marker=marker, markersize=3, label=label)
    ax.fill_between(offsets[good], (mean - half)[good], (mean + half)[good], color=colour, alpha=0.15, linewidth=0)


def kl_axis(ax) -> None:
    """A log axis of KL(observer ‖ predictor) over offsets, in plain numbers."""
    from matplotlib.ticker import MaxNLocator

    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("tokens seen from the event on", fontsize=10)
    ax.set_ylabel("KL(observer ‖ predictor) (nats, log)", fontsize=10)


def draw(result, folder: Path) -> list[Path]:
    """``updates_curves``, ``updates_histograms`` and, with decoded beliefs, ``updates_decoded``."""
    paths = _curves(result, folder) + _histograms(result, folder)
    if result.transition.decoded is not None:
        paths += draw_decoded(result, folder)
    return paths


def _curves(result, folder: Path) -> list[Path]:
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(14.5, 4.8), layout="constrained")
    for ax, kind in zip(axes[:2], ("transition", "noise")):
        data = result.kind(kind)
        for who in WHO:
            around = getattr(data, who)
            if kind == "transition":
                band(ax, data.offsets, around.p_old, COLOURS[who], "--", None, marker=None)
            band(ax, data.offsets, around.p_new, COLOURS[who], STYLES[who], LABELS[who])
        ax.axhline(0.5, color="#999999", linewidth=0.8, linestyle=":")
        target = "new target (solid), old target (dashed)" if kind == "transition" else "true target"
        ax.set_title(f"after {EVENT[kind]} ({data.n_events} events):\nP({target}) at target positions", fontsize=11)
        ax.set_xlabel("tokens seen from the event on", fontsize=10)
        ax.set_ylabel("probability", fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax = axes[2]
    for kind in ("transition", "noise"):
        data = result.kind(kind)
        band(ax, data.offsets, data.model.kl, KIND_COLOURS[kind], "-", f"model, after {EVENT[kind]}")
        band(ax, data.offsets, data.random_init.kl, KIND_COLOURS[kind], ":", f"initialization, after {EVENT[kind]}", marker=None)
    kl_axis(ax)
    ax.set_title("distance from the observer by offset\n(all positions of the window)", fontsize=11)
    handles, labels = (sum(pair, []) for pair in zip(axes[0].get_legend_handles_labels(), ax.get_legend_handles_labels()))
    fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=10, frameon=False)  # under the panels, off the curves
    fig.suptitle("updates around events: the model (blue) beside the observer (orange, the ceiling) and the run's initialization "
                 "(black dotted, the control)", fontsize=12)  # fmt: skip
    return save_figure(fig, folder, "updates_curves")


def _histograms(result, folder: Path) -> list[Path]:
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 2, figsize=(13, 8), layout="constrained")
    for row, kind in enumerate(("transition", "noise")):
        data = result.kind(kind)
        never = max(data.events.horizon, default=len(data.offsets))
        ax = axes[row, 0]
        for who in WHO:
            values = np.asarray(getattr(data, who).learning_rate, dtype=float)
            values = np.where(np.isnan(values), never, values)  # "never" in a bin of its own, past every horizon
            ax.hist(values, bins=np.arange(-0.5, never + 1.5), histtype="step", linewidth=2, color=COLOURS[who],
                    linestyle=STYLES[who], label=LABELS[who])  # fmt: skip
        ticks = [t for t in MaxNLocator(nbins=6, integer=True).tick_values(0, never) if 0 <= t <= never - 0.15 * (never + 2)]  # room for "never"
        ax.set_xticks([*ticks, never], [f"{t:g}" for t in ticks] + ["never"], fontsize=10)
        ax.set_xlim(-1, never + 1)
        ax.set_xlabel("learning rate: tokens until P(new target) > 0.5, to the end of the rule", fontsize=10)
        ax.set_ylabel("events", fontsize=10)
        ax.set_title(f"after {EVENT[kind]}: in-context learning rate", fontsize=11)
        ax = axes[row, 1]
        for who in WHO:
            values = np.asarray(getattr(data, who).discreteness, dtype=float)
            ax.hist(np.clip(values[~np.isnan(values)], 0, 1.5), bins=np.linspace(0, 1.5, 31), histtype="step", linewidth=2,
                    color=COLOURS[who], linestyle=STYLES[who], label=LABELS[who])  # fmt: skip
        ax.set_xlabel("discreteness index (1: one jump; near 0: gradual; clipped at 1.5)", fontsize=10)
        ax.set_ylabel("events", fontsize=10)
        ax.set_title(f"after {EVENT[kind]}: discreteness over the {len(data.offsets)}-token window", fontsize=11)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=10, frameon=False)
    fig.suptitle("per event: how fast (left) and how abruptly (right) the new target's probability rises", fontsize=12)
    return save_figure(fig, folder, "updates_histograms")


DECODED = {"target_new": OKABE_ITO[0], "target_old": OKABE_ITO[3], "period_new": OKABE_ITO[2]}
DECODED_STYLES = {"observer": "-", "model": "--", "random_init": ":"}
DECODED_LABELS = {"observer": "observer", "model": "decoded from the model", "random_init": "decoded from the initialization"}


def draw_decoded(result, folder: Path) -> list[Path]:
    """The beliefs over target and period decoded from the model (dashed) and from its initialization (dotted)
    around events, beside the observer's (solid)."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(15, 5.6), layout="constrained")
    for ax, kind in zip(axes, ("transition", "noise")):
        data = result.kind(kind)
        names = ("target_new", "target_old", "period_new") if kind == "transition" else ("target_new", "period_new")
        for name in names:
            for who in ("observer", "model", "random_init"):
                band(ax, data.offsets, getattr(getattr(data.decoded, who), name), DECODED[name], DECODED_STYLES[who], marker=None)
        ax.set_title(f"after {EVENT[kind]} ({data.n_events} events)", fontsize=11)
        ax.set_xlabel("tokens seen from the event on", fontsize=10)
        ax.set_ylabel("posterior marginal", fontsize=10)
        ax.set_ylim(-0.1, 1.1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    from matplotlib.lines import Line2D

    quantities = {"target_new": "P(new target) (noise: true target)", "target_old": "P(old target)", "period_new": "P(new period)"}
    handles = [Line2D([], [], color=DECODED[name], label=label) for name, label in quantities.items()]
    handles += [Line2D([], [], color="#555555", linestyle=DECODED_STYLES[who], label=DECODED_LABELS[who]) for who in DECODED_STYLES]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=10, frameon=False)
    readers = "; ".join(
        f"{quantity}: {d.kind} probe at {d.hook}, R² {d.r2:.2f} (initialization {result.decoders_random_init[quantity].r2:.2f})"
        for quantity, d in result.decoders.items()
    )
    fig.suptitle(f"beliefs over the rule around events: the observer's and those probes read from the activations\n{readers}", fontsize=11)
    return save_figure(fig, folder, "updates_decoded")
