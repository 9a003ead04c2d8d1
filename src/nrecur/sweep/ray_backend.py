"""The Ray backend: the same trials on a Ray cluster (``pip install 'nrecur[ray]'``).

``address=None`` starts a local Ray on this machine; otherwise the driver joins
the cluster at ``address`` (``auto`` on a cluster node, ``ray://HEAD:10001``
from outside). Each group of trials is one Ray task needing ``threads`` CPUs;
it calls the same :func:`~nrecur.sweep.groups.GROUP_RUNNERS` entry as the local
backend and returns its records, which the driver writes into the sweep folder
(so the table is complete even where workers do not share the driver's disk;
the run folders stay where the workers wrote them: put ``--out`` on a shared
file system to keep them together). Ray retries a task whose worker died; a
task that fails for good is recorded as ``failed`` with Ray's error.

Early stopping (``asha_grace``): the trials run as a Ray Tune experiment, each
reporting its eval KL at every evaluation after step 0, and the asynchronous successive
halving scheduler (ASHA) stops those whose KL is in the worst part of the trials
at the same evaluation, once they have had ``asha_grace`` evaluations. A
stopped trial is recorded as ``stopped`` with the step and KL it had reached.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from nrecur._threads import side_by_side
from nrecur.sweep.groups import GROUP_RUNNERS, TrialGroup
from nrecur.sweep.store import SweepDir, TrialRecord
from nrecur.sweep.trial import record_from_folder, run_trial
from nrecur.train import Callback
from nrecur.train.folder import RunFolder


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError("--backend ray needs Ray: pip install 'nrecur[ray]'") from None
    return ray


def _train_group(group: TrialGroup, sweep_path: str, runner: str, threads: int) -> list[dict]:
    """The Ray task: train a group, return its records as JSON data."""
    import torch

    torch.set_num_threads(threads)
    return [json.loads(record.to_json()) for record in GROUP_RUNNERS[runner](group, SweepDir(sweep_path))]


def run_ray(groups: list[TrialGroup], sweep: SweepDir, on_done, options) -> None:
    """Train every group on Ray (see the module docstring); ``options`` is a :class:`~nrecur.sweep.runner.BackendOptions`."""
    if not groups:
        return
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        if options.address:
            ray.init(address=options.address, log_to_driver=False)
        else:
            with side_by_side():  # the local instance's workers inherit the environment it starts with
                ray.init(num_cpus=options.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        if options.asha_grace is not None:
            _run_tune(groups, sweep, on_done, options)
        else:
            _run_tasks(ray, groups, sweep, on_done, options)
    finally:
        if started:
            ray.shutdown()


def _run_tasks(ray, groups: list[TrialGroup], sweep: SweepDir, on_done, options) -> None:
    task = ray.remote(num_cpus=options.threads, max_retries=2)(_train_group)
    path = str(Path(sweep.path).absolute())
    pending = {task.remote(group, path, options.runner, options.threads): group for group in groups}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            group = pending.pop(ref)
            try:
                records = [TrialRecord(**data) for data in ray.get(ref)]
            except Exception as error:  # noqa: BLE001 - Ray's error is the trials' result
                reason = f"Ray task failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                records = [_failed(sweep, trial, reason) for trial in group.trials]
            for record in records:
                sweep.write_record(record)
                on_done(record)


def _failed(sweep: SweepDir, trial, reason: str) -> TrialRecord:
    existing = sweep.read_record(trial.trial_id)
    return existing or record_from_folder(trial, RunFolder(sweep.run_dir(trial.trial_id)), "failed", reason)


class _ReportToTune(Callback):
    """Reports eval KL to Ray Tune at every evaluation (ASHA's signal)."""

    def on_log(self, trainer, step: int, metrics: dict) -> None:
        from ray import tune

        if "eval/kl" in metrics and step > 0:  # the evaluation at step 0 ranks initializations, not training
            tune.report({"eval_kl": float(metrics["eval/kl"]), "step": step})


def _tune_trial(config: dict, trials: dict, sweep_path: str, threads: int) -> None:
    """A Ray Tune trainable: one trial, reporting eval KL; its record is the last report."""
    import torch
    from ray import tune

    torch.set_num_threads(threads)
    trial = trials[config["trial_id"]]
    record = run_trial(trial, SweepDir(sweep_path), callbacks=[_ReportToTune()])
    final = record.final_kl if record.final_kl is not None and math.isfinite(record.final_kl) else float("inf")
    tune.report({"eval_kl": final, "step": record.steps or 0, "record": record.to_json()})


def _run_tune(groups: list[TrialGroup], sweep: SweepDir, on_done, options) -> None:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # one line per trial from us, not Tune's status tables
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    trials = {trial.trial_id: trial for group in groups for trial in group.trials}
    longest = max(trial.config.train.steps // trial.config.train.eval_every + 2 for trial in trials.values())
    scheduler = ASHAScheduler(
        time_attr="training_iteration", metric="eval_kl", mode="min", max_t=longest, grace_period=options.asha_grace, reduction_factor=2
    )
    path = str(Path(sweep.path).absolute())
    trainable = tune.with_resources(
        tune.with_parameters(_tune_trial, trials=trials, sweep_path=path, threads=options.threads), {"cpu": options.threads}
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"trial_id": tune.grid_search(list(trials))},
        tune_config=tune.TuneConfig(scheduler=scheduler, reuse_actors=True),
        run_config=tune.RunConfig(name="tune", storage_path=str(Path(path) / "ray"), verbose=0),
    )
    results = tuner.fit()
    for result in results:
        trial = trials[result.config["trial_id"]]
        metrics = result.metrics or {}
        if sweep.read_record(trial.trial_id) is not None:
            record = sweep.read_record(trial.trial_id)
        elif "record" in metrics:
            record = TrialRecord(**json.loads(metrics["record"]))
        elif result.error is not None:
            record = _failed(sweep, trial, f"Ray Tune trial failed: {str(result.error).splitlines()[0]}")
        else:
            reason = f"stopped early by ASHA at step {metrics.get('step')} (eval KL {metrics.get('eval_kl', math.nan):.4g})"
            record = record_from_folder(trial, RunFolder(sweep.run_dir(trial.trial_id)), "stopped", reason)
        sweep.write_record(record)
        on_done(record)
