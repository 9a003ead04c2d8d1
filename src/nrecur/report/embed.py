"""Figures inlined into a page as ``data:`` URIs, within a size budget.

A report must open offline and make no request of any kind, so every image is
carried in the page itself. An analysis writes each figure twice (PNG and
SVG); the smaller of the two goes in (an SVG is sharper, but a scatter of
thousands of points is megabytes of SVG and a fraction of that as PNG). SVGs
go through ``<img src="data:image/svg+xml;base64,…">`` rather than inline
``<svg>``, so the ids matplotlib gives glyphs and clip paths in one figure
cannot collide with another's. :class:`Budget` keeps the page under its size
limit: a figure that would pass it is replaced by a note and a link to its file.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Budget", "Image", "figure_image", "file_image"]

MIME = {".png": "image/png", ".svg": "image/svg+xml"}


@dataclass(frozen=True)
class Image:
    """One inlined figure (or the note that replaced it)."""

    title: str
    uri: str | None
    """``data:…;base64,…``; None when the figure was left out (see ``note``)."""
    link: str | None = None
    """Relative path of the figure's file, from the page."""
    note: str = ""

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
        return Image(title=title, uri=uri, link=link)


def file_image(stem: Path, budget: Budget, page_dir: Path, title: str | None = None) -> Image:
    """The smaller of ``stem.png`` and ``stem.svg`` that exists, inlined."""
    candidates = [stem.with_suffix(suffix) for suffix in (".png", ".svg") if stem.with_suffix(suffix).is_file()]
    if not candidates:
        return Image(title=title or stem.name, uri=None, note="figure file missing")
    path = min(candidates, key=lambda p: p.stat().st_size)
    link = os.path.relpath(path, page_dir)
    return budget.take(title or stem.name, path.read_bytes(), MIME[path.suffix], link)


def figure_image(fig, title: str, budget: Budget, fmt: str = "svg", dpi: int = 110, tight: bool = True) -> Image:
    """A matplotlib figure, rendered in memory and inlined (closed afterwards); ``tight=False`` keeps the
    figure's own size (frames of one slider must all be the same size)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, bbox_inches="tight" if tight else None, dpi=dpi, metadata={"Date": None} if fmt == "svg" else None)
    plt.close(fig)
    return budget.take(title, buffer.getvalue(), MIME[f".{fmt}"])
