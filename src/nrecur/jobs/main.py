"""The main job (``nrecur run``): n-recurrence from deterministic to stochastic, and the Mess3 model.

1. Train the preset's deterministic run until eval KL reaches its threshold.
2. Train the stochastic task twice, from scratch and starting from (1)'s
   weights, and the Mess3 belief-geometry model (SPEC §2.5).
3. Analyze and report: every analysis that applies to a run, then its
   report (``RUN/report.html``). Then the index over the runs
   (``out/index.html``).

Steps 1–3 are worker jobs in one queue, ``jobs`` of them side by side, each
in its own process with an equal share of the threads, in this order:
deterministic run; stochastic from scratch (trained, then analyzed in the
same worker); fine-tune (waits for the deterministic run); the deterministic
run's analyses (a worker of their own, so the fine-tune can start as soon
as its initial weights exist); Mess3. A free slot takes the first job whose
run it needs has finished. On two cores this keeps both busy from the
start: a lone run with two threads is only ~1.5× as fast as with one.
4. Summarize: steps and time to reach the KL threshold, final KL and
   cross-entropies against the Bayes floor.

Every training runs in a worker process (:func:`nrecur.jobs.worker.run_worker`,
forked from the server of :mod:`nrecur._processes`) with its share of the
threads and ``OMP_WAIT_POLICY=PASSIVE`` unless the environment set a policy
when the server started: on a busy machine, OpenMP threads that spin while
waiting cut throughput several fold. Every run lives in its own folder under
``out``. Running the job again reuses finished runs and resumes interrupted
ones, and analyzes only runs that no job has analyzed yet or whose analyses
failed (``RUN/analyzed.json``; ``fresh=True`` starts over). One job at a time
writes a folder: the job holds ``out``'s lock until it ends, and each worker the
lock of the run it trains (:mod:`nrecur._lock`), so a second job in the same
folder is refused at once and writes nothing. Every run's memory estimate is
checked before anything is written.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path

from nrecur._io import atomic_write_text
from nrecur._log import Ticker, is_terminal, logger
from nrecur._lock import folder_lock
from nrecur._processes import worker_context
from nrecur._text import seconds_text
from nrecur.jobs.records import read_analysis_records
from nrecur.jobs.worker import WorkerOutput, analysis_under_way, run_worker
from nrecur.report import read_run, write_index
from nrecur.tasks import NRecurrence
from nrecur.train.config import RunConfig
from nrecur.train.folder import RunFolder
from nrecur.train.loop import resolve_device
from nrecur.train.memory import check_training_memory
from nrecur.train.presets import Preset

#: The runs of the main job, in the order they start (the first one before all others).
MAIN_JOB_RUNS = ("det", "stoch-scratch", "stoch-finetune", "mess3")


@dataclass(frozen=True)
class RunRow:
    """One line of the main job's summary."""

    name: str
    path: str
    task: str
    init: str
    steps: int
    seconds: float
    stop_reason: str
    kl_threshold: float
    threshold_step: int | None
    threshold_seconds: float | None
    kl: float
    model_ce: float
    bayes_ce: float
    accuracy_name: str
    accuracy: float

    @classmethod
    def from_folder(cls, name: str, folder: RunFolder) -> "RunRow":
        config = folder.read_config()
        if not folder.is_finished():
            raise RuntimeError(f"{folder.path} did not finish (see {folder.train_log} if it ran in a worker)")
        summary = folder.read_summary()
        final = summary["final"]["eval"]
        accuracy_name = summary.get("accuracy_name", "target_acc")  # runs of older versions were n-recurrence
        return cls(
            name=name,
            path=str(folder.path),
            task=_task_label(config),
            init=Path(config.init_from).name if config.init_from else "scratch",
            steps=summary["steps"],
            seconds=summary["seconds"],
            stop_reason=summary["stop_reason"],
            kl_threshold=summary["kl_threshold"],
            threshold_step=summary["threshold_step"],
            threshold_seconds=summary["threshold_seconds"],
            kl=final["eval/kl"],
            model_ce=final["eval/model_ce"],
            bayes_ce=final["eval/bayes_ce"],
            accuracy_name=accuracy_name,
            accuracy=final.get(f"eval/{accuracy_name}", float("nan")),
        )


