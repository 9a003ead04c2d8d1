"""Run a sweep: expand and validate its trials, skip what is done, hand the rest to a backend, write the table.

``run_sweep(spec, "sweeps/x")`` is what ``nrecur sweep SPEC --out DIR`` calls.
Every trial's config is built and validated, and the backend found available,
before anything is written or run. The sweep then holds the folder's lock
until it ends (:meth:`~nrecur.sweep.store.SweepDir.writing`): a second sweep
over the same folder is refused at once, naming the first. The folder's
``trials.json`` and spec are replaced by this invocation's; trials with a record are never run again (``retry_failed``
runs failed and early-stopped ones again, resuming their run folders), the
others are handed to the backend (:data:`BACKENDS`: ``local``, ``ray``). The
table is rewritten as trials end (at most every few seconds) and at the end.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nrecur._text import seconds_text
from nrecur.sweep.expand import Trial, expand
from nrecur.sweep.groups import (
    GROUP_RUNNERS,
    GROUPS_BY_SHAPE,
    STUDY_RUNNER,
    TrialGroup,
    group_trials,
    longest_first,
    resolve_runner,
    trial_device,
)
from nrecur.sweep.local import available_cpus
from nrecur.sweep.spec import SweepSpec
from nrecur.sweep.store import SweepDir, TrialRecord


@dataclass(frozen=True)
class BackendOptions:
    """How a backend runs the trials."""

    workers: int | None = None
    """Local: worker processes (default: one per available CPU). Ray: ignored (Ray schedules by CPUs)."""
    threads: int = 1
    """Torch threads per trial."""
    runner: str = "auto"
    """How a group of trials is trained (:data:`nrecur.sweep.groups.GROUP_RUNNERS`), or ``auto``: the one measured
    faster for the trials' device and step size (:func:`nrecur.sweep.groups.resolve_runner`)."""
    address: str | None = None
    """Ray: the cluster to join (``auto``, ``ray://host:10001``, ``host:6379``); None starts a local Ray."""
    num_cpus: int | None = None
    """Ray, local instance only: CPUs it may use (default: all)."""
    asha_grace: int | None = None
    """Ray: stop hopeless trials with ASHA on eval KL, after at least this many evaluations; None: no early stopping."""


def _run_local(groups: list[TrialGroup], sweep: SweepDir, on_done, options: BackendOptions) -> None:
    from nrecur.sweep.local import run_local

    run_local(groups, sweep, on_done, workers=options.workers, threads=options.threads, runner=options.runner)


def _run_ray(groups: list[TrialGroup], sweep: SweepDir, on_done, options: BackendOptions) -> None:
    from nrecur.sweep.ray_backend import run_ray

    run_ray(groups, sweep, on_done, options)


BACKENDS: dict[str, Callable[[list[TrialGroup], SweepDir, Callable[[TrialRecord], None], BackendOptions], None]] = {
    "local": _run_local,
    "ray": _run_ray,
}
"""Backend name → ``run(groups, sweep, on_done, options)``: trains every group, calls ``on_done`` per trial record."""

BACKEND_NEEDS: dict[str, tuple[str, str]] = {"ray": ("ray", "pip install 'nrecur[ray]'")}
"""Backend name → the package it imports and how to install it (checked before anything is written)."""


def backend_missing(backend: str) -> str | None:
    """Why ``backend`` cannot run here (its package is not installed), or None."""
    need = BACKEND_NEEDS.get(backend)
    if need is None or importlib.util.find_spec(need[0]) is not None:
        return None
    return f"--backend {backend} needs {need[0]}, which is not installed: {need[1]}"


