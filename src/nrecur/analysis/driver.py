"""One driver for every analysis: the CLI, the main job's workers, the studies and the Python API call it.

:func:`analyze` chooses the analyses that apply to a run, turns the options it is
given into each analysis's typed options (refusing one that no chosen analysis
takes), computes every result, and writes each into the run's ``analysis/``
folder: ``NAME.json`` (the file's ``name``, the ``headline``, the checkpoint
``step``, then the result's fields) with its figures beside it. With
``over_training`` it also runs, through one generic wrapper
(:func:`over_checkpoints`), every analysis that makes sense over training at each
saved checkpoint (``NAME_over_training.json``). :func:`compute` is the one-line
Python entry: ``compute(run, "probes", n_sequences=512)``.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

from nrecur._io import atomic_write_text, remove_stale_temporaries
from nrecur._log import logger
from nrecur._text import seconds_text
from nrecur.analysis.base import showing_progress, progress_bar
from nrecur.analysis.writer import ResultWriter, Written
from nrecur.analysis.contract import (
    ANALYSES, Analysis, OptionError, Options, Result, as_training_saw_it, initialization_of, json_ready, resolve_reference, seen_at,
)  # fmt: skip
from nrecur.runs import load_run
from nrecur.train.interventions import Intervention

__all__ = [
    "AnalysisInterrupted", "Outcome", "OverTraining", "analyze", "choose", "compute", "computing_in", "computing_line", "over_checkpoints",
    "read_result", "resolve_options", "reusable", "seen_with", "write_result",
]  # fmt: skip

OVER_TRAINING = "_over_training"


@dataclass(frozen=True)
class OverTraining:
    """An analysis at every saved checkpoint: each headline figure as a curve over steps, and per checkpoint the
    small part of its result the analysis keeps (``snapshots``: a figure's points)."""

    analysis: str
    steps: tuple[int, ...]
    series: dict[str, list[float]]
    """headline name → its value at each step."""
    snapshots: list[dict]
    """Per step, what the analysis's ``snapshot`` keeps of that step's result (empty dicts where it keeps none)."""
    options: dict
    headline: dict[str, float] = field(default_factory=dict)
    """The last checkpoint's headline, and ``checkpoints``."""

    @property
    def name(self) -> str:
        return self.analysis + OVER_TRAINING

    def to_json(self) -> dict:
        data = json_ready(self)
        return {"headline": data.pop("headline"), **data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "OverTraining":
        series = {key: [float("nan") if v is None else float(v) for v in values] for key, values in data["series"].items()}
        headline = {key: float("nan") if v is None else float(v) for key, v in data["headline"].items()}
        return cls(data["analysis"], tuple(data["steps"]), series, list(data["snapshots"]), dict(data["options"]), headline)


@dataclass(frozen=True)
class Outcome:
    """What the driver did with one analysis (``NAME_over_training`` for one over the saved checkpoints)."""

    name: str
    status: Literal["wrote", "computed", "skipped", "failed"]
    detail: str
    """Why it was skipped, the error it failed with, or what it wrote."""
    seconds: float
    result: Result | OverTraining | None = None
    paths: tuple[Path, ...] = ()


def choose(run, what: Iterable[str] = ("all",)) -> tuple[list[Analysis], list[tuple[str, str]]]:
    """The analyses ``what`` names (``all``: every registered one that applies and runs under ``all``, see
    :attr:`Analysis.in_all`; those named beside ``all`` too) and ``(name, why)`` for those left out. An unknown
    name, or one named explicitly that does not apply, is an :class:`OptionError`."""
    what = list(dict.fromkeys(what))
    unknown = [name for name in what if name != "all" and name not in ANALYSES]
    if unknown:
        raise OptionError(f"unknown analysis {', '.join(unknown)}; choose from {', '.join(ANALYSES)} or all")
    if "all" in what:
        reasons = {name: analysis.applies(run) for name, analysis in ANALYSES.items()}
        for name, analysis in ANALYSES.items():
            if reasons[name] is None and not analysis.in_all and name not in what:
                reasons[name] = f"a search that costs minutes, not run under all; run it by name (--what {name})"
        return [ANALYSES[n] for n, why in reasons.items() if why is None], [(n, why) for n, why in reasons.items() if why is not None]
    chosen = [ANALYSES[name] for name in what]
    for analysis in chosen:
        why = analysis.applies(run)
        if why is not None:
            raise OptionError(f"{analysis.name} does not apply to {run.path}: {why}")
    return chosen, []


def resolve_options(
    chosen: list[Analysis], given: Mapping[str, Any] | None = None, caps: Mapping[str, int] | None = None, explicit: bool = True
) -> tuple[dict[str, Options], list[str]]:
    """Each chosen analysis's typed options, and notes on options that some analyses do not take.

    ``given`` maps an option (``n_sequences``) or an analysis's option (``probes.mlp_rows``) to its value. An
    option no chosen analysis takes is an :class:`OptionError`; so is one that an analysis named explicitly
    (``explicit``) does not take. ``caps`` lowers an option's default where it is larger (a job's analyses use
    fewer sequences); a value given explicitly is never capped.
    """
    given = dict(given or {})
    names = {a.name for a in chosen}
    qualified = {key for key in given if "." in key}
    for key in qualified:
        analysis = key.split(".", 1)[0]
        if analysis not in names:
            raise OptionError(f"option {key}: {analysis} is not among the analyses to run ({', '.join(names)})")
    plain = {key: value for key, value in given.items() if key not in qualified}
    notes = []
    for key in plain:
        takers = [a.name for a in chosen if key in a.options.model_fields]
        if not takers and len(chosen) == 1:
            raise OptionError(f"{chosen[0].name} takes no option {key}; it takes {', '.join(chosen[0].options.model_fields)}")
        if not takers:
            raise OptionError(f"no analysis to run takes option {key}; " + "; ".join(f"{a.name} takes {', '.join(a.options.model_fields)}" for a in chosen))
        others = [a for a in chosen if a.name not in takers]
        if others and explicit:
            raise OptionError(f"{others[0].name} takes no option {key}; it takes {', '.join(others[0].options.model_fields)}")
        if others:
            notes.append(f"{', '.join(a.name for a in others)} take no option {key} and run with their own settings")
    resolved = {}
    for analysis in chosen:
        fields = analysis.options.model_fields
        mine = {key: value for key, value in plain.items() if key in fields}
        mine.update({key.split(".", 1)[1]: value for key, value in given.items() if key.startswith(analysis.name + ".")})
        for key, cap in (caps or {}).items():
            default = fields[key].default if key in fields else None
            if key not in mine and isinstance(default, int) and not isinstance(default, bool) and default > cap:
                mine[key] = cap
        resolved[analysis.name] = analysis.make_options(mine)
    return resolved, notes


def compute(run, name: str, *, progress: bool = True, **options) -> Result:
    """One analysis's result on ``run`` (nothing written, nothing drawn): ``compute(run, "probes", seed=1)``.

    With ``progress``, it says through the ``nrecur`` logger (:mod:`nrecur._log`) what it computes, shows the
    analysis's own progress, and says when it is done."""
    (analysis,), _ = choose(run, [name])
    chosen = analysis.make_options(options)
    start = time.perf_counter()
    if progress:
        logger().info(f"{name}: computing on {run.path} at step {run.step:,}")
    with showing_progress(progress):
        result = analysis.compute(run, chosen)
    if progress:
        logger().info(f"{name}: done in {seconds_text(time.perf_counter() - start)} s")
    return result


def write_result(
    result: Result | OverTraining, folder: str | Path, step: int | None = None, interventions: list[str] | None = None, about: Mapping[str, Any] | None = None
) -> list[Path]:
    """``folder/NAME.json`` and the result's figures beside it (atomically); returns the JSON's path, then the
    figures'.

    The file's ``step`` is the checkpoint the result is of (its own ``step``); ``step``, when given, is the
    checkpoint the caller asked for, and a result of another checkpoint is refused (a ValueError naming both)
    before anything is written. ``interventions``: those the model was analyzed with
    (``analyzed_with_interventions``); ``about``: more such facts, written beside ``step`` (the driver's: what
    the control model is, ``initialization`` (:func:`~nrecur.analysis.contract.initialization_of`), and what
    it was analyzed with, ``controls_with_interventions``)."""
    own = getattr(result, "step", None)
    if step is not None and own is not None and own != step:
        raise ValueError(f"{result.name}: the result is of step {own}, not of the requested checkpoint {step}; nothing written")
    step = own if own is not None else step
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder, recursive=False)  # a killed analysis's (never a live writer's)
    if isinstance(result, OverTraining):
        figures = resolve_reference("nrecur.analysis.figures.over_training:draw")(result, folder)
    else:
        figures = ANALYSES[result.name].draw(result, folder)
    body = result.to_json()
    body.pop("headline", None)
    body.pop("step", None)
    data = {"name": result.name, "headline": json_ready(result.headline), **({"step": step} if step is not None else {})}
    data.update({"analyzed_with_interventions": list(interventions)} if interventions else {})
    data.update(about or {})
    data.update(body)
    data["figures"] = [path.name for path in figures]
    path = folder / f"{result.name}.json"
    atomic_write_text(path, json.dumps(json_ready(data), indent=1) + "\n")
    return [path, *figures]


def reusable(path: str | Path, name: str, options: Mapping[str, Any], step: int | None) -> dict | None:
    """The JSON written at ``path`` when it is a result of analysis ``name`` at checkpoint ``step`` whose stored
    options equal, in full, ``options`` made into that analysis's typed options (defaults filled in); else None
    (no file, an unreadable one, another analysis, step or option). A caller that gets None computes and writes."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    wanted = ANALYSES[name].make_options(dict(options)).model_dump(mode="json")
    if not isinstance(data, dict) or data.get("name") != name or data.get("step") != step:
        return None
    return data if data.get("options") == json_ready(wanted) else None


def read_result(path: str | Path) -> Result | OverTraining:
    """A result again from its ``NAME.json`` (to redraw its figures, or to use its numbers)."""
    data = json.loads(Path(path).read_text())
    name = data.get("name", "")
    if name.endswith(OVER_TRAINING) and "series" in data:
        return OverTraining.from_json(data)
    if name not in ANALYSES:
        raise ValueError(f"{path}: {name!r} is not a registered analysis ({', '.join(ANALYSES)})")
    return ANALYSES[name].result.from_json(data)


def over_checkpoints(
    analysis: Analysis, run, options: Options, steps: list[int] | None = None, load: Callable | None = None, interventions: Sequence[Intervention] = ()
) -> OverTraining:
    """``analysis`` at every saved checkpoint of ``run`` (or at ``steps``), with its over-training options on
    top of ``options``. ``load(step)`` gives that step's run (default: :func:`nrecur.runs.load_run`). The same
    seed, so the same sequences and splits, at every step: the curves differ only by the weights.
    ``interventions``: each checkpoint is analyzed with those active at its step, its controls with those
    active at step 0 (:func:`~nrecur.analysis.contract.as_training_saw_it`)."""
    steps = list(run.checkpoint_steps if steps is None else steps)
    load = load or (lambda step: load_run(run.path, step=step, device=next(run.model.parameters()).device))
    given = options.model_dump()
    overrides = {  # an analysis's lighter settings for every checkpoint, never more than asked for
        key: min(value, given[key]) if isinstance(value, int) and not isinstance(value, bool) and isinstance(given.get(key), int) else value
        for key, value in (analysis.over_training or {}).items()
    }
    options = analysis.make_options({**given, **overrides})
    series: dict[str, list[float]] = {}
    snapshots = []
    for index, step in enumerate(progress_bar(steps, f"{analysis.name} over training", total=len(steps))):
        result = _as_trained(analysis, load(step), options, interventions)
        for key, value in result.headline.items():
            series.setdefault(key, [float("nan")] * index).append(float(value))
        for key in series.keys() - result.headline.keys():
            series[key].append(float("nan"))
        snapshots.append(analysis.snapshot(result) if analysis.snapshot else {})
    headline = {key: values[-1] for key, values in series.items()}
    headline["checkpoints"] = float(len(steps))
    return OverTraining(analysis.name, tuple(steps), series, snapshots, options.model_dump(mode="json"), headline)


def analyze(
    run,
    what: Iterable[str] = ("all",),
    options: Mapping[str, Any] | None = None,
    *,
    over_training: bool = False,
    folder: str | Path | None = None,
    write: bool = True,
    caps: Mapping[str, int] | None = None,
    with_interventions: bool = False,
    on_error: Literal["raise", "record"] = "raise",
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[Outcome]:
    """Run the analyses ``what`` (default: every one that applies) on ``run`` and write each result.

    ``folder``: where results go (default: the run's ``analysis/``, or ``analysis/step_NNNNNNNN/`` for an
    earlier checkpoint). With ``on_error="raise"`` every analysis is computed before anything is written, so
    a failure leaves the folder as it was; with ``"record"`` (a job) each result is written as soon as it is
    done and a failure is recorded while the others go on. ``with_interventions``: the model as training saw
    it: the model with the run's interventions active at its step, every control model (the initialization)
    with those active at step 0, and over training each checkpoint with those active at its step (an
    analysis with its own ``with_interventions`` option applies them itself). ``log`` receives one line per
    note and per result.
    """
    log = log or (lambda line: None)
    explicit = "all" not in list(what)
    chosen, skipped = choose(run, what)
    resolved, notes = resolve_options(chosen, options, caps, explicit=explicit)
    if over_training and explicit and not any(a.over_training is not None for a in chosen):
        over = ", ".join(name for name, a in ANALYSES.items() if a.over_training is not None)
        raise OptionError(f"over the checkpoints (--checkpoints all) run {over}; none of them is chosen")
    for note in notes:
        log(f"note: {note}")
    outcomes = [Outcome(name, "skipped", why, 0.0) for name, why in skipped]
    for name, why in skipped:
        log(f"skipped {name}: {why}")
    if folder is None:
        latest = not run.checkpoint_steps or run.step == run.checkpoint_steps[-1]
        folder = run.folder.analysis_dir if latest else run.folder.analysis_dir_at(run.step)
    interventions = tuple(run.config.train.interventions) if with_interventions else ()
    seen = seen_with(interventions, run.step)
    jobs: list[tuple[str, Callable[[], Result | OverTraining], bool]] = []
    for analysis in chosen:
        opts = resolved[analysis.name]
        if with_interventions and "with_interventions" in analysis.options.model_fields:
            opts = opts.model_copy(update={"with_interventions": True})
        jobs.append((analysis.name, lambda a=analysis, o=opts: _as_trained(a, run, o, interventions), False))
        if over_training and analysis.over_training is not None and len(run.checkpoint_steps) > 1:
            jobs.append((analysis.name + OVER_TRAINING, lambda a=analysis, o=opts: over_checkpoints(a, run, o, interventions=interventions), True))
    if over_training and len(run.checkpoint_steps) < 2:
        log(f"note: nothing runs over training: {run.path} has {len(run.checkpoint_steps)} saved checkpoint (train with --log-checkpoints N for more)")
    done: dict[int, Outcome] = {}  # by job index: failed, or computed (then written, when writing)
    left = 0  # the first job not computed
    with ResultWriter(folder, staged=on_error == "raise") if write else contextlib.nullcontext() as writer:

        def submit(index: int) -> None:
            name, _, is_series = jobs[index]
            about = {"initialization": initialization_of(run.config), **seen.get("series" if is_series else "checkpoint", {})}
            step, result = None if is_series else run.step, done[index].result
            writer.submit(index, name, lambda target: write_result(result, target, step=step, about=about))

        try:
            with showing_progress(progress):
                for index, (name, job, is_series) in enumerate(jobs):
                    left, start = index, time.perf_counter()
                    try:  # a signal (KeyboardInterrupt) goes to the handler below, which writes what was computed
                        if progress:
                            log(computing_line(name, index + 1, len(jobs)))
                        result = job()
                    except Exception as error:  # noqa: BLE001 - a job records it and goes on; the CLI raises it
                        if on_error == "raise":
                            raise  # the writer, left, drops what it staged: the folder stays as it was
                        traceback.print_exc()
                        done[index] = Outcome(name, "failed", f"{type(error).__name__}: {error}", time.perf_counter() - start)
                        log(f"{name} failed: {type(error).__name__}: {error}")
                        continue
                    done[index], left = Outcome(name, "computed", "", time.perf_counter() - start, result), index + 1
                    if writer:  # in the background where it can (nrecur.analysis.writer), while the next one computes
                        submit(index)
                        done.update(_written(writer.take(), done, run, jobs, log, on_error))  # those written by now
                left = len(jobs)
                if writer:
                    done.update(_written(writer.finish(), done, run, jobs, log, on_error))
        except KeyboardInterrupt as error:
            if writer:  # what was computed is written (a write that fails is recorded: the interrupt is the news)
                for index in sorted(i for i, o in done.items() if o.status == "computed" and i not in writer.accepted):
                    submit(index)
                done.update(_written(writer.finish(), done, run, jobs, log, "record"))
            _interrupted(error, jobs[left:], outcomes + [done[i] for i in sorted(done)])
    return outcomes + [done[i] for i in sorted(done)]


class AnalysisInterrupted(KeyboardInterrupt):
    """A signal (Ctrl-C, SIGTERM) stopped :func:`analyze`: the results computed until then were written (each
    file whole), ``remaining`` names the analyses still to run."""

    def __init__(self, written: list[str], remaining: list[str], cause: KeyboardInterrupt) -> None:
        self.written = written
        self.remaining = remaining
        self.signal_name = getattr(cause, "signal_name", "SIGINT")
        self.exit_code = getattr(cause, "exit_code", 130)
        self.done = f"wrote {', '.join(written)}" if written else "nothing was written"
        """What was kept, in words."""
        super().__init__(f"{self.done}; still to run: {', '.join(remaining)}")


def _interrupted(error: KeyboardInterrupt, left: list, outcomes: list[Outcome]) -> None:
    """Raise :class:`AnalysisInterrupted`: ``outcomes`` are those before the interrupt (what computed is
    written), ``left`` the jobs it stopped."""
    written = [o.name for o in outcomes if o.status == "wrote"]
    remaining = list(dict.fromkeys(name.removesuffix(OVER_TRAINING) for name, _, _ in left))
    raise AnalysisInterrupted(written, remaining, error) from error


def _written(writes: list[Written], done: dict[int, Outcome], run, jobs, log, on_error: str) -> dict[int, Outcome]:
    """The outcomes of ``writes`` (of the computed outcomes in ``done``), by job index; one line each through
    ``log``. With ``on_error="raise"``, a write that failed raises its error before any line is logged (nothing
    was written, where staged)."""
    failed = [written for written in writes if written.error is not None]
    if failed and on_error == "raise":
        raise failed[0].error
    outcomes = {}
    for written in writes:
        outcome = done[written.key]
        if written.error is not None:
            sys.stderr.write(written.trace)
            log(f"{outcome.name} failed while writing: {type(written.error).__name__}: {written.error}")
            outcomes[written.key] = Outcome(outcome.name, "failed", f"{type(written.error).__name__}: {written.error}", outcome.seconds)
            continue
        head = ", ".join(f"{k} {v:.4g}" for k, v in list(outcome.result.headline.items())[:6])
        _, _, is_series = jobs[written.key]
        at = "all checkpoints" if is_series else f"step {run.step}"
        log(f"{outcome.name} ({at}, {outcome.seconds:.1f} s): {head}{' …' if len(outcome.result.headline) > 6 else ''}")
        log(f"  wrote {written.paths[0]} and {len(written.paths) - 1} figure files in {written.seconds:.1f} s")
        outcomes[written.key] = Outcome(outcome.name, "wrote", f"{len(written.paths)} files", outcome.seconds, outcome.result, written.paths)
    return outcomes


_COMPUTING = re.compile(r"^(\S+): computing \((\d+) of (\d+)\)$")


def computing_line(name: str, number: int, total: int) -> str:
    """The line :func:`analyze` logs as it starts an analysis (with ``progress``): ``probes: computing (1 of 9)``."""
    return f"{name}: computing ({number} of {total})"


def computing_in(line: str) -> str | None:
    """What a :func:`computing_line` says is being computed (``probes (1 of 9)``); None for any other line."""
    match = _COMPUTING.match(line)
    return f"{match[1]} ({match[2]} of {match[3]})" if match else None


def seen_with(interventions: Sequence[Intervention], step: int) -> dict[str, dict[str, list[str]]]:
    """What the models of an analysis at ``step`` (``checkpoint``) and over training (``series``) are analyzed
    with, as their files say it: the model with the interventions active at ``step`` (over training: each at
    the checkpoints where it is active), the controls with those active at step 0. Empty without interventions."""
    if not interventions:
        return {}
    controls = {"controls_with_interventions": [i.describe() for i in interventions if i.active(0)]}
    return {
        "checkpoint": {"analyzed_with_interventions": [i.describe() for i in interventions if i.active(step)], **controls},
        "series": {"analyzed_with_interventions": [i.describe() for i in interventions], **controls},
    }


def _as_trained(analysis: Analysis, run, options: Options, interventions: Sequence[Intervention]) -> Result:
    """``analysis.compute(run, options)``, every model seen as training saw it (none for an analysis that
    applies the interventions itself: its ``with_interventions`` option)."""
    if "with_interventions" in analysis.options.model_fields:
        interventions = ()
    with as_training_saw_it(interventions):
        seen_at(run.model, run.step)
        return analysis.compute(run, options)