def _task_label(config: RunConfig) -> str:
    task = config.task
    if isinstance(task, NRecurrence):
        return "deterministic" if task.is_deterministic else "stochastic"
    return task.describe()


@dataclass(frozen=True)
class WorkerJob:
    """What one worker process does with one run folder."""

    folder: RunFolder
    train: bool = True
    """Train (resume) the run."""
    analyze: bool = False
    """Then run its analyses and write its report."""
    after: WorkerJob | None = None
    """A job that must have ended successfully first (its run's weights are needed)."""

    def describe(self) -> str:
        doing = " and ".join(word for word, flag in (("training", self.train), ("analyzing", self.analyze)) if flag)
        return f"the worker {doing} {self.folder.path}"


@dataclass(frozen=True)
class MainJobResult:
    preset: str
    rows: tuple[RunRow, ...]
    seconds: float
    """Wall-clock time of the whole job."""
    index: Path | None = None
    """The index page over the runs (None when the job did not analyze)."""
    notes: tuple[str, ...] = ()
    """Analyses that failed in a worker (one line each, from the run's ``analyzed.json``)."""

    def table(self) -> str:
        """The summary as a Markdown table."""
        head = "| run | task | init | steps | time | KL ≤ threshold reached | final KL | model CE | Bayes CE | accuracy |"
        lines = [head, "|" + "---|" * 10]
        for row in self.rows:
            reached = (
                f"step {row.threshold_step} ({seconds_text(row.threshold_seconds)} s) for ≤ {row.kl_threshold:g}"
                if row.threshold_step is not None
                else f"not reached (≤ {row.kl_threshold:g})"
            )
            lines.append(
                f"| {row.name} | {row.task} | {row.init} | {row.steps} | {seconds_text(row.seconds)} s | {reached} | "
                f"{row.kl:.4f} | {row.model_ce:.4f} | {row.bayes_ce:.4f} | {row.accuracy:.3f} ({row.accuracy_name}) |"
            )
        return "\n".join(lines)


def check_runs(configs: dict[str, RunConfig], folders: dict[str, RunFolder], fresh: bool) -> None:
    """Refuse, before anything is written, runs that would not fit in memory and folders that hold something
    else than their run (another config, or files but no run) unless ``fresh``."""
    for kind, config in configs.items():
        folder = folders[kind]
        check_training_memory(config, resolve_device(config.train.device))
        if fresh:
            continue
        if folder.is_run():
            if folder.read_config() != config:
                raise FileExistsError(
                    f"{folder.path} holds a run with another config (another preset's, or one the preset has changed "
                    "since); pass --fresh to start it over, or --out to keep it"
                )
        elif folder.contents():
            raise FileExistsError(f"{folder.path} is not empty and holds no run; move it away, or pass --fresh to write the run there anyway")


def prepare(config: RunConfig, folder: RunFolder, fresh: bool) -> bool:
    """Make ``folder`` hold ``config``; True when the run still has to (finish) training. Refused at once
    (:class:`~nrecur._lock.FolderBusyError`) while another process trains it."""
    with folder.writing(doing="the main job (nrecur run)", refused="wait for it to end, or give another --out"):
        if fresh:
            folder.clear()
        if folder.is_run():
            if folder.read_config() != config:
                raise FileExistsError(
                    f"{folder.path} holds a run with another config (another preset's, or one the preset has changed "
                    "since); pass --fresh to start it over, or --out to keep it"
                )
            return not folder.is_finished()
        if folder.contents() and not fresh:
            raise FileExistsError(f"{folder.path} is not empty and holds no run; move it away, or pass --fresh to write the run there anyway")
        folder.write_config(config)
        return True


def main_job_configs(preset: Preset, out: Path) -> dict[str, RunConfig]:
    """The run config of each of :data:`MAIN_JOB_RUNS` (the fine-tune starts from the deterministic run's folder)."""
    return {
        "det": preset.variant("run"),
        "stoch-scratch": preset.variant("stochastic"),
        # model_copy does not validate: resolve the path here as RunConfig would (absolute, see RunConfig.init_from).
        "stoch-finetune": preset.variant("finetune").model_copy(update={"init_from": os.path.abspath(out / f"{preset.name}-det")}),
        "mess3": preset.variant("mess3"),
    }


