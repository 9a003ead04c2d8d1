"""The unit of work a backend hands to a worker: a group of trials, and how a group is trained.

Today every group holds one trial and is trained by :func:`run_one_by_one`.
The seam for training many same-shape models at once (``torch.func``,
``nrecur.train.ensemble``): trials whose configs differ only in seeds and
optimizer hyper-parameters share a :func:`shape_key`; ``group_trials(trials,
by_shape=True)`` puts them in one :class:`TrialGroup`, and a runner registered
in :data:`GROUP_RUNNERS` (e.g. ``"ensemble"``, calling ``train_ensemble`` on the
group's configs and run folders, then :func:`~nrecur.sweep.trial.record_from_folder`
for each) trains it. Backends only ever call ``GROUP_RUNNERS[name](group, sweep)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from nrecur.sweep.expand import Trial
from nrecur.sweep.store import SweepDir, TrialRecord
from nrecur.sweep.trial import run_trial

PER_MODEL_FIELDS = frozenset(
    {"init_seed", "data_seed", "lr", "weight_decay", "betas", "grokfast_lambda", "grokfast_alpha"}
)
"""Training fields that may differ inside one group (per-model values of a vectorized optimizer)."""


@dataclass(frozen=True)
class TrialGroup:
    """Trials trained together by one worker (one trial unless grouped by shape)."""

    trials: tuple[Trial, ...]

    @property
    def ids(self) -> list[str]:
        return [trial.trial_id for trial in self.trials]

    def describe(self) -> str:
        return ", ".join(trial.trial_id for trial in self.trials)


def shape_key(trial: Trial) -> str:
    """What trials trained together must share: the config without seeds and optimizer hyper-parameters."""
    data = trial.config.model_dump(mode="json")
    data["train"] = {key: value for key, value in data["train"].items() if key not in PER_MODEL_FIELDS}
    return json.dumps(data, sort_keys=True)


def group_trials(trials: list[Trial], by_shape: bool = False) -> list[TrialGroup]:
    """One group per trial, or (``by_shape``) one per :func:`shape_key`, in the order of first appearance."""
    if not by_shape:
        return [TrialGroup((trial,)) for trial in trials]
    groups: dict[str, list[Trial]] = {}
    for trial in trials:
        groups.setdefault(shape_key(trial), []).append(trial)
    return [TrialGroup(tuple(members)) for members in groups.values()]


def run_one_by_one(group: TrialGroup, sweep: SweepDir) -> list[TrialRecord]:
    """Train the group's trials one after the other."""
    return [run_trial(trial, sweep) for trial in group.trials]


GROUP_RUNNERS: dict[str, Callable[[TrialGroup, SweepDir], list[TrialRecord]]] = {"one-by-one": run_one_by_one}
"""How a group is trained, by name (the sweep's ``--group-runner``); a runner returns one record per trial."""

GROUPS_BY_SHAPE: dict[str, bool] = {"one-by-one": False}
"""Whether a runner wants same-shape trials grouped (an ensemble runner registers True)."""


def register_group_runner(name: str, runner: Callable[[TrialGroup, SweepDir], list[TrialRecord]], by_shape: bool) -> None:
    """Make ``runner`` available as ``--group-runner name``."""
    GROUP_RUNNERS[name] = runner
    GROUPS_BY_SHAPE[name] = by_shape
