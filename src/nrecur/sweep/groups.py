"""The unit of work a backend hands to a worker: a group of trials, and how a group is trained.

Backends only ever call ``GROUP_RUNNERS[name](group, sweep)`` in a worker.
``auto`` (the default) is resolved before that, by :func:`resolve_runner`, to
the runner measured faster for the trials: on a GPU, or on a CPU for small
steps (:data:`CPU_ENSEMBLE_MAX_WORK`), ``ensemble``.
``one-by-one`` trains a group's trials one after the other,
each in its own run folder (:func:`~nrecur.sweep.trial.run_trial`).
``ensemble`` trains same-shape trials at once with
:func:`nrecur.train.ensemble.train_ensemble` (stacked parameters, ``vmap``):
``group_trials(trials, by_shape=True)`` puts trials with the same
:func:`shape_key` (model, batch size, device, AdamW, no interventions) in groups of at
most ``max_size``; the runner trains the group's fresh trials together into
ordinary run folders and records each from its folder, while trials that had
started before (a killed sweep) resume alone, as any trial does. An ensemble
that fails is never hidden: its members that did not end train alone, and each
one's record (``note``), the sweep's line for it and its closing summary say
that the ensemble failed and why. Another way to train a group is a function
registered with :func:`register_group_runner`.
"""

from __future__ import annotations

import contextlib
import json
import traceback
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
    alone = "" if can_ensemble([trial.config]) else trial.trial_id
    return json.dumps([trial.config.model.model_dump(mode="json"), train.sequences_per_step, train.device, alone])


