"""A study spec: one TOML file naming a study and its options, so a study reruns with one command.

Example (``examples/studies/grokking_cpu.toml``)::

    study = "grokking"          # one of STUDIES
    workers = 2                 # worker processes (optional; default: one per CPU)
    sizes = [256, 512, 1024, 2048]
    decays = [0.0, 0.1, 0.3, 1.0]
    seeds = 2
    train = { steps = 5000 }

Every other key is a keyword argument of the study's function (``nrecur.studies``);
an unknown key or study fails before anything runs, naming it and the allowed ones.
"""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path
from typing import Any
from collections.abc import Callable

from nrecur.studies.faster_default import faster_default
from nrecur.studies.grokking import grokking_diagram
from nrecur.studies.icl_rate import icl_rate
from nrecur.studies.minimal_arch import minimal_arch
from nrecur.studies.modular_diversity import modular_diversity
from nrecur.studies.rule_diversity import rule_diversity
from nrecur.studies.variants import variants_study
from nrecur.sweep import BackendOptions
from nrecur.train.renames import RENAMED_TRAIN_FIELDS, renamed_fields

__all__ = ["STUDIES", "load_study", "run_study"]

STUDIES: dict[str, Callable[..., Any]] = {
    "minimal-arch": minimal_arch,
    "grokking": grokking_diagram,
    "icl-rate": icl_rate,
    "faster-default": faster_default,
    "modular-diversity": modular_diversity,
    "rule-diversity": rule_diversity,
    "variants": variants_study,
}
"""Study name → its function ``fn(out, **options, options=BackendOptions, report=...)``."""

RESERVED = ("out", "options", "report")


def load_study(path: str | Path) -> tuple[str, dict]:
    """``(study name, keyword options)`` from a study spec; checks the names against the study's function."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such study spec") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML ({error})") from None
    name = data.pop("study", None)
    if name not in STUDIES:
        raise ValueError(f"{path}: 'study' must be one of {', '.join(STUDIES)}, got {name!r}")
    allowed = [p for p in inspect.signature(STUDIES[name]).parameters if p not in RESERVED]
    for key in data:
        if key not in (*allowed, "workers"):
            raise ValueError(f"{path}: unknown option {key!r} of study {name!r}; it takes {', '.join([*allowed, 'workers'])}")
    if isinstance(data.get("train"), dict):  # the study merges it over its own train settings: new names only
        try:
            data["train"] = renamed_fields(data["train"], RENAMED_TRAIN_FIELDS, "train.")
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    return name, data


def run_study(path: str | Path, out: str | Path, report=print):
    """Run the study of spec ``path`` into the folder ``out``; returns the study's result."""
    name, options = load_study(path)
    workers = options.pop("workers", None)
    return STUDIES[name](out, **options, options=BackendOptions(workers=workers), report=report)
