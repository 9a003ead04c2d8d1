"""``nrecur train``, ``nrecur eval`` and ``nrecur run``: thin layers over :mod:`nrecur.train` and :mod:`nrecur.runs`.

Their options come from the configs and presets, which import torch: they are added when the command is
used (``build=``), and the library is imported inside the functions that need it.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

from nrecur._text import seconds_text
from nrecur.cli import UsageError, existing_path

if TYPE_CHECKING:
    from nrecur.tasks import Task
    from nrecur.train.config import RunConfig
    from nrecur.train.interventions import Intervention

# Options shared by the three config groups of ``nrecur train``; the model's vocab_size follows the task's.
MODEL_SKIP = ("vocab_size",)
# TrainConfig fields with their own options (not one generated option each).
TRAIN_SKIP = ("interventions",)
# The config options ``--resume`` takes: they extend (or shorten) a run without changing what it has done.
RESUME_OPTIONS = ("steps", "time_budget")


def register(subparsers) -> None:
    _register_train(subparsers)
    _register_eval(subparsers)
    _register_run(subparsers)


# --- nrecur train


def _register_train(subparsers) -> None:
    subparsers.add_parser(
        "train",
        help="train a model into a run folder (or resume one)",
        description=textwrap.fill(
            "Train a GPT on any task kind (--task), scored against its exact observer. Options not given keep "
            "the preset's values (each option's help lists the values the presets give it) or the defaults; "
            "--task mess3, rrxor and modular start from their presets (mess3, rrxor, modular-quick). The run "
            "folder gets config.json, metrics.jsonl, checkpoints/ and summary.json.",
            width=min(100, shutil.get_terminal_size().columns - 2),
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        build=_train_options,
    )


def _train_options(parser: argparse.ArgumentParser) -> None:
    from nrecur.architecture import GPTConfig
    from nrecur.cli.options import add_config_options, add_task_options
    from nrecur.train.config import TrainConfig
    from nrecur.train.presets import PRESETS

    run = parser.add_argument_group("run")
    run.add_argument("--out", metavar="DIR", help="run folder to create (default: runs/<preset or train>-<time>)")
    run.add_argument("--preset", choices=list(PRESETS), help="start from a preset's run config (n-recurrence presets: the deterministic run)")
    variant = run.add_mutually_exclusive_group()
    variant.add_argument("--stochastic", action="store_true", help="with an n-recurrence --preset: its stochastic run config instead")
    variant.add_argument("--finetune", action="store_true", help="with an n-recurrence --preset: its fine-tuning config (stochastic task; quick also lowers lr to 1e-3; give --init-from)")
    run.add_argument(
        "--resume", metavar="RUN", type=existing_path,
        help="continue the run in folder RUN exactly where it stopped (killed, or out of time). The only options "
        "it takes are --steps and --time-budget, which also continue a run that has ended: a new --time-budget "
        "only moves the stop; a new --steps keeps the learning-rate schedule of the old steps (decay_steps is set "
        "to them, the rate then stays at min_lr_ratio*lr), so the run ends exactly as one trained with --steps N "
        "--decay-steps OLD from the start",
    )  # fmt: skip
    run.add_argument("--init-from", metavar="RUN", type=existing_path, help="initialize the weights from run folder RUN (or a checkpoint file): fine-tuning. Stored as an absolute path, with a fingerprint of the weights used")
    run.add_argument(
        "--overwrite", "--force", dest="overwrite", action="store_true",
        help="write into --out even if it is not empty, replacing a run there (--force is the same option); "
        "without it only a new or empty folder is used",
    )  # fmt: skip
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--threads", type=int, metavar="N",
        help="CPU threads (default: chosen from the load at the start and followed while training: all cores when "
        "the machine is quiet, the free ones beside busy processes; OMP_NUM_THREADS sets them too)",
    )  # fmt: skip
    notes = preset_notes()
    add_task_options(parser, notes=notes)
    add_config_options(parser, GPTConfig, skip=MODEL_SKIP, title="model", notes=notes)
    add_config_options(parser, TrainConfig, skip=TRAIN_SKIP, title="training", notes=notes)
    _add_intervention_options(parser)
    parser.epilog = variant_notes()
    parser.set_defaults(handler=train_command, command="train", again=train_again)


_HEAD = r"(?P<layer>\d+)\.(?P<head>\d+)"
_STEPS = r"(?:@(?P<start>\d*):(?P<end>\d*))?"
ABLATE_FORM = "L.H[@A:B]"
CLAMP_FORM = "L.H=previous|period:N[@A:B]"


def _intervention(match: re.Match, **fields) -> Intervention:
    import pydantic

    from nrecur._config import format_error
    from nrecur.train.interventions import Intervention

    start, end = match["start"], match["end"]
    try:
        return Intervention(
            layer=int(match["layer"]), head=int(match["head"]), start=int(start) if start else 0,
            end=int(end) if end else None, **fields,
        )  # fmt: skip
    except pydantic.ValidationError as error:
        raise argparse.ArgumentTypeError(format_error(error)) from None


def parse_ablate_head(text: str) -> Intervention:
    """``L.H[@A:B]`` → an ablation of head H of layer L for steps A (default 0) to B (default: the end)."""
    match = re.fullmatch(_HEAD + _STEPS, text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: write {ABLATE_FORM}, e.g. 0.3 or 0.3@0:500")
    return _intervention(match, kind="ablate")


def parse_clamp_pattern(text: str) -> Intervention:
    """``L.H=previous|period:N[@A:B]`` → head H of layer L clamped to that attention pattern for steps A to B."""
    match = re.fullmatch(_HEAD + r"=(?P<pattern>previous|period:(?P<period>\d+))" + _STEPS, text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: write {CLAMP_FORM}, e.g. 1.2=previous or 1.2=period:3@100:600")
    pattern = "previous" if match["pattern"] == "previous" else "period"
    period = int(match["period"]) if match["period"] else None
    return _intervention(match, kind="clamp_pattern", pattern=pattern, period=period)


def _add_intervention_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "interventions during training (repeatable; recorded in config.json as train.interventions; "
        "active for steps A <= step < B and the evaluations at those steps; A defaults to 0, B to the end)"
    )
    group.add_argument(
        "--ablate-head", action="append", type=parse_ablate_head, metavar=ABLATE_FORM,
        help="zero the output z of head H of layer L, e.g. --ablate-head 0.3@0:500",
    )  # fmt: skip
    group.add_argument(
        "--clamp-pattern", action="append", type=parse_clamp_pattern, metavar=CLAMP_FORM,
        help="fix the attention pattern of head H of layer L: previous (each query on the previous token) or "
        "period:N (uniform over the earlier keys j <= i with j = i+1 mod N; N one of the task's periods)",
    )  # fmt: skip


def given_interventions(args: argparse.Namespace) -> list[Intervention]:
    """The interventions ``--ablate-head`` and ``--clamp-pattern`` ask for, in that order."""
    return [*(getattr(args, "ablate_head", None) or []), *(getattr(args, "clamp_pattern", None) or [])]


def _differences(config: RunConfig, base: RunConfig | None = None) -> dict[str, object]:
    """Field name → value where ``config`` differs from ``base`` (task, model and training fields);
    without ``base``, from the defaults (the task's: those of its own kind)."""
    found: dict[str, object] = {}
    for section in ("task", "model", "train"):
        mine = getattr(config, section)
        if base is not None:
            theirs = getattr(base, section)
        else:
            try:
                theirs = type(mine)()
            except ValueError:  # a kind without defaults for everything
                theirs = None
        for name in type(mine).model_fields:
            if name == "kind" or (section == "model" and name in MODEL_SKIP):
                continue
            value = getattr(mine, name)
            if type(mine) is not type(theirs) or value != getattr(theirs, name):
                found[name] = value
    return found


def preset_notes() -> dict[str, str]:
    """``--help`` text per option: the value each preset gives it where that differs from the default
    (generated from the presets' run configs)."""
    from nrecur.train.presets import PRESETS, get_preset

    by_field: dict[str, list[str]] = {}
    for name in PRESETS:
        for field, value in _differences(get_preset(name).run).items():
            by_field.setdefault(field, []).append(f"{name} {_show_value(value)}")
    return {field: "presets: " + ", ".join(values) for field, values in by_field.items()}


def variant_notes() -> str:
    """The ``--stochastic`` and ``--finetune`` variants of each n-recurrence preset, as differences from its run."""
    from nrecur.train.presets import PRESETS, get_preset

    lines = ["The --stochastic and --finetune variants change these values of their preset's run:"]
    for name in PRESETS:
        preset = get_preset(name)
        for variant in ("stochastic", "finetune"):
            config = getattr(preset, variant)
            if config is not None:
                changes = ", ".join(f"{field} {_show_value(value)}" for field, value in _differences(config, preset.run).items())
                lines.append(f"  --preset {name} --{variant}: {changes}")
    return "\n".join(lines)


def _show_value(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def base_config(args: argparse.Namespace) -> RunConfig:
    """The config options are applied to: the preset's (variant), the default preset of ``--task``, or the defaults."""
    from nrecur.architecture import GPTConfig
    from nrecur.cli.options import task_from_args
    from nrecur.train.config import RunConfig
    from nrecur.train.presets import DEFAULT_PRESET_OF_KIND, get_preset

    variant = "stochastic" if args.stochastic else "finetune" if args.finetune else "run"
    if variant != "run" and not args.preset:
        raise UsageError(f"--{variant} needs an n-recurrence --preset (quick, proposal, tiny)")
    if args.preset:
        preset = get_preset(args.preset)
        if args.task is not None and args.task != preset.kind:
            raise UsageError(f"--preset {args.preset} is a {preset.kind} preset; it cannot train --task {args.task}")
        return preset.variant(variant)
    if args.task in DEFAULT_PRESET_OF_KIND:
        return get_preset(DEFAULT_PRESET_OF_KIND[args.task]).run
    # A kind without a preset (n-recurrence: the defaults; hmm): the task from its options, the default model
    # with the task's vocabulary.
    task = task_from_args(args)
    return RunConfig(task=task, model=GPTConfig(vocab_size=task.vocab_size))


def config_from_train_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig ``nrecur train`` asks for: preset (or defaults), then every option given."""
    from nrecur.architecture import GPTConfig
    from nrecur.cli.options import given_options, task_from_args
    from nrecur.train.config import RunConfig, TrainConfig

    if args.finetune and not args.init_from:
        raise UsageError("--finetune starts from another run's weights: give --init-from RUN")
    base = base_config(args)
    task = task_from_args(args, base.task)
    model_given = given_options(GPTConfig, args, MODEL_SKIP)
    model_values = {**base.model.model_dump(), **model_given, "vocab_size": task.vocab_size}
    if task.max_length is not None and "n_ctx" not in model_given and task != base.task:
        # Sequences of a fixed length (modular: 3 x n_examples): the context follows them, whole.
        model_values["n_ctx"] = task.max_length - 1
    model = GPTConfig.model_validate(model_values)
    train_values = {**base.train.model_dump(), **given_options(TrainConfig, args, TRAIN_SKIP)}
    interventions = given_interventions(args)
    if interventions:
        train_values["interventions"] = [*base.train.interventions, *interventions]
    train = TrainConfig.model_validate(train_values)
    return RunConfig(task=task, model=model, train=train, init_from=args.init_from)


def train_command(args: argparse.Namespace) -> int:
    from nrecur._threads import plan_threads
    from nrecur.architecture import GPTConfig
    from nrecur.cli.options import given_options, given_task_options

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be an integer >= 1, got {args.threads}")
    threading = plan_threads(args.threads)  # before torch loads: OpenMP reads its wait policy then

    from nrecur.train import NonFiniteLossError, resume, train
    from nrecur.train.config import TrainConfig
    from nrecur.train.threads import ThreadWatcher

    progress = not args.no_progress
    watcher = ThreadWatcher(threading)
    watcher.apply()
    try:
        if args.resume:
            extend = {name: value for name, value in given_options(TrainConfig, args).items() if name in RESUME_OPTIONS}
            given = [*given_task_options(args), *(name for cls in (GPTConfig, TrainConfig) for name in given_options(cls, args))]
            given = ["--" + name.replace("_", "-") for name in given if name not in extend]  # as typed: --lr, --d-model
            flags = (
                ("task", args.task), ("preset", args.preset), ("init-from", args.init_from), ("out", args.out),
                ("overwrite", args.overwrite), ("stochastic", args.stochastic), ("finetune", args.finetune),
                ("ablate-head", args.ablate_head), ("clamp-pattern", args.clamp_pattern),
            )  # fmt: skip
            given += ["--" + flag for flag, on in flags if on]
            if given:
                raise UsageError(
                    f"--resume continues a run with its own config (only --steps and --time-budget may change); "
                    f"drop {', '.join(given)}"
                )
            result = resume(args.resume, progress=progress, callbacks=[watcher], **extend)
        else:
            config = config_from_train_args(args)
            out = args.out or f"runs/{args.preset or 'train'}-{time.strftime('%Y%m%d-%H%M%S')}"
            result = train(config, out, progress=progress, overwrite=args.overwrite, callbacks=[watcher])
    except NonFiniteLossError as error:
        print(f"nrecur train: error: {error}", file=sys.stderr)
        return 1
    print(format_result(result, continue_line=not progress))
    return 0


def train_again(args: argparse.Namespace, error: KeyboardInterrupt) -> str:
    """After an interrupt: resume the run folder once it holds a run, else the same command again."""
    from nrecur.cli import same_command

    run = getattr(error, "run_dir", None) or args.resume or args.out
    if run is not None and (Path(run) / "config.json").is_file():
        return shlex.join(["nrecur", "train", "--resume", str(run)])
    return same_command(args)


def format_result(result, continue_line: bool = True) -> str:
    """The end of ``nrecur train``: how the run ended, its last evaluation, and (``continue_line``; the progress
    output's last line says it too) the command that continues a run that stopped short."""
    from nrecur.train.loop import continue_command, why_stopped

    milestones = result.grokking
    evaluation = result.evaluations.get("eval")
    lines = [f"{result.run_dir}: {why_stopped(result)}: {result.steps} steps, {seconds_text(result.seconds)} s"]
    if evaluation is not None:
        lines.append(
            f"eval: KL {evaluation.kl:.4f} nats/token, model CE {evaluation.model_ce:.4f}, Bayes CE {evaluation.bayes_ce:.4f}, "
            f"{evaluation.accuracy_name} {evaluation.accuracy:.3f} (Bayes {evaluation.bayes_accuracy:.3f})"
        )
        for name, other in result.evaluations.items():
            if name != "eval":
                lines.append(f"{name}: KL {other.kl:.4f}, {other.accuracy_name} {other.accuracy:.3f} (Bayes {other.bayes_accuracy:.3f})")
    if milestones is not None:
        reached = f"step {milestones.threshold_step} ({seconds_text(milestones.threshold_seconds)} s)" if milestones.threshold_step is not None else "not reached"
        line = f"KL <= {milestones.kl_threshold:g}: {reached}"
        if "train" in result.evaluations:  # memorization is about a fixed training set (finite mode)
            memorized = milestones.memorization_step if milestones.memorization_step is not None else "not reached"
            delay = f", delay {milestones.delay} steps" if milestones.delay is not None else ""
            line += f"; memorization: {memorized}{delay}"
        lines.append(line)
    command = continue_command(result)
    if command and continue_line:
        lines.append(f"continue it: {command}")
    return "\n".join(lines)


def stopped_short(rows) -> list[str]:
    """For each run of the main job that stopped before its KL threshold (its steps or its time budget ran
    out): why, and the command that continues it."""
    from types import SimpleNamespace

    from nrecur.train.loop import continue_command, why_stopped

    lines = []
    for row in rows:
        ended = SimpleNamespace(
            run_dir=row.path, stop_reason=row.stop_reason, seconds=row.seconds, steps=row.steps,
            grokking=SimpleNamespace(threshold_step=row.threshold_step), time_budget=0.0,
        )  # fmt: skip
        command = continue_command(ended) if row.threshold_step is None else None
        if command:
            lines.append(f"{row.name} {why_stopped(ended)} ({row.steps} steps) before KL reached {row.kl_threshold:g}; continue it: {command}")
    return lines


# --- nrecur eval


def _register_eval(subparsers) -> None:
    subparsers.add_parser(
        "eval",
        help="evaluate a run against the exact observer (on its task or another)",
        description="Print the evaluation table of run folder RUN: model and Bayes cross-entropy, KL(observer || model) "
        "overall, by position and by stratum (period, state, slot), accuracy where the task scores it. Task options "
        "evaluate on another task: options of the run's own kind replace its values; --task KIND evaluates on "
        "another kind with the same vocabulary.",
        build=_eval_options,
    )


def _eval_options(parser: argparse.ArgumentParser) -> None:
    from nrecur.cli.options import add_task_options

    parser.add_argument("run", metavar="RUN", type=existing_path, help="run folder")
    parser.add_argument("--step", type=int, help="checkpoint step to load (default: the latest)")
    parser.add_argument("--eval-size", type=int, help="number of fresh sequences (default: the run's eval_size)")
    parser.add_argument("--eval-seed", type=int, help="seed of the sequences (default: the run's eval_seed)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where to run the model")
    add_task_options(parser, show_defaults=False, kind_help="evaluate on another task kind (default: the run's own)")
    parser.set_defaults(handler=eval_command, command="eval")


def eval_command(args: argparse.Namespace) -> int:
    from nrecur.cli.options import given_task_options, task_from_args
    from nrecur.runs import load_run
    from nrecur.train.loop import resolve_device

    if args.eval_size is not None and args.eval_size < 1:
        raise ValueError(f"--eval-size must be an integer >= 1, got {args.eval_size}")
    run = load_run(args.run, step=args.step, device=resolve_device(args.device))
    other = args.task is not None or given_task_options(args)
    task = task_from_args(args, run.task) if other else None
    evaluations = run.evaluate(task, size=args.eval_size, seed=args.eval_seed)
    print(format_evaluation_table(run, task or run.task, evaluations))
    return 0


def format_evaluation_table(run, task: Task, evaluations: dict) -> str:
    main = evaluations["eval"]
    acc = main.accuracy_name.replace("_", " ")
    lines = [
        f"{run.path} at step {run.step}; task {task.describe()}",
        "",
        f"{'set':<10}{'seqs':>6}{'model CE':>10}{'Bayes CE':>10}{'KL':>9}{acc:>12}{'Bayes acc':>11}",
    ]
    for name, e in evaluations.items():
        lines.append(
            f"{name:<10}{e.n_sequences:>6}{e.model_ce:>10.4f}{e.bayes_ce:>10.4f}{e.kl:>9.4f}"
            f"{e.accuracy:>12.3f}{e.bayes_accuracy:>11.3f}"
        )
    if main.by_stratum:
        lines += ["", f"by {main.stratum_title or 'stratum'} ({main.name}):", f"{'':>8}{'share':>8}{'KL':>9}{acc:>12}"]
        for part in main.by_stratum:
            lines.append(f"{part.name:>8}{part.share:>8.3f}{part.kl:>9.4f}{part.accuracy:>12.3f}")
    lines += ["", "KL by position (predicting token i+1 from tokens 0..i):"]
    per = main.kl_per_position
    for start in range(0, len(per), 8):
        chunk = " ".join(f"{v:.4f}" for v in per[start : start + 8])
        lines.append(f"  {start:>3}-{min(start + 7, len(per) - 1):<3} {chunk}")
    return "\n".join(lines)


# --- nrecur run


def _register_run(subparsers) -> None:
    subparsers.add_parser(
        "run",
        help="the main job: deterministic until it reaches its KL threshold, then stochastic from scratch and fine-tuned, and Mess3",
        description="Train the preset's deterministic task until eval KL reaches its threshold, then its stochastic "
        "task (p_noise = p_transition = 1/(5n)) from scratch and fine-tuned from the first run, and the Mess3 "
        "belief-geometry model, and print a summary table; then run the analyses that apply to each run, write "
        "each run's report.html and the index over them (--out/index.html). Runs go under --out; running again "
        "reuses finished runs, resumes interrupted ones and analyzes only runs not analyzed yet (or whose analyses "
        "failed). Exit code 1 when a worker or an analysis failed (the summary and index of the rest are written).",
        build=_run_options,
    )


def _run_options(parser: argparse.ArgumentParser) -> None:
    from nrecur.cli import same_command
    from nrecur.train.presets import main_job_presets

    parser.add_argument(
        "--preset", default="quick", choices=main_job_presets(),
        help="scale and recipe (default: quick, for a 2-core CPU; quick-adamw: quick with AdamW, the recipe the studies ran with)",
    )  # fmt: skip
    parser.add_argument("--out", default="runs", metavar="DIR", help="where the run folders go (default: runs)")
    parser.add_argument("--jobs", type=int, default=2, help="run the trainings and analyses side by side in this many processes (1: one after the other)")
    parser.add_argument("--threads", type=int, help="CPU threads in all, split between the side-by-side workers (default: all cores)")
    parser.add_argument("--fresh", action="store_true", help="start every run over instead of reusing or resuming")
    parser.add_argument("--no-analyze", action="store_true", help="train only: no analyses, reports or index")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run_command, command="run", again=lambda args, error: same_command(args, drop=("--fresh",)))


def run_command(args: argparse.Namespace) -> int:
    from nrecur.jobs.main import run_main_job
    from nrecur.train.presets import get_preset

    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    try:
        result = run_main_job(
            get_preset(args.preset), Path(args.out), jobs=args.jobs, fresh=args.fresh, progress=not args.no_progress,
            threads=args.threads, analyze=not args.no_analyze,
        )  # fmt: skip
    except RuntimeError as error:  # a worker failed; its train.log says why
        print(f"nrecur run: error: {error}", file=sys.stderr)
        return 1
    print(result.table())
    for line in stopped_short(result.rows):
        print(line)
    print(f"\nmain job '{result.preset}' took {seconds_text(result.seconds)} s; summary in {Path(args.out) / (result.preset + '-summary.md')}")
    if result.index is not None:
        print(f"reports: {result.index}")
    for note in result.notes:
        print(f"nrecur run: error: {note}", file=sys.stderr)
    if result.notes:
        count = len(result.notes)
        print(f"nrecur run: {count} {'analysis' if count == 1 else 'analyses'} failed; running the job again retries them", file=sys.stderr)
    return 1 if result.notes else 0
