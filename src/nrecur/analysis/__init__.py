"""Analyses that open a trained model up and compare it with the exact observer (SPEC §5).

One module per method, each written in the contract of :mod:`nrecur.analysis.contract` and registered
in :data:`ANALYSES` (``nrecur analyze --what NAME``); :func:`analyze` runs them (the CLI, the jobs and
the studies call it), :func:`compute` gives one result without writing it. Figures are drawn by
:mod:`nrecur.analysis.figures`.
"""

from nrecur.analysis.contract import ANALYSES, Analysis, OptionError, Options, Result, initial_model
from nrecur.analysis.driver import Outcome, OverTraining, analyze, compute, over_checkpoints, read_result, write_result

# Registration order is the order of ``--what all`` and of the report's sections.
from nrecur.analysis.probes import ProbeResult, probes
from nrecur.analysis.geometry import GeometryOptions, GeometryResult
from nrecur.analysis.updates import updates
from nrecur.analysis.failure import failure
from nrecur.analysis.heads import heads
from nrecur.analysis.progress import progress
from nrecur.analysis.patching import PatchingResult, patching
from nrecur.analysis.prior import PriorResult, prior
from nrecur.analysis.edit import EditResult, edit, edit_belief

__all__ = [
    "ANALYSES", "Analysis", "EditResult", "GeometryOptions", "GeometryResult", "OptionError", "Options", "Outcome", "OverTraining",
    "PatchingResult", "PriorResult", "ProbeResult", "Result", "analyze", "compute", "edit", "edit_belief", "failure", "heads",
    "initial_model", "over_checkpoints", "patching", "prior", "probes", "progress", "read_result", "updates", "write_result",
]  # fmt: skip
