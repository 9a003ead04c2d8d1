"""Figures inlined into a page as ``data:`` URIs, within a size budget.

A report must open offline and make no request of any kind, so every image is
carried in the page itself. An analysis writes each figure twice (PNG and
SVG); the smaller of the two goes in (an SVG is sharper, but a scatter of
thousands of points is megabytes of SVG and a fraction of that as PNG). SVGs
go through ``<img src="data:image/svg+xml;base64,…">`` rather than inline
``<svg>``, so the ids matplotlib gives glyphs and clip paths in one figure
cannot collide with another's. :class:`Budget` keeps the page under its size
limit: a figure that would pass it is replaced by a note and a link to its file.
A figure file is read only from inside the folder the page covers (``within``),
and every link is relative and URL-encoded (:func:`relative_link`), so a folder
named ``javascript:…`` or holding ``%`` or ``#`` is a path, never a scheme or a
fragment.

Every figure is shown at :data:`PIXELS_PER_INCH` CSS pixels per inch of the figure (its ``width``; a PNG
written at that resolution is shown pixel for pixel), so text of a given size in points renders at the same
size in every figure, PNG or SVG (:mod:`nrecur.analysis.figures.common` sizes figures and their text for it).
"""

from __future__ import annotations

import base64
import io
import os
import re
import struct
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from nrecur.analysis.figures.common import PIXELS_PER_INCH

__all__ = ["Budget", "Image", "figure_image", "file_image", "inches", "inside", "relative_link"]

MIME = {".png": "image/png", ".svg": "image/svg+xml"}


def inches(data: bytes, mime: str) -> float | None:
    """The width of a figure file in inches: a PNG's pixels over its resolution (its ``pHYs`` chunk), an SVG's
    ``width`` in points over 72; None when the file does not say."""
    if mime == "image/png":
        found = data.find(b"pHYs")
        if data[:8] != b"\x89PNG\r\n\x1a\n" or found < 0:
            return None
        width = struct.unpack(">I", data[16:20])[0]
        per_metre, unit = struct.unpack(">IB", data[found + 4 : found + 9])
        return width / (per_metre * 0.0254) if unit == 1 and per_metre else None
    head = re.search(rb'<svg[^>]*?\swidth="([0-9.]+)(pt|px)?"', data[:4000])
    if head is None:
        return None
    return float(head[1]) / (72 if head[2] in (b"pt", None) else 96)


@dataclass(frozen=True)
class Image:
    """One inlined figure (or the note that replaced it)."""

    title: str
    uri: str | None
    """``data:…;base64,…``; None when the figure was left out (see ``note``)."""
    link: str | None = None
    """Relative path of the figure's file, from the page."""
    note: str = ""
    width: int | None = None
    """CSS pixels the figure is shown at: :data:`PIXELS_PER_INCH` per inch of it (None: its own size)."""

    @property
    def size(self) -> int:
        return len(self.uri or "")


class Budget:
    """Bytes of inlined figures left for one page."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self, title: str, data: bytes, mime: str, link: str | None = None) -> Image:
        uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        if len(uri) > self.left:
            return Image(title=title, uri=None, link=link, note=f"left out to keep the page small ({len(uri) / 1e6:.1f} MB inlined)")
        self.left -= len(uri)
        size = inches(data, mime)
        return Image(title=title, uri=uri, link=link, width=round(size * PIXELS_PER_INCH) if size else None)


def relative_link(path: str | os.PathLike, page_dir: str | os.PathLike) -> str:
    """The link from a page in ``page_dir`` to ``path``: relative, each part URL-encoded (``a b/x.png`` →
    ``a%20b/x.png``; a ``:`` is encoded too, so no part reads as a scheme)."""
    return urllib.parse.quote(Path(os.path.relpath(path, page_dir)).as_posix(), safe="/")


def inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path``, resolved (``..`` and links followed), lies in the folder ``root`` (resolved too)."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


def file_image(stem: Path, budget: Budget, page_dir: Path, title: str | None = None, within: Path | None = None) -> Image:
    """The smaller of ``stem.png`` and ``stem.svg`` that exists, inlined; only files inside ``within`` (links
    followed; default ``page_dir``) are read."""
    root = page_dir if within is None else within
    # with_name, not with_suffix: a stem such as ``final_kl__by__model.d_model__train.lr`` keeps its last part.
    found = [path for path in (stem.with_name(stem.name + suffix) for suffix in (".png", ".svg")) if path.is_file()]
    candidates = [path for path in found if inside(path, root)]
    if not candidates:
        note = "figure file outside the folder, left out" if found else "figure file missing"
        return Image(title=title or stem.name, uri=None, note=note)
    path = min(candidates, key=lambda p: p.stat().st_size)
    return budget.take(title or stem.name, path.read_bytes(), MIME[path.suffix], relative_link(path, page_dir))


def figure_image(fig, title: str, budget: Budget, fmt: str = "svg", dpi: int = PIXELS_PER_INCH, tight: bool = True) -> Image:
    """A matplotlib figure, rendered in memory and inlined (closed afterwards); ``tight=False`` keeps the
    figure's own size (frames of one slider must all be the same size). A PNG's metadata holds its smallest
    text size and overlapping texts, as :func:`nrecur.analysis.figures.common.save_figure` writes them."""
    import matplotlib.pyplot as plt

    from nrecur.analysis.figures.common import fit_page, freeze_layout, text_checks

    box = texts = None
    if tight:
        box, texts = freeze_layout(fig, fit_page(fig))  # laid out once for the text checks and the file
    buffer = io.BytesIO()
    if fmt == "svg":
        metadata = {"Date": None}
    else:
        metadata = text_checks(fig, texts)
    fig.savefig(buffer, format=fmt, bbox_inches=box, dpi=dpi, metadata=metadata)
    plt.close(fig)
    return budget.take(title, buffer.getvalue(), MIME[f".{fmt}"])
