"""The run folder: the one place that knows its layout.

A run folder holds::

    config.json          the full RunConfig (task, model, training: enough to reproduce the run)
    init_from.json       a fine-tune's source: the checkpoint its weights came from and their fingerprint
    metrics.jsonl        one JSON line per evaluation
    summary.json         how the run ended (written at the end)
    checkpoints/         step_XXXXXXXX.safetensors (model, optimizer, RNG state)
    tensorboard/         TensorBoard events (when tensorboard is installed)
    train.log            output of a worker process that trained it (jobs)
    analysis/            one JSON (and figures) per analysis
    report.html          the run's report
    .lock                held by the process writing the run (training, resuming; gone when it ends)

Everything else (training, ``load_run``, the jobs, the CLI) asks a
:class:`RunFolder` for paths and for reading and writing these files; every
write is atomic except the one-line appends to ``metrics.jsonl``, whose torn
last line (a killed write) readers skip. A checkpoint found damaged on resume is renamed
``step_XXXXXXXX.safetensors.damaged`` (kept for inspection, no longer a checkpoint).
One process at a time writes a run (:meth:`RunFolder.writing`, :mod:`nrecur._lock`): a second
training or resume of the same folder is refused at once, naming the process that holds it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePath

import pydantic

from nrecur._config import format_error
from nrecur._io import append_line, atomic_write_text, remove_stale_temporaries
from nrecur._lock import LOCK_NAME, folder_lock
from nrecur.train.config import RunConfig
from nrecur.train.renames import renamed_record

_CHECKPOINT_NAME = re.compile(r"^step_(\d{8,})\.safetensors$")


@dataclass(frozen=True)
class InitSource:
    """Where a fine-tune's initial weights came from (``init_from.json``)."""

    source: str
    """``init_from`` as configured: an absolute path of a run folder or a checkpoint file."""
    checkpoint: str
    """The checkpoint file the weights were read from (absolute)."""
    step: int
    """Its training step."""
    fingerprint: str
    """SHA-256 of its model tensors (``"sha256:…"``); a resume that would load other weights refuses."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"


@dataclass(frozen=True)
class RunFolder:
    """Paths and files of the run folder ``path``."""

    path: Path

    CONFIG_FILE = "config.json"
    INIT_FILE = "init_from.json"
    METRICS_FILE = "metrics.jsonl"
    SUMMARY_FILE = "summary.json"
    CHECKPOINT_DIR = "checkpoints"
    TENSORBOARD_DIR = "tensorboard"
    TRAIN_LOG = "train.log"
    ANALYSIS_DIR = "analysis"
    REPORT_FILE = "report.html"
    ANALYZED_FILE = "analyzed.json"

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    # --- paths

    @property
    def config_file(self) -> Path:
        return self.path / self.CONFIG_FILE

    @property
    def init_file(self) -> Path:
        return self.path / self.INIT_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / self.METRICS_FILE

    @property
    def summary_file(self) -> Path:
        return self.path / self.SUMMARY_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / self.CHECKPOINT_DIR

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / self.TENSORBOARD_DIR

    @property
    def train_log(self) -> Path:
        return self.path / self.TRAIN_LOG

    @property
    def analysis_dir(self) -> Path:
        return self.path / self.ANALYSIS_DIR

    def analysis_dir_at(self, step: int) -> Path:
        """Where analyses of an earlier checkpoint go, so they never replace those of the latest one."""
        return self.analysis_dir / f"step_{step:08d}"

    @property
    def report_file(self) -> Path:
        return self.path / self.REPORT_FILE

    @property
    def analyzed_file(self) -> Path:
        """What a job's analyses of the run did (:mod:`nrecur.jobs.worker`); absent until a job analyzed it."""
        return self.path / self.ANALYZED_FILE

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoint_dir / f"step_{step:08d}.safetensors"

    # --- what is there

    def is_run(self) -> bool:
        """The folder holds a run (it has a config)."""
        return self.config_file.exists()

    def contents(self) -> list[str]:
        """Names of what the folder holds (empty when it does not exist; its lock left out)."""
        return sorted(p.name for p in self.path.iterdir() if p.name != LOCK_NAME) if self.path.is_dir() else []

    def writing(self, doing: str = "a training", refused: str = "wait for it to end, or give another folder") -> contextlib.AbstractContextManager[Path]:
        """Hold the run's lock while the block writes it (:func:`nrecur._lock.folder_lock`): the folder is made if
        missing (and removed again if nothing was written), and a process already writing it makes this one
        raise :class:`~nrecur._lock.FolderBusyError` at once, naming that process; ``refused`` says what to do."""
        return folder_lock(self.path, doing=doing, refused=refused)

    def check_new(self, overwrite: bool = False) -> None:
        """Refuse to start a run here unless the folder is missing or empty, or ``overwrite``.

        A folder with files but no run is refused too: a run would overwrite or mix with them.
        """
        if self.path.exists() and not self.path.is_dir():
            raise FileExistsError(f"{self.path} is a file, not a folder; pick another --out")
        if overwrite:
            return
        if self.is_run():
            raise FileExistsError(
                f"{self.path} already holds a run; resume it with --resume {self.path}, replace it with --overwrite, "
                "or pick another --out"
            )
        names = self.contents()
        if names:
            shown = ", ".join(names[:4]) + (f", … ({len(names)} entries)" if len(names) > 4 else "")
            raise FileExistsError(
                f"{self.path} is not empty ({shown}) and holds no run; pick a new or empty --out, "
                "or pass --overwrite to write the run there anyway"
            )

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``[(step, path)]`` of the run's checkpoints, by step."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = [(step, path) for path in self.checkpoint_dir.iterdir() if (step := self.step_in_checkpoint_name(path)) is not None]
        return sorted(found)

    @classmethod
    def step_in_checkpoint_name(cls, path: str | PurePath) -> int | None:
        """The step a checkpoint file's path names (``RUN/checkpoints/step_00000040.safetensors`` → 40), read from
        its name and folder alone (:func:`nrecur.train.checkpoint.checkpoint_step` reads the file); None for any
        other path."""
        path = PurePath(path)
        match = _CHECKPOINT_NAME.match(path.name)
        return int(match.group(1)) if match and path.parent.name == cls.CHECKPOINT_DIR else None

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint with the highest step, or None."""
        found = self.checkpoints()
        return found[-1][1] if found else None

    # --- reading and writing

    def read_config(self) -> RunConfig:
        if not self.config_file.exists():
            if not self.path.exists():
                raise FileNotFoundError(f"{self.path} does not exist")
            raise FileNotFoundError(f"{self.path} is not a run folder (no {self.CONFIG_FILE})")
        try:
            return RunConfig.model_validate_json(self.config_file.read_text())
        except pydantic.ValidationError as error:
            raise ValueError(f"{self.config_file} does not hold a valid run config: {format_error(error)}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{self.config_file} is not a text file") from None

    def write_config(self, config: RunConfig) -> None:
        atomic_write_text(self.config_file, json.dumps(config.model_dump(mode="json"), indent=2) + "\n")

    def read_init_source(self) -> InitSource | None:
        """``init_from.json`` (None when the run is not a fine-tune, or was made by an older version)."""
        if not self.init_file.exists():
            return None
        try:
            return InitSource(**json.loads(self.init_file.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as error:
            raise ValueError(f"{self.init_file} does not hold a valid record of the initial weights ({error})") from None

    def write_init_source(self, source: InitSource) -> None:
        atomic_write_text(self.init_file, source.to_json())

    def read_summary(self) -> dict | None:
        """``summary.json`` (None when the run has not ended); one written under old names reads under the new ones."""
        if not self.summary_file.exists():
            return None
        try:
            summary = json.loads(self.summary_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{self.summary_file} is not valid JSON ({error})") from None
        if not isinstance(summary, dict):
            raise ValueError(f"{self.summary_file} does not hold a JSON object")
        return renamed_record(summary)

    def is_finished(self) -> bool:
        """Its summary says it finished (False without a summary, or with one that cannot be read: finishing
        the run again rewrites it)."""
        try:
            summary = self.read_summary()
        except ValueError:
            return False
        return summary is not None and summary.get("status") == "finished"

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.summary_file, json.dumps(summary, indent=2) + "\n")

    def read_metrics(self) -> list[dict]:
        """The JSON lines of ``metrics.jsonl``: a torn last line (a killed write) is skipped silently,
        a corrupt line elsewhere with a warning naming it."""
        return read_metrics_lines(self.metrics_file)

    def write_metrics(self, lines: list[dict]) -> None:
        atomic_write_text(self.metrics_file, "".join(json.dumps(line) + "\n" for line in lines))

    def append_metrics(self, line: dict) -> None:
        append_line(self.metrics_file, json.dumps(line))

    # --- housekeeping

    def set_aside(self, checkpoint: Path) -> Path:
        """Rename a damaged checkpoint to ``NAME.damaged``: kept for inspection, no longer a checkpoint."""
        target = checkpoint.with_name(checkpoint.name + ".damaged")
        os.replace(checkpoint, target)
        return target

    def remove_stale_temporaries(self) -> list[Path]:
        """Temporaries of writes that a killed process left in the folder."""
        return remove_stale_temporaries(self.path)

    def clear(self) -> None:
        """Remove what a run wrote here (config, init record, metrics, summary, log, checkpoints, events, analyses and
        their record ``analyzed.json``, report)."""
        files = (self.config_file, self.init_file, self.metrics_file, self.summary_file, self.train_log, self.report_file, self.analyzed_file)
        for path in files:
            path.unlink(missing_ok=True)
        for directory in (self.checkpoint_dir, self.tensorboard_dir, self.analysis_dir):
            shutil.rmtree(directory, ignore_errors=True)
        if self.path.is_dir():
            self.remove_stale_temporaries()


def read_metrics_lines(path: str | os.PathLike) -> list[dict]:
    """The JSON lines of a metrics file; see :meth:`RunFolder.read_metrics`."""
    path = Path(path)
    if not path.exists():
        return []
    texts = path.read_text(errors="replace").splitlines()
    lines = []
    for number, text in enumerate(texts, start=1):
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            line = None
        if not isinstance(line, dict) or "step" not in line:
            if number < len(texts):
                warnings.warn(f"{path}: line {number} is not a metrics record; skipped", stacklevel=2)
            continue
        lines.append(line)
    return lines
