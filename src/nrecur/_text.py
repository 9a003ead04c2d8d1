"""Numbers as people read them in nrecur's lines and pages: run times in seconds."""

from __future__ import annotations

import math

__all__ = ["seconds_text"]


def seconds_text(seconds: float | None) -> str:
    """Whole seconds, with a tenth below 10 s (a run of a few seconds is not rounded to whole seconds); a
    missing or non-finite time as an em dash."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    return f"{seconds:.1f}" if round(seconds, 1) < 10 else str(round(seconds))
