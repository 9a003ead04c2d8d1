"""What every figure shares: the Agg backend, colours, log ticks, a size that reads on a report page, saving
atomically as PNG and SVG.

A report shows every figure at :data:`PIXELS_PER_INCH` CSS pixels per figure inch (a PNG pixel for pixel),
at most :data:`PAGE_INCHES` wide (the page's column at a 1,400-px-wide window). :func:`save_figure` raises
text under :data:`MIN_TEXT_PT` to it and scales a wider figure down to that width, its text kept at its size,
so no text on the page renders under 15 CSS px, the size of the report's body text. It writes into the PNG's
metadata the smallest text size drawn and any tick labels that overlap, for the report's tests to check.
"""

from __future__ import annotations

import math
from pathlib import Path

from nrecur._io import atomic_write

__all__ = [
    "MIN_TEXT_PT", "OKABE_ITO", "PAGE_INCHES", "PIXELS_PER_INCH", "figure_title", "fit_page", "overlapping_tick_labels",
    "plain_log_ticks", "pyplot", "save_figure", "smallest_text_pt",
]  # fmt: skip

PIXELS_PER_INCH = 120
"""Dots per inch of the PNG files, and the CSS pixels per figure inch a report shows every figure at."""
MIN_TEXT_PT = 9.0
"""The smallest text of a figure, in points: 15 px at :data:`PIXELS_PER_INCH` (a report's body text is 15 px)."""
PAGE_INCHES = 10.8
"""The widest a figure is saved (its tight box), in inches: at :data:`PIXELS_PER_INCH`, within the 1,304-px
column of a report at a 1,400-px-wide window, so it is shown unscaled."""
SMALLEST_TEXT_KEY = "Smallest text (pt)"
OVERLAPS_KEY = "Overlapping tick labels"

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


def _renderer(fig):
    """``fig``'s renderer, giving a closed figure (whose canvas is the bare base class) an Agg canvas again."""
    if not hasattr(fig.canvas, "get_renderer"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    return fig.canvas.get_renderer()


def _drawn_texts(fig) -> list:
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and t.get_alpha() != 0]


def smallest_text_pt(fig) -> float | None:
    """The size of the smallest visible text of ``fig``, in points (None without text)."""
    sizes = [t.get_fontsize() for t in _drawn_texts(fig)]
    return min(sizes) if sizes else None


def overlapping_tick_labels(fig) -> list[str]:
    """Neighbouring tick labels of any axis of ``fig`` (colour bars included) whose drawn boxes overlap, as
    ``"axis title: label | label"`` (empty when none do). Draws the figure's layout first."""
    renderer = _renderer(fig)
    fig.draw_without_rendering()
    found = []
    for ax in fig.axes:
        for axis, along in ((ax.xaxis, 0), (ax.yaxis, 1)):
            ticks = axis._update_ticks() if hasattr(axis, "_update_ticks") else axis.get_major_ticks()
            labels = [label for tick in ticks for label in (tick.label1, tick.label2) if label.get_visible() and label.get_text().strip()]
            boxes = sorted(((label.get_window_extent(renderer), label) for label in labels), key=lambda b: (b[0].x0 + b[0].x1, b[0].y0 + b[0].y1)[along])
            for (first, a), (second, b) in zip(boxes, boxes[1:]):
                slant = math.radians(a.get_rotation())
                if math.sin(slant) * math.cos(slant) != 0:  # slanted lines of text: apart when their perpendicular distance exceeds a line
                    anchors = [label.get_transform().transform(label.get_position())[along] for label in (a, b)]  # the ticks
                    gap = abs(anchors[1] - anchors[0])
                    apart = gap * abs(math.sin(slant) if along == 0 else math.cos(slant)) >= 0.9 * renderer.points_to_pixels(a.get_fontsize())
                else:
                    apart = not (min(first.x1, second.x1) - max(first.x0, second.x0) > 1 and min(first.y1, second.y1) - max(first.y0, second.y0) > 1)
                if not apart:
                    found.append(f"{ax.get_title() or ax.get_label()}: {a.get_text()} | {b.get_text()}")
    return found


def fit_page(fig) -> None:
    """Raise text of ``fig`` under :data:`MIN_TEXT_PT` to it; scale ``fig`` down (text kept at its size) until its
    tight box is at most :data:`PAGE_INCHES` wide."""
    for text in _drawn_texts(fig):
        if text.get_fontsize() < MIN_TEXT_PT:
            text.set_fontsize(MIN_TEXT_PT)
    for _ in range(4):  # the layout moves as the figure shrinks: a few rounds settle it
        renderer = _renderer(fig)
        fig.draw_without_rendering()
        width = fig.get_tightbbox(renderer).width + 0.2  # savefig's pad_inches on each side
        if width <= PAGE_INCHES:
            return
        fig.set_size_inches(fig.get_size_inches() * (PAGE_INCHES / width) * 0.995)


def save_figure(fig, folder: str | Path, stem: str) -> list[Path]:
    """Save a matplotlib figure as ``stem.png`` and ``stem.svg`` in ``folder`` (atomically), fitted to a report
    page (:func:`fit_page`); close it. The first line of its title goes into both files' metadata (the SVG's
    ``<title>``): a report's caption of the figure; the PNG's also holds the smallest text size and the tick
    labels that overlap (:func:`smallest_text_pt`, :func:`overlapping_tick_labels`)."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    fit_page(fig)
    title = figure_title(fig)
    metadata = {"Title": title} if title else {}
    smallest = smallest_text_pt(fig)
    measured = {SMALLEST_TEXT_KEY: f"{smallest:g}" if smallest else "", OVERLAPS_KEY: "\n".join(overlapping_tick_labels(fig))}
    for suffix, kwargs in ((".png", {"dpi": PIXELS_PER_INCH, "metadata": {**metadata, **measured}}), (".svg", {"metadata": metadata})):
        path = folder / f"{stem}{suffix}"
        atomic_write(path, lambda handle, fmt=suffix[1:], kw=kwargs: fig.savefig(handle, format=fmt, bbox_inches="tight", **kw))
        paths.append(path)
    plt.close(fig)
    return paths

