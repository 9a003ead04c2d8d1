"""What every figure shares: the Agg backend, colours, log ticks, a size that reads on a report page, saving
atomically as PNG and SVG.

A report shows every figure at :data:`PIXELS_PER_INCH` CSS pixels per figure inch (a PNG pixel for pixel),
at most :data:`PAGE_INCHES` wide (the page's column at a 1,400-px-wide window). :func:`save_figure` raises
text under :data:`MIN_TEXT_PT` to it and scales a wider figure down to that width, its text kept at its size,
so no text on the page renders under 15 CSS px, the size of the report's body text; as it shrinks, the figure is
laid out again and titles too long for their room wrap. It writes into the PNG's metadata the smallest text size
drawn and any texts that overlap (titles, labels, tick labels, legends, annotations), for the report's tests.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nrecur._io import atomic_write

__all__ = [
    "MIN_TEXT_PT", "OKABE_ITO", "PAGE_INCHES", "PIXELS_PER_INCH", "drawn_texts", "figure_title", "fit_page", "freeze_layout",
    "overlapping_text", "plain_log_ticks", "pyplot", "save_figure", "smallest_text_pt", "text_checks", "wrap_text",
]  # fmt: skip

PIXELS_PER_INCH = 120
"""Dots per inch of the PNG files, and the CSS pixels per figure inch a report shows every figure at."""
MIN_TEXT_PT = 9.0
"""The smallest text of a figure, in points: 15 px at :data:`PIXELS_PER_INCH` (a report's body text is 15 px)."""
PAGE_INCHES = 10.8
"""The widest a figure is saved (its tight box), in inches: at :data:`PIXELS_PER_INCH`, within the 1,304-px
column of a report at a 1,400-px-wide window, so it is shown unscaled."""
SMALLEST_TEXT_KEY = "Smallest text (pt)"
OVERLAPS_KEY = "Overlapping text"

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
"""The Okabe–Ito colours, distinguishable with the common colour-vision deficiencies: lines of one figure."""


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures are only ever written to files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def legend_outside(ax, **kwargs):
    """``ax``'s legend beside it, on the right, where it covers no curve (the layout makes room for it)."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, **{"fontsize": 10, **kwargs})


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
    """A figure's title in one line: its suptitle (every line), else the first lines of its panels' titles,
    joined (None without)."""
    text = fig.get_suptitle().strip() if hasattr(fig, "get_suptitle") else ""
    if text:
        return " ".join(text.split())
    titles = list(dict.fromkeys(ax.get_title().strip().splitlines()[0] for ax in fig.axes if ax.get_title().strip()))
    return "; ".join(titles) if titles else None


def _renderer(fig):
    """``fig``'s renderer, giving a closed figure (whose canvas is the bare base class) an Agg canvas again."""
    if not hasattr(fig.canvas, "get_renderer"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    return fig.canvas.get_renderer()


def drawn_texts(fig) -> list:
    """The text artists of ``fig`` that drawing it puts on the canvas (visible, non-empty, inside a shown axis):
    found by laying the figure out and recording each text the renderer is asked to draw."""
    renderer = _renderer(fig)
    drawn = {}

    def record(*args, mtext=None, **kwargs):
        if mtext is not None and mtext.get_text().strip() and mtext.get_alpha() != 0:
            drawn.setdefault(id(mtext), mtext)

    with renderer._draw_disabled():
        renderer.draw_text = renderer.draw_tex = record
        fig.draw(renderer)
    return list(drawn.values())


def smallest_text_pt(fig, texts: list | None = None) -> float | None:
    """The size of the smallest text drawn on ``fig``, in points (None without text); ``texts``: its
    :func:`drawn_texts` when the caller has them already."""
    sizes = [t.get_fontsize() for t in (drawn_texts(fig) if texts is None else texts)]
    return min(sizes) if sizes else None


def _outline(text, renderer) -> np.ndarray:
    """The corners of ``text``'s drawn box in display pixels ``[4, 2]``, turned with the text (the window extent
    of slanted text is the upright box around it, much larger than the text)."""
    box = text.get_window_extent(renderer)
    angle = text.get_rotation() % 90
    if angle == 0:
        return np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]])
    rotation = text.get_rotation()
    text.set_rotation(0)
    upright = text.get_window_extent(renderer)
    text.set_rotation(rotation)
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [upright.width / 2, upright.height / 2]
    turn = math.radians(rotation)
    matrix = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    return half @ matrix.T + [(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2]


def _overlap(first: np.ndarray, second: np.ndarray, margin: float = 1.0) -> bool:
    """Whether two convex outlines ``[corner, 2]`` overlap by more than ``margin`` pixels along every separating
    direction (the edges' normals)."""
    for outline in (first, second):
        for edge in np.diff(np.vstack([outline, outline[:1]]), axis=0):
            normal = np.array([-edge[1], edge[0]]) / (np.hypot(*edge) or 1.0)
            a, b = first @ normal, second @ normal
            if min(a.max(), b.max()) - max(a.min(), b.min()) <= margin:
                return False
    return True


def _groups(fig) -> dict[int, int]:
    """The id of each text of a legend or a table, mapped to that legend's or table's id: their texts are laid
    out by it and not compared with each other."""
    from matplotlib.legend import Legend
    from matplotlib.table import Table

    groups = {}
    for legend in fig.findobj(Legend):
        for text in [*legend.get_texts(), legend.get_title()]:
            groups[id(text)] = id(legend)
    for table in fig.findobj(Table):
        for cell in table.get_celld().values():
            groups[id(cell.get_text())] = id(table)
    return groups


def overlapping_text(fig, texts: list | None = None) -> list[str]:
    """Every pair of texts drawn on ``fig`` whose boxes overlap — titles, the suptitle, axis labels, tick labels
    (colour bars' too), legends, annotations — as ``"text | text"`` (empty when none do). Texts of one legend or
    one table are not compared with each other; text over lines or patches is not looked at. Lays the figure
    out first; ``texts``: its :func:`drawn_texts` when the caller has them already (and has laid it out)."""
    renderer = _renderer(fig)
    texts = drawn_texts(fig) if texts is None else texts
    if len(texts) < 2:
        return []
    groups = _groups(fig)
    outlines = [_outline(text, renderer) for text in texts]
    low, high = np.array([o.min(axis=0) for o in outlines]), np.array([o.max(axis=0) for o in outlines])
    # candidate pairs: upright boxes overlapping by more than a pixel each way
    crossing = (np.minimum(high[:, None], high[None]) - np.maximum(low[:, None], low[None]) > 1).all(axis=2)
    found = []
    for i, j in zip(*np.nonzero(np.triu(crossing, 1))):
        same = groups.get(id(texts[i])) is not None and groups.get(id(texts[i])) == groups.get(id(texts[j]))
        if not same and _overlap(outlines[i], outlines[j]):
            found.append(f"{_short(texts[i])} | {_short(texts[j])}")
    return found


def _short(text, limit: int = 60) -> str:
    line = " ".join(text.get_text().split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


SEPARATORS = (": ", "; ", " — ", ", ", " (")
"""Where a long title is broken first, in order of preference, when the break falls in the line's last half."""


def _width(renderer, text, line: str) -> float:
    clean, ismath = text._preprocess_math(line)
    return renderer.get_text_width_height_descent(clean, text.get_fontproperties(), ismath=ismath)[0]


def wrap_text(text, renderer, width: float) -> bool:
    """Break each line of ``text`` wider than ``width`` display pixels into lines that fit, between words (a
    ``$…$`` span kept whole), preferring a break after a separator (:data:`SEPARATORS`) in the line's last half.
    Returns whether it changed the text."""
    import re

    lines = []
    for line in text.get_text().split("\n"):
        words = re.findall(r"\S*\$[^$]*\$\S*|\S+", line)
        while words:
            fit = 1
            while fit < len(words) and _width(renderer, text, " ".join(words[: fit + 1])) <= width:
                fit += 1
            if fit < len(words):
                for separator in SEPARATORS:
                    ends = [k for k in range(max(1, fit // 2), fit + 1) if (" ".join(words[:k]) + " ").endswith(separator)
                            or (separator == " (" and k < len(words) and words[k].startswith("("))]  # fmt: skip
                    if ends:
                        fit = ends[-1]
                        break
            lines.append(" ".join(words[:fit]))
            words = words[fit:]
        if not line.split():
            lines.append(line)
    wrapped = "\n".join(lines)
    if wrapped != text.get_text():
        text.set_text(wrapped)
        return True
    return False


def _wrap_titles(fig, renderer) -> bool:
    """Wrap the suptitle to the figure's width, each axes' title and x label to its axes' width (a colour bar's
    to its label's room). Returns whether any text changed."""
    changed = False
    if fig._suptitle is not None and fig._suptitle.get_text():
        changed |= wrap_text(fig._suptitle, renderer, 0.98 * fig.bbox.width)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        room = max(ax.bbox.width, 0.25 * fig.bbox.width)
        for title in (ax.title, ax._left_title, ax._right_title):
            if title.get_text():
                changed |= wrap_text(title, renderer, 1.04 * room)
        if ax.xaxis.label.get_text() and ax.xaxis.label.get_rotation() == 0:
            changed |= wrap_text(ax.xaxis.label, renderer, 1.1 * room)
    return changed


def _padding() -> float:
    """The inches savefig adds around a figure's tight box, both sides together."""
    import matplotlib

    return 2 * matplotlib.rcParams["savefig.pad_inches"]


def fit_page(fig) -> list:
    """Raise text of ``fig`` under :data:`MIN_TEXT_PT` to it; scale ``fig`` down (text kept at its size) until its
    tight box is at most :data:`PAGE_INCHES` wide, re-laying it out (constrained layout) and wrapping titles and
    x labels wider than their room. Leaves ``fig`` laid out at the size it ends with; returns the texts its last
    layout drew (:func:`drawn_texts`)."""
    size = fig.get_size_inches()
    if size[0] > PAGE_INCHES:  # a constrained layout's tight box is about the figure: start at the page's width
        fig.set_size_inches(size * (PAGE_INCHES - _padding()) / size[0])
    texts = drawn_texts(fig)  # drawing them lays it out
    small = [text for text in texts if text.get_fontsize() < MIN_TEXT_PT]
    for text in small:
        text.set_fontsize(MIN_TEXT_PT)
    renderer = _renderer(fig)
    laid_out = not small
    for _ in range(6):  # the layout moves as the figure shrinks and titles wrap: a few rounds settle it
        if not laid_out:
            texts = drawn_texts(fig)
        laid_out = False
        if _wrap_titles(fig, renderer):
            texts = drawn_texts(fig)
        width = fig.get_tightbbox(renderer).width + _padding()
        if width <= PAGE_INCHES:
            return texts  # wrapping moves text down, never sideways: what fits stays fitting
        fig.set_size_inches(fig.get_size_inches() * (PAGE_INCHES / width) * 0.995)
    return drawn_texts(fig)  # rounds used up: lay it out at the size it ends with


def text_checks(fig, texts: list | None = None) -> dict[str, str]:
    """The smallest text size and the overlapping texts of a laid-out ``fig``, as a PNG's metadata holds them
    (one drawing of the figure for both; none with ``texts``, its :func:`drawn_texts` in the layout it keeps)."""
    texts = drawn_texts(fig) if texts is None else texts
    smallest = smallest_text_pt(fig, texts)
    return {SMALLEST_TEXT_KEY: f"{smallest:g}" if smallest else "", OVERLAPS_KEY: "\n".join(overlapping_text(fig, texts))}


def freeze_layout(fig, texts: list | None = None) -> tuple:
    """Keep the layout of ``fig`` (laid out once more first when an axes has a fixed aspect): later draws — each
    file written — skip the layout engine. Returns the figure's tight box (a matplotlib ``Bbox``, inches) padded
    by savefig's ``pad_inches``, to save every file with instead of measuring it per file, and the texts drawn
    in the layout kept (:func:`drawn_texts`; ``texts``: those of the last layout, where none is drawn here):
    the files draw the same texts at the same places, so :func:`text_checks` reads them without drawing again."""
    import matplotlib

    if any(ax.get_aspect() != "auto" or ax.get_box_aspect() is not None for ax in fig.axes):
        texts = drawn_texts(fig)  # constrained layout settles in two passes where axes keep their shape (images)
    # No engine at all (savefig lays out and draws once more for any engine); set_layout_engine(None) would fall
    # back to an engine the rcParams name, hence the context.
    with matplotlib.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)
    if texts is None:
        texts = drawn_texts(fig)
    return fig.get_tightbbox(_renderer(fig)).padded(matplotlib.rcParams["savefig.pad_inches"]), texts


def save_figure(fig, folder: str | Path, stem: str) -> list[Path]:
    """Save a matplotlib figure as ``stem.png`` and ``stem.svg`` in ``folder`` (atomically), fitted to a report
    page (:func:`fit_page`); close it. Its title in one line (:func:`figure_title`) goes into both files' metadata (the SVG's
    ``<title>``): a report's caption of the figure; the PNG's also holds the smallest text size and the texts
    that overlap (:func:`text_checks`). The layout is made once (:func:`freeze_layout`) and both files are cut
    to the same tight box."""
    import matplotlib
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    title = figure_title(fig)  # before fitting, which may wrap the title's first line
    box, texts = freeze_layout(fig, fit_page(fig))
    metadata = {"Title": title} if title else {}
    measured = text_checks(fig, texts)
    svg = {"metadata": {**metadata, "Date": None}}  # no date, and ids from a fixed salt: the same figure, the same bytes
    for suffix, kwargs in ((".png", {"dpi": PIXELS_PER_INCH, "metadata": {**metadata, **measured}}), (".svg", svg)):
        path = folder / f"{stem}{suffix}"
        with matplotlib.rc_context({"svg.hashsalt": "nrecur"}):
            atomic_write(path, lambda handle, fmt=suffix[1:], kw=kwargs: fig.savefig(handle, format=fmt, bbox_inches=box, **kw))
        paths.append(path)
    plt.close(fig)
    return paths