@dataclass(frozen=True)
class SweepResult:
    """What a sweep invocation did; the table is ``load_sweep(path)``."""

    path: Path
    trials: int
    """Trials of the spec."""
    already_done: int
    """Trials recorded before this invocation (not run again)."""
    ran: int
    """Trials that ended in this invocation."""
    seconds: float
    status_counts: dict[str, int] = field(default_factory=dict)
    """Status → number of trials in the table."""
    notes: dict[str, int] = field(default_factory=dict)
    """Each note of the trials that ended now (a fallback and its reason) → how many trials have it."""

    def describe(self) -> str:
        counts = ", ".join(f"{count} {status}" for status, count in self.status_counts.items())
        text = (
            f"{self.trials} trials ({counts}); {self.ran} ran now, {self.already_done} were done before; "
            f"{self.seconds:.1f} s; table: {self.path / 'results.parquet'} (and .csv)"
        )
        for note, count in self.notes.items():
            text += f"\n{count} {'trial' if count == 1 else 'trials'}: {note}"
        return text


@dataclass(frozen=True)
class Plan:
    """How a sweep's trials will train: the group runner (``auto`` resolved), why, and the groups in order."""

    runner: str
    """The group runner (:data:`~nrecur.sweep.groups.GROUP_RUNNERS`)."""
    why: str
    """Why ``auto`` chose ``runner`` ("" when the runner was named)."""
    groups: tuple[TrialGroup, ...]

    @property
    def grouped(self) -> bool:
        """Whether the runner trains same-shape trials together."""
        return GROUPS_BY_SHAPE.get(self.runner, False)

    def describe(self, most: int = 12) -> list[str]:
        """The lines a sweep's log starts with (past ``most`` groups, their sizes counted, not listed)."""
        lines = [f"group runner auto: {self.why}"] if self.why else []
        if self.grouped and self.groups:
            lengths = [len(group.trials) for group in self.groups]
            if len(lengths) <= most:
                sizes = ", ".join(map(str, lengths))
            else:
                counted = sorted(collections.Counter(lengths).items(), key=lambda item: -item[0])
                sizes = ", ".join(f"{count:,} of {size}" for size, count in counted)
            lines.append(f"{sum(lengths)} trials in {len(self.groups)} groups of the same shape ({sizes}), each trained at once ({self.runner})")
        return lines


def plan_groups(trials: list[Trial], backend: str = "local", options: BackendOptions = BackendOptions()) -> Plan:
    """The runner and the groups ``run_sweep`` trains ``trials`` with: ``auto`` resolved (:func:`resolve_runner`),
    same-shape groups for a runner that wants them (for CPU trials on the local backend, halved while workers
    would sit idle: measured there only), the groups with the most work first."""
    runner, why = resolve_runner(options.runner, trials)
    on_cpus = backend == "local" and all(trial_device(trial) == "cpu" for trial in trials)
    workers = (options.workers or available_cpus()) if on_cpus else 1
    groups = group_trials(trials, by_shape=GROUPS_BY_SHAPE.get(runner, False), workers=workers)
    return Plan(runner, why, tuple(longest_first(groups)))


def study_options(options: BackendOptions) -> BackendOptions:
    """``options`` with the study commands' runner (:data:`~nrecur.sweep.groups.STUDY_RUNNER`) in place of ``auto``
    (a study trains together only when asked by name: ``runner="ensemble"``)."""
    return dataclasses.replace(options, runner=STUDY_RUNNER) if options.runner == "auto" else options


