"""The unit of work a backend hands to a worker: a group of trials, and how a group is trained.

Backends only ever call ``GROUP_RUNNERS[name](group, sweep)`` in a worker.
``auto`` (the default) is resolved before that, by :func:`resolve_runner`, to
the runner measured faster on the trials' device (:data:`AUTO_RUNNER`).
``one-by-one`` trains a group's trials one after the other,
each in its own run folder (:func:`~nrecur.sweep.trial.run_trial`).
``ensemble`` trains same-shape trials at once with
:func:`nrecur.train.ensemble.train_ensemble` (stacked parameters, ``vmap``):
``group_trials(trials, by_shape=True)`` puts trials with the same
:func:`shape_key` (model, batch size, device, AdamW, no interventions) in groups of at
most ``max_size``; the runner trains the group's fresh trials together into
ordinary run folders and records each from its folder, while trials that had
started before (a killed sweep) resume alone, as any trial does. Another way to
train a group is a function registered with :func:`register_group_runner`.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Callable

from nrecur.sweep.expand import Trial
from nrecur.sweep.store import SweepDir, TrialRecord
from nrecur.sweep.trial import ended_record, run_trial
from nrecur.train.folder import RunFolder

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
    """What trials trained together share: the model, the sequences per step, the device, AdamW and no
    interventions (as :func:`nrecur.train.ensemble.can_ensemble` asks; seeds, optimizer settings, schedule and
    task may differ). A trial with interventions or Muon is a group of its own."""
    from nrecur.train.ensemble import can_ensemble

    train = trial.config.train
    batch = min(train.batch_size, train.train_size) if train.mode == "finite" else train.batch_size
    alone = "" if can_ensemble([trial.config]) else trial.trial_id
    return json.dumps([trial.config.model.model_dump(mode="json"), batch, train.device, alone])


def group_trials(trials: list[Trial], by_shape: bool = False, max_size: int = 16) -> list[TrialGroup]:
    """One group per trial, or (``by_shape``) groups of at most ``max_size`` trials with the same :func:`shape_key`,
    in the order of first appearance."""
    if not by_shape:
        return [TrialGroup((trial,)) for trial in trials]
    groups: dict[str, list[Trial]] = {}
    for trial in trials:
        groups.setdefault(shape_key(trial), []).append(trial)
    return [TrialGroup(tuple(members[i : i + max_size])) for members in groups.values() for i in range(0, len(members), max_size)]


def run_one_by_one(group: TrialGroup, sweep: SweepDir) -> list[TrialRecord]:
    """Train the group's trials one after the other."""
    return [run_trial(trial, sweep) for trial in group.trials]


def run_as_ensemble(group: TrialGroup, sweep: SweepDir) -> list[TrialRecord]:
    """Train the group's fresh trials at once (``train_ensemble``); recorded or started ones go one by one."""
    from nrecur.train.ensemble import can_ensemble, train_ensemble

    fresh = [t for t in group.trials if sweep.read_record(t.trial_id) is None and not RunFolder(sweep.run_dir(t.trial_id)).is_run()]
    if len(fresh) < 2 or not can_ensemble([t.config for t in fresh]):
        return run_one_by_one(group, sweep)
    with contextlib.ExitStack() as stack:
        for trial in sorted(fresh, key=lambda t: t.trial_id):  # one order: two processes never wait on each other
            stack.enter_context(sweep.lock(trial.trial_id))
        folders = [RunFolder(sweep.run_dir(t.trial_id)) for t in fresh]
        if any(sweep.read_record(t.trial_id) is not None or f.is_run() for t, f in zip(fresh, folders)):
            return run_one_by_one(group, sweep)  # another process got there first
        for trial in fresh:
            sweep.log_attempt(trial.trial_id, 0)
        try:
            train_ensemble([t.config for t in fresh], [f.path for f in folders], overwrite=True)
        except Exception:  # noqa: BLE001 - the members resume (or fail) alone, each with its own reason
            pass
        records = {}
        for trial, folder in zip(fresh, folders):
            record = ended_record(trial, folder)
            if record is not None:
                sweep.write_record(record)
                records[trial.trial_id] = record
    # members that did not end (the ensemble failed) and the trials that had started before, alone
    rest = run_one_by_one(TrialGroup(tuple(t for t in group.trials if t.trial_id not in records)), sweep)
    records.update({record.trial_id: record for record in rest})
    return [records[t.trial_id] for t in group.trials]


GROUP_RUNNERS: dict[str, Callable[[TrialGroup, SweepDir], list[TrialRecord]]] = {
    "one-by-one": run_one_by_one,
    "ensemble": run_as_ensemble,
}
"""How a group is trained, by name (the sweep's ``--group-runner``); a runner returns one record per trial."""

GROUPS_BY_SHAPE: dict[str, bool] = {"one-by-one": False, "ensemble": True}
"""Whether a runner wants same-shape trials grouped."""


AUTO_RUNNER: dict[str, tuple[str, str]] = {
    "cuda": ("ensemble", "on a GPU (an H100), 16 same-shape models trained at once measured 10× a one-by-one loop"),
    "cpu": (
        "one-by-one",
        "on 2 CPU cores a sweep of 24 small trials ran at 0.92–0.96× the speed with the ensemble runner "
        "as with one trial per worker process",
    ),
}
"""Device type → the runner ``auto`` picks and the measurement behind it (README, *Many models at once*)."""


def resolve_runner(runner: str, trials: list[Trial]) -> tuple[str, str]:
    """``runner``, or for ``auto`` the runner :data:`AUTO_RUNNER` gives the trials' device (``ensemble`` only
    when every trial trains on CUDA), with the reason in words ("" when no choice was made)."""
    if runner != "auto":
        return runner, ""
    import torch

    def device(trial: Trial) -> str:
        wanted = trial.config.train.device
        return ("cuda" if torch.cuda.is_available() else "cpu") if wanted == "auto" else wanted.split(":")[0]

    kind = "cuda" if trials and all(device(trial) == "cuda" for trial in trials) else "cpu"
    chosen, why = AUTO_RUNNER[kind]
    return chosen, f"{chosen} ({why})"


def register_group_runner(name: str, runner: Callable[[TrialGroup, SweepDir], list[TrialRecord]], by_shape: bool) -> None:
    """Make ``runner`` available as ``--group-runner name`` (a name other than ``auto``)."""
    if name == "auto":
        raise ValueError("'auto' is the name of the runner choice, not of a runner")
    GROUP_RUNNERS[name] = runner
    GROUPS_BY_SHAPE[name] = by_shape
