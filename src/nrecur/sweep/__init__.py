"""Sweeps: one spec file, a grid of training runs, one results table and its plots.

``run_sweep(load_spec("grid.toml"), "sweeps/grid")`` (``nrecur sweep grid.toml
--out sweeps/grid``) trains every trial in its own run folder, on worker
processes (``local``) or a Ray cluster (``ray``), resumably; ``load_sweep(DIR)``
returns the table as a pandas DataFrame, and ``plot_metric`` draws any metric
over two axes (median over seeds, spread annotated). See :mod:`nrecur.sweep.spec`
for the spec, :mod:`nrecur.sweep.store` for the folder.
"""

from nrecur.sweep.expand import Trial, expand
from nrecur.sweep.groups import GROUP_RUNNERS, STUDY_RUNNER, TrialGroup, group_trials, register_group_runner
from nrecur.sweep.runner import BACKENDS, BackendOptions, Plan, SweepResult, check_options, plan_groups, run_sweep, study_options
from nrecur.sweep.spec import SweepSpec, load_spec, spec_from_data
from nrecur.sweep.store import SweepDir, TrialRecord, load_sweep
from nrecur.sweep.trial import run_trial

__all__ = [
    "BACKENDS",
    "BackendOptions",
    "GROUP_RUNNERS",
    "Plan",
    "STUDY_RUNNER",
    "SweepDir",
    "SweepResult",
    "SweepSpec",
    "Trial",
    "TrialGroup",
    "TrialRecord",
    "expand",
    "check_options",
    "group_trials",
    "load_spec",
    "load_sweep",
    "plan_groups",
    "register_group_runner",
    "run_sweep",
    "run_trial",
    "spec_from_data",
    "study_options",
]
