"""The KL-threshold names, and the ``grok`` names that older files and specs still hold.

*Grokking* means generalizing after memorizing (the grokking study, Grokfast,
``grok_delay``). Reaching the evaluation KL threshold is *converging at the
threshold*: the config field ``stop_at_threshold``, the record fields
``threshold_step`` and ``threshold_seconds`` (summaries, checkpoints), the stop
reason ``"threshold"``. A run folder, sweep record or spec written with the
``grok`` names loads under these; the first one a process reads issues one
``FutureWarning`` that names the old and the new names, and no other does
(however many files, rows or checkpoints hold old names).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

__all__ = [
    "RENAMED_RECORD_FIELDS",
    "RENAMED_STOP_REASONS",
    "RENAMED_TRAIN_FIELDS",
    "renamed_fields",
    "renamed_record",
    "renamed_stop_reason",
    "warn_old_names",
]

RENAMED_TRAIN_FIELDS: dict[str, str] = {"stop_when_grokked": "stop_at_threshold"}
"""Old name → name of a :class:`~nrecur.train.config.TrainConfig` field."""

RENAMED_RECORD_FIELDS: dict[str, str] = {"grok_step": "threshold_step", "grok_seconds": "threshold_seconds"}
"""Old name → name of a field of ``summary.json`` and of the evaluator's checkpoint state."""

RENAMED_STOP_REASONS: dict[str, str] = {"grokked": "threshold"}
"""Old stop reason → the trainer's stop reason."""

OLD_NAMES_MESSAGE = (
    "read old names as the new ones: stop_when_grokked is stop_at_threshold, grok_step is threshold_step, "
    "grok_seconds is threshold_seconds and the stop reason 'grokked' is 'threshold' ('grok' means memorized, "
    "then generalized); write the new names in specs and code"
)


_WARNED: set[str] = set()
"""Messages this process has issued. Kept here, not left to Python's once-per-location registry, which every
``warnings.catch_warnings`` block (in nrecur or a library) resets."""


def warn_old_names() -> None:
    """Issue the one warning about old names, the first time this process reads one."""
    if OLD_NAMES_MESSAGE not in _WARNED:
        _WARNED.add(OLD_NAMES_MESSAGE)
        warnings.warn(OLD_NAMES_MESSAGE, FutureWarning, stacklevel=3)


def renamed_fields(data: Mapping, renames: Mapping[str, str], where: str = "") -> dict:
    """``data`` with each old key of ``renames`` under its new name (warning once when there was one).

    Both names with different values raise ValueError naming both (``where`` prefixes the names)."""
    found = [old for old in renames if old in data]
    if not found:
        return dict(data)
    out = dict(data)
    for old in found:
        new = renames[old]
        value = out.pop(old)
        if new in out and out[new] != value:
            raise ValueError(
                f"{where}{old} is the old name of {where}{new}, and they disagree ({value!r} and {out[new]!r}); "
                f"give only {where}{new}"
            )
        out[new] = value
    warn_old_names()
    return out


def renamed_stop_reason(reason: str | None) -> str | None:
    """A stop reason under its current name (warning once when it was an old one)."""
    if reason in RENAMED_STOP_REASONS:
        warn_old_names()
        return RENAMED_STOP_REASONS[reason]
    return reason


def renamed_record(data: Mapping) -> dict:
    """A summary or checkpoint state with the current field names and stop reason."""
    out = renamed_fields(data, RENAMED_RECORD_FIELDS)
    if "stop_reason" in out:
        out["stop_reason"] = renamed_stop_reason(out["stop_reason"])
    return out