def check_options(backend: str, options: BackendOptions) -> None:
    """Refuse (ValueError) an unknown or unavailable backend and options out of range, before anything is written."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    missing = backend_missing(backend)
    if missing is not None:
        raise ValueError(missing)
    if options.runner != "auto" and options.runner not in GROUP_RUNNERS:
        raise ValueError(f"unknown group runner {options.runner!r}; choose from auto, {', '.join(GROUP_RUNNERS)}")
    if options.workers is not None and options.workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {options.workers}")
    if options.threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {options.threads}")
    if backend != "ray" and (options.address is not None or options.asha_grace is not None):
        raise ValueError("--address and --asha are options of --backend ray")
    if options.asha_grace is not None and options.asha_grace < 1:
        raise ValueError(f"asha grace must be an integer >= 1 (evaluations), got {options.asha_grace}")


def run_sweep(
    spec: SweepSpec,
    out: str | os.PathLike,
    backend: str = "local",
    options: BackendOptions = BackendOptions(),
    retry_failed: bool = False,
    report: Callable[[str], None] | None = print,
    table_every: float = 5.0,
) -> SweepResult:
    """Run every trial of ``spec`` not yet recorded in the sweep folder ``out``; see the module docstring.

    ``report``: called with one line per trial that ends (None: silent). ``table_every``: seconds between
    rewrites of the table while trials end.
    """
    check_options(backend, options)
    start = time.perf_counter()
    trials = expand(spec)  # validates every trial before anything is written
    sweep = SweepDir(out)
    if sweep.path.exists() and not sweep.path.is_dir():
        sweep.check_usable()  # a file: say so (the lock lives in the folder)
    with sweep.writing():  # one sweep per folder, until this one ends
        return _run(spec, trials, sweep, backend, options, retry_failed, report, table_every, start)


def _run(
    spec: SweepSpec,
    trials: list[Trial],
    sweep: SweepDir,
    backend: str,
    options: BackendOptions,
    retry_failed: bool,
    report: Callable[[str], None] | None,
    table_every: float,
    start: float,
) -> SweepResult:
    sweep.check_usable()  # under the lock: a sweep starting here is refused as busy, not as "holds no sweep"
    sweep.prepare(spec.model_dump(mode="json"), [_trial_row(trial) for trial in trials], list(spec.record.metrics))
    if retry_failed:
        for trial in trials:
            record = sweep.read_record(trial.trial_id)
            if record is not None and record.status in ("failed", "stopped"):
                sweep.remove_record(trial.trial_id)
    done = {trial.trial_id for trial in trials if sweep.read_record(trial.trial_id) is not None}
    todo = [trial for trial in trials if trial.trial_id not in done]
    by_id = {trial.trial_id: trial for trial in trials}
    ended: list[TrialRecord] = []
    last_table = [time.perf_counter()]

    def on_done(record: TrialRecord) -> None:
        ended.append(record)
        if report is not None:
            report(_line(len(done) + len(ended), len(trials), by_id[record.trial_id], record))
        if time.perf_counter() - last_table[0] > table_every:
            sweep.write_table()
            last_table[0] = time.perf_counter()

    if report is not None and done:
        report(f"{spec.name}: {len(done)} of {len(trials)} trials are done already; running the other {len(todo)}")
    plan = plan_groups(todo, backend, options)
    options = dataclasses.replace(options, runner=plan.runner)
    if report is not None and todo:
        for line in plan.describe():
            report(f"{spec.name}: {line}")
    try:
        BACKENDS[backend](list(plan.groups), sweep, on_done, options)
    finally:
        table = sweep.write_table()
    counts = {status: int((table["status"] == status).sum()) for status in ("ok", "failed", "stopped", "pending")}
    return SweepResult(
        path=sweep.path,
        trials=len(trials),
        already_done=len(done),
        ran=len({record.trial_id for record in ended}),
        seconds=time.perf_counter() - start,
        status_counts={status: count for status, count in counts.items() if count},
        notes=dict(collections.Counter(record.note for record in ended if record.note)),
    )


def _trial_row(trial: Trial) -> dict:
    return {"index": trial.index, "trial_id": trial.trial_id, "params": trial.params, "seed": trial.seed}


def _line(position: int, total: int, trial: Trial, record: TrialRecord) -> str:
    head = f"[{position}/{total}] {trial.trial_id} {trial.describe()}: {record.status}"
    if record.status == "ok":
        kl = f"KL {record.final_kl:.4g}" if record.final_kl is not None else "KL n/a"
        reached = f", KL <= {record.kl_threshold:g} at step {record.steps_to_threshold}" if record.steps_to_threshold is not None else ""
        line = f"{head}, {record.steps} steps, {seconds_text(record.seconds)} s, {kl}{reached}"
    else:
        line = f"{head} ({record.reason})"
    return f"{line}; {record.note}" if record.note else line
