"""What every figure shares: the Agg backend, colours, log ticks, saving atomically as PNG and SVG."""

from __future__ import annotations

import math
from pathlib import Path

from nrecur._io import atomic_write

__all__ = ["OKABE_ITO", "figure_title", "plain_log_ticks", "pyplot", "save_figure"]

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
"""The Okabe–Ito colours, distinguishable with the common colour-vision deficiencies: lines of one figure."""


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures are only ever written to files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plain_log_ticks(axis) -> None:
    """Label a log-scaled matplotlib ``axis`` (``ax.yaxis``, a colour bar's ``bar.ax.yaxis``) in plain numbers
    (0.2, 0.001 rather than 2×10⁻¹, 10⁻³), its minor ticks too where it spans under a decade (there the
    major ticks alone may be one or none)."""
    from matplotlib.ticker import FuncFormatter

    def under_a_decade() -> bool:
        low, high = sorted(axis.get_view_interval())
        return low > 0 and math.log10(high / low) < 1

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if under_a_decade() else ""))


def figure_title(fig) -> str | None:
    """The first line of a figure's title: its suptitle, else those of its panels' titles, joined (None without)."""
    text = fig.get_suptitle().strip() if hasattr(fig, "get_suptitle") else ""
    if text:
        return text.splitlines()[0]
    titles = list(dict.fromkeys(ax.get_title().strip().splitlines()[0] for ax in fig.axes if ax.get_title().strip()))
    return "; ".join(titles) if titles else None


def save_figure(fig, folder: str | Path, stem: str) -> list[Path]:
    """Save a matplotlib figure as ``stem.png`` and ``stem.svg`` in ``folder`` (atomically); close it. The first
    line of its title goes into both files' metadata (the SVG's ``<title>``): a report's caption of the figure."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    title = figure_title(fig)
    metadata = {"Title": title} if title else {}
    for suffix, kwargs in ((".png", {"dpi": 120, "metadata": metadata}), (".svg", {"metadata": metadata})):
        path = folder / f"{stem}{suffix}"
        atomic_write(path, lambda handle, fmt=suffix[1:], kw=kwargs: fig.savefig(handle, format=fmt, bbox_inches="tight", **kw))
        paths.append(path)
    plt.close(fig)
    return paths