def run_main_job(
    preset: Preset,
    out: str | os.PathLike = "runs",
    jobs: int = 2,
    fresh: bool = False,
    progress: bool = True,
    threads: int | None = None,
    analyze: bool = True,
) -> MainJobResult:
    """Run the trainings of ``preset`` and the Mess3 model under ``out`` (see the module docstring); with
    ``analyze``, their analyses, reports and the index too.

    Every job runs in a worker process with ``OMP_WAIT_POLICY=PASSIVE`` (unless set), ``jobs`` at a time with
    ``threads // jobs`` threads each (``threads`` default: all cores; at least one each), in the queue order
    of the module docstring; a new one starts as soon as one ends.
    """
    out = Path(out)
    # One main job per folder: held until it ends, so a second one is refused at once and writes nothing.
    with folder_lock(out, doing="a main job (nrecur run)", refused="wait for it to end, or give another --out"):
        folders = {kind: RunFolder(out / f"{preset.name}-{kind}") for kind in MAIN_JOB_RUNS}
        check_runs(main_job_configs(preset, out), folders, fresh)
        return _run_main_job(preset, out, jobs, fresh, progress, threads, analyze)


def _run_main_job(preset: Preset, out: Path, jobs: int, fresh: bool, progress: bool, threads: int | None, analyze: bool) -> MainJobResult:
    start = time.perf_counter()
    threads = threads or os.cpu_count() or 1
    names = {kind: f"{preset.name}-{kind}" for kind in MAIN_JOB_RUNS}
    folders = {kind: RunFolder(out / names[kind]) for kind in MAIN_JOB_RUNS}
    configs = main_job_configs(preset, out)
    index = out / "index.html"
    queue: list[WorkerJob] = []
    det = WorkerJob(folders["det"]) if prepare(configs["det"], folders["det"], fresh) else None
    queue += [det] if det else []
    for kind in MAIN_JOB_RUNS[1:]:
        train = prepare(configs[kind], folders[kind], fresh)
        if train or (analyze and needs_analysis(folders[kind])):
            queue.append(WorkerJob(folders[kind], train=train, analyze=analyze, after=det if kind == "stoch-finetune" else None))
        if kind == "stoch-finetune" and analyze and needs_analysis(folders["det"]):
            queue.append(WorkerJob(folders["det"], train=False, analyze=True, after=det))
    failed = []
    if queue:
        slots = min(jobs, len(queue))
        caps = dict(preset.analysis_caps)
        failed = run_in_workers(queue, slots, max(1, threads // slots), progress, index if analyze else None, caps)
    finished = [kind for kind in MAIN_JOB_RUNS if folders[kind].is_finished()]
    rows = tuple(RunRow.from_folder(names[kind], folders[kind]) for kind in finished)
    notes = []
    if analyze:
        failed_jobs = {id(job) for job, _ in failed}
        for job in (job for job in queue if job.analyze and id(job) not in failed_jobs):  # a failed job's records are an earlier job's
            for record in read_analysis_records(job.folder.path) or []:
                if record.outcome == "failed":
                    notes.append(f"{job.folder.path.name} analysis {record.line()} (traceback in {job.folder.train_log})")
        # Every run there is, finished or not: the index shows each one's status (and links only existing pages).
        write_index(out, [read_run(folders[kind].path) for kind in MAIN_JOB_RUNS if folders[kind].is_run()])
    result = MainJobResult(
        preset=preset.name, rows=rows, seconds=time.perf_counter() - start, index=index if analyze else None, notes=tuple(notes)
    )
    atomic_write_text(out / f"{preset.name}-summary.md", result.table() + "\n")
    summary = {"preset": preset.name, "seconds": result.seconds, "rows": [asdict(row) for row in rows]}
    atomic_write_text(out / f"{preset.name}-summary.json", json.dumps(summary, indent=2) + "\n")
    if failed:  # after the summary and index of what did finish; the analyses that failed elsewhere too
        raise RuntimeError("; ".join([_failures(failed), *notes]))
    return result


def needs_analysis(folder: RunFolder) -> bool:
    """True when no job has analyzed the run at ``folder`` yet, or one of its analyses failed (it is retried)."""
    records = read_analysis_records(folder.path)
    return records is None or any(record.outcome == "failed" for record in records)


def _failures(failed: list[tuple[WorkerJob, int | None]]) -> str:
    return "; ".join(
        f"{job.describe()} exited with {code} (see {job.folder.train_log})" if code is not None
        else f"{job.describe()} did not start: {job.after.describe()} failed"
        for job, code in failed
    )  # fmt: skip


def run_in_workers(
    jobs: list[WorkerJob], slots: int, threads: int, progress: bool, index: Path | None = None, caps: dict[str, int] | None = None
) -> list[tuple[WorkerJob, int | None]]:
    """Run each job in its own worker process with ``threads`` threads, ``slots`` at a time, a free slot taking
    the first waiting job whose ``after`` job has ended well; wait for all and return the jobs that failed, with
    the worker's exit code (None: not started, because its ``after`` job failed).

    A single worker draws its own progress bar; side-by-side workers write theirs to ``train.log`` and this
    process shows each job's progress from its ``metrics.jsonl`` (:class:`JobsProgress`: waiting until it
    starts, then training, analyzing — which analysis, from the worker's log — done). ``index``: the page the reports link to;
    ``caps``: analysis option → the most it may be, beyond the worker's own caps.
    """
    context = worker_context(preload=("nrecur.jobs.worker",))
    alone = len(jobs) == 1
    waiting = list(jobs)
    running: list[tuple[WorkerJob, BaseProcess]] = []
    finished: list[tuple[WorkerJob, int | None]] = []
    codes: dict[int, int | None] = {}  # id(job) → the exit code of a job that ended (None: it never started)
    shown = JobsProgress(jobs) if progress and not alone else None
    try:
        while waiting or running:
            for job in [job for job in waiting if job.after is not None and codes.get(id(job.after), 0) != 0]:
                waiting.remove(job)  # the run it needs failed
                finished.append((job, None))
                codes[id(job)] = None
            while len(running) < slots:
                job = next((job for job in waiting if job.after is None or (id(job.after) in codes and codes[id(job.after)] == 0)), None)
                if job is None:
                    break
                waiting.remove(job)
                folder = job.folder
                argv = [str(folder.path), *([] if progress else ["--no-progress"])]
                argv += ([] if job.train else ["--no-train"]) + (["--analyze"] if job.analyze else [])
                argv += ["--index", str(index)] if index is not None and job.analyze else []
                argv += [f"--cap={name}={value}" for name, value in (caps or {}).items()] if job.analyze else []
                output = WorkerOutput(str(folder.train_log), append=not job.train, stderr=not (alone and progress))
                process = context.Process(target=run_worker, args=(argv, output, threads, os.getpid()), name=f"nrecur-job-{folder.path.name}")
                if shown:
                    shown.started(job)  # before the worker writes its log: where its own lines start
                process.start()
                running.append((job, process))
            if waiting and not running:
                raise ValueError(f"{waiting[0].describe()} waits for a job that is not in the queue")
            for item in list(running):
                job, process = item
                if process.exitcode is not None:
                    running.remove(item)
                    finished.append((job, process.exitcode))
                    codes[id(job)] = process.exitcode
                    if shown:
                        shown.ended(job, process.exitcode)
            if shown:
                shown.update()
            if running:
                time.sleep(0.5)
    except BaseException:
        for _, process in running:
            process.terminate()
        raise
    finally:
        for _, process in running:
            process.join()
        if shown:
            shown.close()
    return [(job, code) for job, code in finished if code != 0]


class JobsProgress:
    """The progress of side-by-side jobs, from their run folders: on a terminal one tqdm bar per job, its clock
    started when the job starts ("waiting" until then); elsewhere plain lines through the ``nrecur`` logger — one
    when a job starts, trains to its end, starts an analysis or its report (:func:`~nrecur.jobs.worker.analysis_under_way`)
    or ends, and every :data:`~nrecur._log.PLAIN_EVERY` seconds one on the jobs in training."""

    def __init__(self, jobs: list[WorkerJob]) -> None:
        self.jobs = jobs
        self.state = {id(job): "waiting" for job in jobs}
        self.steps = {id(job): job.folder.read_config().train.steps for job in jobs if job.train}
        self.step = {id(job): 0 for job in jobs}
        self.analysis: dict[int, str] = {}  # id(job) → what its worker analyzed when last shown
        self.log_start: dict[int, int] = {}  # id(job) → where its worker's lines start in a log it appends to
        self.last_line = ""  # the last plain line on the jobs in training
        self.start = {id(job): time.perf_counter() for job in jobs}
        self.ticker = Ticker()
        self.bars = None
        if is_terminal():
            from tqdm import tqdm

            self.bars = {
                id(job): tqdm(total=self.steps.get(id(job)), desc=self._name(job), position=i, dynamic_ncols=True, leave=True, bar_format="{desc}: waiting")
                for i, job in enumerate(jobs)
            }  # fmt: skip

    @staticmethod
    def _name(job: WorkerJob) -> str:
        return job.folder.path.name + ("" if job.train else " analyses")

    def started(self, job: WorkerJob) -> None:
        self.state[id(job)] = "training" if job.train else "analyzing"
        self.start[id(job)] = time.perf_counter()
        if not job.train and job.folder.train_log.exists():  # the worker appends: earlier jobs' lines are not its own
            self.log_start[id(job)] = job.folder.train_log.stat().st_size
        if self.bars is not None:
            bar = self.bars[id(job)]
            bar.bar_format = None if job.train else "{desc}: {elapsed}{postfix}"  # the usual bar, or the time so far
            bar.reset(total=self.steps.get(id(job)))  # its clock from now
            bar.set_postfix_str(self.state[id(job)])
        else:
            logger().info(f"{self._name(job)}: {self.state[id(job)]}")

    def ended(self, job: WorkerJob, code: int) -> None:
        self.state[id(job)] = "done" if code == 0 else f"failed (exit code {code}; see {job.folder.train_log})"
        seconds = time.perf_counter() - self.start[id(job)]
        if self.bars is not None:
            self.bars[id(job)].set_postfix_str(f"{self.state[id(job)]} in {seconds_text(seconds)} s")
            self.bars[id(job)].close()  # its clock stops here
        else:
            logger().info(f"{self._name(job)}: {self.state[id(job)]} in {seconds_text(seconds)} s")

    def update(self) -> None:
        lines = []
        for job in self.jobs:
            if self.state[id(job)] not in ("training", "analyzing"):
                continue
            if job.train:
                last = self._trained(job)
                if self.state[id(job)] == "training" and last is not None:
                    total = self.steps[id(job)]
                    lines.append(f"{self._name(job)} step {last['step']:,}/{total:,} ({100 * last['step'] / total:.0f} %), KL {last['eval/kl']:.4f}")
            if self.state[id(job)] == "analyzing":
                self._analyzing(job)
        if self.bars is None and lines and self.ticker.due():
            waiting = [self._name(job) for job in self.jobs if self.state[id(job)] == "waiting"]
            line = "; ".join(lines + ([f"waiting: {', '.join(waiting)}"] if waiting else []))
            if line != self.last_line:  # no evaluation since the last line: nothing new to say
                logger().info(line)
                self.last_line = line

    def _trained(self, job: WorkerJob) -> dict | None:
        """Show the last step ``job`` logged; the job analyzes once its run has finished. Returns that step's metrics."""
        metrics = job.folder.read_metrics()
        last = metrics[-1] if metrics else None
        if last is not None and last["step"] != self.step[id(job)]:
            self.step[id(job)] = last["step"]
            if self.bars is not None:
                bar = self.bars[id(job)]
                bar.update(last["step"] - bar.n)
                bar.set_postfix_str(f"loss {last.get('train/loss', float('nan')):.4f} KL {last['eval/kl']:.4f}")
        if self.state[id(job)] == "training" and job.analyze and job.folder.is_finished():
            self.state[id(job)] = "analyzing"  # trained: the same worker analyzes it now
            if self.bars is not None:
                self.bars[id(job)].set_postfix_str("trained; analyzing")
            else:
                logger().info(f"{self._name(job)}: trained to step {self.step[id(job)]:,}; analyzing")
        return last

    def _analyzing(self, job: WorkerJob) -> None:
        """Show what ``job``'s worker analyzes now (from its log), once per analysis."""
        now = analysis_under_way(job.folder.train_log, self.log_start.get(id(job), 0))
        if now is None or now == self.analysis.get(id(job)):
            return
        self.analysis[id(job)] = now
        if self.bars is not None:
            self.bars[id(job)].set_postfix_str(f"analyzing {now}")
        else:
            logger().info(f"{self._name(job)}: analyzing {now}")

    def close(self) -> None:
        for bar in (self.bars or {}).values():
            bar.close()