def group_trials(trials: list[Trial], by_shape: bool = False, max_size: int = 16, workers: int = 1) -> list[TrialGroup]:
    """One group per trial, or (``by_shape``) groups of at most ``max_size`` trials with the same :func:`shape_key`,
    in the order of first appearance; while there are fewer groups than ``workers``, the largest group of four
    or more trials is halved (an idle worker would cost more than a smaller ensemble)."""
    if not by_shape:
        return [TrialGroup((trial,)) for trial in trials]
    shapes: dict[str, list[Trial]] = {}
    for trial in trials:
        shapes.setdefault(shape_key(trial), []).append(trial)
    groups = [members[i : i + max_size] for members in shapes.values() for i in range(0, len(members), max_size)]
    while len(groups) < workers:
        largest = max(range(len(groups)), key=lambda index: len(groups[index]), default=None)
        if largest is None or len(groups[largest]) < 4:
            break
        members = groups[largest]
        groups[largest : largest + 1] = [members[: len(members) // 2], members[len(members) // 2 :]]
    return [TrialGroup(tuple(members)) for members in groups]


def step_work(trial: Trial) -> float:
    """Rough multiply-adds of one training step of a trial: sequences per step × positions × the model's
    multiply-adds per position (forward; backward passes and per-operation overheads left out)."""
    model = trial.config.model
    per_layer = model.d_model * 4 * model.d_attn + 2 * model.d_model * model.d_mlp + 2 * model.n_ctx * model.d_attn
    return float(trial.config.train.sequences_per_step * model.n_ctx * (model.n_layers * per_layer + model.d_model * model.vocab_size))


def training_work(trial: Trial) -> float:
    """:func:`step_work` times the trial's steps: only used to order work."""
    return step_work(trial) * trial.config.train.steps


def longest_first(groups: list[TrialGroup]) -> list[TrialGroup]:
    """``groups`` with the most work (:func:`training_work`) first, ties in their order: workers that take the
    next group as they free up then end closer together (the longest-processing-time rule). The local backend
    hands groups out in this order; Ray starts its tasks roughly in the order they are submitted, so there the
    large trials also tend to reach ASHA's rungs first."""
    return sorted(groups, key=lambda group: -sum(training_work(trial) for trial in group.trials))


def run_one_by_one(group: TrialGroup, sweep: SweepDir) -> list[TrialRecord]:
    """Train the group's trials one after the other."""
    return [run_trial(trial, sweep) for trial in group.trials]


def run_as_ensemble(group: TrialGroup, sweep: SweepDir) -> list[TrialRecord]:
    """Train the group's fresh trials at once (``train_ensemble``); recorded or started ones go one by one, and
    so do the members of an ensemble that failed, each record noting the failure (see the module docstring)."""
    from nrecur.train.ensemble import can_ensemble, train_ensemble

    fresh = [t for t in group.trials if sweep.read_record(t.trial_id) is None and not RunFolder(sweep.run_dir(t.trial_id)).is_run()]
    if len(fresh) < 2 or not can_ensemble([t.config for t in fresh]):
        return run_one_by_one(group, sweep)
    records: dict[str, TrialRecord] = {}
    note: str | None = None
    with contextlib.ExitStack() as stack:
        for trial in sorted(fresh, key=lambda t: t.trial_id):  # one order: two processes never wait on each other
            stack.enter_context(sweep.lock(trial.trial_id))
        folders = [RunFolder(sweep.run_dir(t.trial_id)) for t in fresh]
        if not any(sweep.read_record(t.trial_id) is not None or f.is_run() for t, f in zip(fresh, folders)):
            for trial in fresh:
                sweep.log_attempt(trial.trial_id, 0)
            try:
                train_ensemble([t.config for t in fresh], [f.path for f in folders], overwrite=True)
            except Exception as error:  # noqa: BLE001 - the members go on alone; the note says why
                note = f"trained alone: the ensemble of {len(fresh)} failed ({error_line(error)})"
            for trial, folder in zip(fresh, folders):
                record = ended_record(trial, folder)
                if record is not None:
                    sweep.write_record(record)
                    records[trial.trial_id] = record
        # else another process got there first: every trial goes alone below, its lock taken again there
    # The locks are let go first. Alone: members that did not end (a failed ensemble) and trials started before.
    noted = {trial.trial_id for trial in fresh} if note is not None else set()
    for trial in group.trials:
        if trial.trial_id not in records:
            records[trial.trial_id] = run_trial(trial, sweep, note=note if trial.trial_id in noted else None)
    return [records[t.trial_id] for t in group.trials]


def error_line(error: BaseException) -> str:
    """``"ValueError: message (at ensemble.py:123)"``: an exception and where it was raised, on one line."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}".replace("\n", " ")


GROUP_RUNNERS: dict[str, Callable[[TrialGroup, SweepDir], list[TrialRecord]]] = {
    "one-by-one": run_one_by_one,
    "ensemble": run_as_ensemble,
}
"""How a group is trained, by name (the sweep's ``--group-runner``); a runner returns one record per trial."""

GROUPS_BY_SHAPE: dict[str, bool] = {"one-by-one": False, "ensemble": True}
"""Whether a runner wants same-shape trials grouped."""


@dataclass(frozen=True)
class RunnerChoice:
    """What ``auto`` picks in one situation, and the measurement behind it (said in the sweep's log)."""

    runner: str
    why: str


CPU_ENSEMBLE_MAX_WORK = 6e7
"""Multiply-adds per training step (:func:`step_work`) up to which ``auto`` trains same-shape trials at once on
a CPU: on 2 cores, 16 default models (d_model 64, 2 layers, context 32) trained faster at once than one by
one at batch 16 (5.5e7 per step) and slower at batch 64 (2.2e8), and sweeps of small trials faster with the
ensemble runner (``benchmarks/bench_ensemble.py`` and ``benchmarks/bench_sweep.py`` measure both)."""


def _work_text(work: float) -> str:
    return f"{work:.0e}".replace("e+0", "e")  # 6e7


AUTO_CHOICES: dict[str, RunnerChoice] = {
    "cuda": RunnerChoice("ensemble", "on a GPU (an H100), 16 same-shape models trained at once measured 10× a one-by-one loop"),
    "cpu, small steps": RunnerChoice(
        "ensemble",
        f"on a CPU, trials of at most {_work_text(CPU_ENSEMBLE_MAX_WORK)} multiply-adds per step measured faster trained at once "
        "(2 cores: 16 models at batch 16 1.49–1.74× a one-by-one loop, a sweep of small trials 1.14–1.35× one by one)",
    ),
    "nothing to group": RunnerChoice(
        "one-by-one",
        "no two trials can train at once: that needs the same model, batch size and device, AdamW and no interventions",
    ),
    "cpu": RunnerChoice(
        "one-by-one",
        f"on a CPU, trials of more than {_work_text(CPU_ENSEMBLE_MAX_WORK)} multiply-adds per step measured faster one by one "
        "(2 cores: 16 models at batch 64 trained at once were 0.86× as fast)",
    ),
}
"""The situations ``auto`` tells apart (:func:`resolve_runner`) → its choice."""


STUDY_RUNNER = "one-by-one"
"""The group runner of the study commands (``nrecur study`` and the study functions): their stored tables were
trained one by one, and an ensemble agrees with a lone run to float rounding only, so a rerun with ``auto``
could differ from them in the last digits."""


def trial_device(trial: Trial) -> str:
    """The device type a trial trains on (``auto`` resolved on this machine): ``cpu`` or ``cuda``."""
    import torch

    wanted = trial.config.train.device
    return ("cuda" if torch.cuda.is_available() else "cpu") if wanted == "auto" else wanted.split(":")[0]


def resolve_runner(runner: str, trials: list[Trial]) -> tuple[str, str]:
    """``runner``, or for ``auto`` the runner measured faster for the trials (``ensemble`` when some trials can
    train together and every trial trains on CUDA, or on a CPU with a small step, see
    :data:`CPU_ENSEMBLE_MAX_WORK`; else ``one-by-one``), with the reason in words ("" when no choice was made)."""
    if runner != "auto":
        return runner, ""
    if not trials:
        return "one-by-one", ""
    if all(len(group.trials) < 2 for group in group_trials(trials, by_shape=True)):
        choice = AUTO_CHOICES["nothing to group"]
    elif all(trial_device(trial) == "cuda" for trial in trials):
        choice = AUTO_CHOICES["cuda"]
    elif all(step_work(trial) <= CPU_ENSEMBLE_MAX_WORK for trial in trials):
        choice = AUTO_CHOICES["cpu, small steps"]
    else:
        choice = AUTO_CHOICES["cpu"]
    return choice.runner, f"{choice.runner} ({choice.why})"


def register_group_runner(name: str, runner: Callable[[TrialGroup, SweepDir], list[TrialRecord]], by_shape: bool) -> None:
    """Make ``runner`` available as ``--group-runner name`` (a name other than ``auto``)."""
    if name == "auto":
        raise ValueError("'auto' is the name of the runner choice, not of a runner")
    GROUP_RUNNERS[name] = runner
    GROUPS_BY_SHAPE[name] = by_shape
