"""Analyses that open a trained model up and compare it with the exact observer (SPEC §5).

One module per method, each written in the contract of :mod:`nrecur.analysis.contract` and registered
in :data:`ANALYSES` (``nrecur analyze --what NAME``); :func:`analyze` runs them (the CLI, the jobs and
the studies call it), :func:`compute` gives one result without writing it. Figures are drawn by
:mod:`nrecur.analysis.figures`.
"""

from nrecur.analysis.contract import ANALYSES, Analysis, OptionError, Options, Result, initial_model
from nrecur.analysis.driver import Outcome, OverTraining, analyze, compute, over_checkpoints, read_result, write_result

# Importing each analysis module registers it; this order is the order of ``--what all`` and of the report.
from nrecur.analysis import probes, geometry, updates, failure, heads, progress, patching, prior, edit, strategy, causal  # noqa: E402, F401
from nrecur.analysis.edit import EditOptions, EditResult, edit_belief  # noqa: E402
from nrecur.analysis.failure import FailureComparison, FailureOptions, FailureResult, compare_failure  # noqa: E402
from nrecur.analysis.heads import HeadsOptions, HeadsResult  # noqa: E402
from nrecur.analysis.patching import PatchingOptions, PatchingResult  # noqa: E402
from nrecur.analysis.prior import PriorOptions, PriorResult  # noqa: E402
from nrecur.analysis.probes import ProbeResult, ProbesOptions  # noqa: E402
from nrecur.analysis.progress import ProgressOptions, ProgressResult  # noqa: E402
from nrecur.analysis.strategy import StrategyOptions, StrategyResult  # noqa: E402
from nrecur.analysis.updates import UpdatesOptions, UpdatesResult  # noqa: E402

__all__ = [
    "ANALYSES", "Analysis", "EditOptions", "EditResult", "FailureComparison", "FailureOptions", "FailureResult", "HeadsOptions", "HeadsResult", "OptionError", "Options", "Outcome", "OverTraining",
    "PatchingOptions", "PatchingResult", "PriorOptions", "PriorResult", "ProbeResult", "ProbesOptions", "ProgressOptions", "ProgressResult", "Result", "StrategyOptions", "StrategyResult", "UpdatesOptions", "UpdatesResult", "analyze", "compare_failure", "compute",
    "edit_belief", "initial_model", "over_checkpoints", "read_result", "write_result",
]  # fmt: skip
