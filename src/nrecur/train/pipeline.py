"""The main job (``nrecur run``): deterministic until it groks, then stochastic from scratch and fine-tuned.

1. Train the preset's deterministic run until eval KL reaches its threshold.
2. Train the stochastic task twice, from scratch and starting from (1)'s
   weights; with ``jobs=2`` both run side by side in two processes with one
   thread each.
3. Summarize: steps and time to reach the KL threshold, final KL and
   cross-entropies against the Bayes floor.

Every training runs in a worker process with ``OMP_WAIT_POLICY=PASSIVE``: on
a busy machine, OpenMP threads that spin while waiting cut throughput several
fold. Every run lives in its own folder under ``out``. Running the job again reuses
finished runs and resumes interrupted ones (``fresh=True`` starts over).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nrecur.train.checkpoint import atomic_write_text
from nrecur.train.config import RunConfig
from nrecur.train.presets import Preset
from nrecur.train.session import CONFIG_FILE, METRICS_FILE, clear_run, read_config, read_summary, resume

RUN_KINDS = ("det", "stoch-scratch", "stoch-finetune")


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
    grok_step: int | None
    grok_seconds: float | None
    kl: float
    model_ce: float
    bayes_ce: float
    target_accuracy: float

    @classmethod
    def from_folder(cls, name: str, folder: Path) -> "RunRow":
        config = read_config(folder)
        summary = read_summary(folder)
        if summary is None or summary.get("status") != "finished":
            raise RuntimeError(f"{folder} did not finish (see {folder / 'train.log'} if it ran in a worker)")
        final = summary["final"]["eval"]
        return cls(
            name=name,
            path=str(folder),
            task="deterministic" if config.task.is_deterministic else "stochastic",
            init=Path(config.init_from).name if config.init_from else "scratch",
            steps=summary["steps"],
            seconds=summary["seconds"],
            stop_reason=summary["stop_reason"],
            kl_threshold=summary["kl_threshold"],
            grok_step=summary["grok_step"],
            grok_seconds=summary["grok_seconds"],
            kl=final["eval/kl"],
            model_ce=final["eval/model_ce"],
            bayes_ce=final["eval/bayes_ce"],
            target_accuracy=final["eval/target_acc"],
        )


@dataclass(frozen=True)
class MainJobResult:
    preset: str
    rows: tuple[RunRow, ...]
    seconds: float
    """Wall-clock time of the whole job."""

    def table(self) -> str:
        """The summary as a Markdown table."""
        head = "| run | task | init | steps | time | KL ≤ threshold reached | final KL | model CE | Bayes CE | target acc |"
        lines = [head, "|" + "---|" * 10]
        for row in self.rows:
            reached = (
                f"step {row.grok_step} ({row.grok_seconds:.0f} s) for ≤ {row.kl_threshold:g}"
                if row.grok_step is not None
                else f"not reached (≤ {row.kl_threshold:g})"
            )
            lines.append(
                f"| {row.name} | {row.task} | {row.init} | {row.steps} | {row.seconds:.0f} s | {reached} | "
                f"{row.kl:.4f} | {row.model_ce:.4f} | {row.bayes_ce:.4f} | {row.target_accuracy:.3f} |"
            )
        return "\n".join(lines)


def prepare(config: RunConfig, folder: Path, fresh: bool) -> bool:
    """Make ``folder`` hold ``config``; True when the run still has to (finish) training."""
    if fresh:
        clear_run(folder)
    if (folder / CONFIG_FILE).exists():
        if read_config(folder) != config:
            raise FileExistsError(f"{folder} holds a run with another config; pass --fresh to start it over")
        summary = read_summary(folder)
        return not (summary is not None and summary.get("status") == "finished")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / CONFIG_FILE, json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
    return True


def run_main_job(
    preset: Preset,
    out: str | os.PathLike = "runs",
    jobs: int = 2,
    fresh: bool = False,
    progress: bool = True,
    threads: int | None = None,
) -> MainJobResult:
    """Run the three trainings of ``preset`` under ``out`` (see the module docstring).

    Each training runs in a worker process with ``OMP_WAIT_POLICY=PASSIVE``; the deterministic one with
    ``threads`` threads (default: all cores), the two stochastic ones ``jobs`` at a time with
    ``threads // jobs`` threads each (at least one).
    """
    start = time.perf_counter()
    out = Path(out)
    threads = threads or os.cpu_count() or 1
    folders = {kind: out / f"{preset.name}-{kind}" for kind in RUN_KINDS}
    configs = {
        "det": preset.deterministic,
        "stoch-scratch": preset.stochastic,
        "stoch-finetune": preset.finetune.model_copy(update={"init_from": str(folders["det"])}),
    }
    if prepare(configs["det"], folders["det"], fresh):
        run_in_workers([folders["det"]], threads, progress)
    pending = [folders[kind] for kind in RUN_KINDS[1:] if prepare(configs[kind], folders[kind], fresh)]
    for first in range(0, len(pending), jobs):
        group = pending[first : first + jobs]
        run_in_workers(group, max(1, threads // len(group)), progress)
    rows = tuple(RunRow.from_folder(f"{preset.name}-{kind}", folders[kind]) for kind in RUN_KINDS)
    result = MainJobResult(preset=preset.name, rows=rows, seconds=time.perf_counter() - start)
    atomic_write_text(out / f"{preset.name}-summary.md", result.table() + "\n")
    atomic_write_text(
        out / f"{preset.name}-summary.json",
        json.dumps({"preset": preset.name, "seconds": result.seconds, "rows": [row.__dict__ for row in rows]}, indent=2)
        + "\n",
    )
    return result


def run_in_workers(folders: list[Path], threads: int, progress: bool) -> None:
    """Resume each run folder in its own process with ``threads`` threads; wait for all.

    A single worker draws its own progress bar; side-by-side workers write theirs to ``train.log`` and this
    process shows coarse bars from their ``metrics.jsonl``.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    alone = len(folders) == 1
    workers = []
    for folder in folders:
        log = open(folder / "train.log", "w")
        command = [sys.executable, "-m", "nrecur.train.pipeline", str(folder), *([] if progress else ["--no-progress"])]
        stderr = None if alone and progress else subprocess.STDOUT
        workers.append((folder, subprocess.Popen(command, stdout=log, stderr=stderr, env=env), log))
    bars = _bars(folders) if progress and not alone else None
    try:
        while any(process.poll() is None for _, process, _ in workers):
            if bars:
                _update_bars(bars, folders)
            time.sleep(1.0)
        if bars:
            _update_bars(bars, folders)
    except BaseException:
        for _, process, _ in workers:
            process.terminate()
        raise
    finally:
        for _, process, log in workers:
            process.wait()
            log.close()
        if bars:
            for bar in bars:
                bar.close()
    failed = [(folder, process.returncode) for folder, process, _ in workers if process.returncode != 0]
    if failed:
        details = "; ".join(f"{folder} exited with {code} (see {folder / 'train.log'})" for folder, code in failed)
        raise RuntimeError(f"a training worker failed: {details}")


def _bars(folders: list[Path]):
    from tqdm.auto import tqdm

    return [
        tqdm(total=read_config(folder).train.steps, desc=folder.name, position=i, dynamic_ncols=True, leave=True)
        for i, folder in enumerate(folders)
    ]


def _update_bars(bars, folders: list[Path]) -> None:
    from nrecur.train.callbacks import read_metrics_lines

    for bar, folder in zip(bars, folders):
        lines = read_metrics_lines(folder / METRICS_FILE)
        if lines and lines[-1]["step"] != bar.n:
            last = lines[-1]
            bar.update(last["step"] - bar.n)
            bar.set_postfix_str(f"loss {last.get('train/loss', float('nan')):.4f} KL {last['eval/kl']:.4f} t {last['seconds']:.0f}s")


if __name__ == "__main__":  # a worker of run_in_workers: python -m nrecur.train.pipeline RUN_DIR [--no-progress]
    folder = Path(sys.argv[1])
    result = resume(folder, progress=False if "--no-progress" in sys.argv else folder.name)
    print(f"{folder}: {result.stop_reason} after {result.steps} steps, {result.seconds:.0f} s")
