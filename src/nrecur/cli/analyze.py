"""``nrecur analyze RUN [--what NAME ...]``: run analyses on a trained run and write them into its folder."""

from __future__ import annotations

import argparse
import json
import re
import shlex

from nrecur.cli import UsageError, existing_path, same_command


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="open a trained model up: probes, belief geometry, updates after events, heads, patching, edits",
        description="Run analyses on run folder RUN (its latest checkpoint, or --step) and write "
        "RUN/analysis/NAME.json (a 'headline' of named figures, each beside its control, then the data behind "
        "every figure) with its figures (PNG and SVG) beside it. Without --what, every analysis that applies "
        "to the run's task runs. `nrecur analyze --list` lists the analyses and the options each takes.",
    )
    parser.add_argument("run", metavar="RUN", nargs="?", type=existing_path, help="run folder")
    parser.add_argument("--what", nargs="+", default=["all"], metavar="NAME", help="analyses to run, or all (default: all that apply, but for the searches that cost minutes, which run when named; --list names them)")
    parser.add_argument("--list", action="store_true", help="list the analyses, what each measures and the options each takes, then exit")
    parser.add_argument("--step", type=int, help="checkpoint step to analyze (default: the latest; an earlier step writes to RUN/analysis/step_NNNNNNNN/)")
    parser.add_argument(
        "--checkpoints", choices=["latest", "all"], default="latest",
        help="all: also run every analysis that makes sense over training at each saved checkpoint "
        "(analysis/NAME_over_training.json: each headline figure beside its control as a curve over steps); "
        "runs with log-spaced checkpoints (--log-checkpoints) give the curves their points (default: latest)",
    )  # fmt: skip
    parser.add_argument("--sequences", type=int, metavar="N", help="fresh sequences to analyze: the option n_sequences (default: each analysis's own)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sequences, splits and controls (default: 0)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="OPTION=VALUE",
        help="an analysis option, for every chosen analysis that takes it (n_sequences=512) or for one (probes.mlp_rows=8000); "
        "values are read as JSON where they parse (numbers, true/false, lists), else as text; repeatable",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where to run the model (default: cpu)")
    parser.add_argument(
        "--with-interventions", action="store_true",
        help="analyze every model as training saw it, with the run's interventions (--ablate-head, --clamp-pattern of "
        "nrecur train) active at its step: the checkpoint at its step, the controls (the run's initialization) at step 0, "
        "each checkpoint over training at its own (default: the bare models)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress output")
    parser.set_defaults(handler=analyze_command, command="analyze", again=analyze_again)


def analyze_again(args: argparse.Namespace, error: KeyboardInterrupt) -> str:
    """After an interrupt: the same command for the analyses not written yet (``error.remaining``), with the
    options that only written analyses took left out and a plain option that only some of the rest take given
    to those by name (``--set probes.mlp_steps=20``): the rest runs as those analyses would have."""
    remaining = getattr(error, "remaining", None)
    if not remaining:
        return same_command(args)
    from nrecur.analysis import ANALYSES

    def kept(key: str, value: str) -> list[str]:
        if "." in key:
            return [f"{key}={value}"] if key.split(".", 1)[0] in remaining else []
        takers = [name for name in remaining if key in ANALYSES[name].options.model_fields]
        return [f"{key}={value}"] if takers == remaining else [f"{name}.{key}={value}" for name in takers]

    words, argv = [], list(args.argv)
    while argv:
        word = argv.pop(0)
        flag, equals, attached = word.partition("=")
        if flag == "--what":
            while not equals and argv and not argv[0].startswith("-"):
                argv.pop(0)
        elif flag in ("--set", "--sequences"):
            text = attached if equals else argv.pop(0)
            key, _, value = text.partition("=") if flag == "--set" else ("n_sequences", "=", text)
            settings = kept(key.strip(), value)
            if flag == "--sequences" and settings == [f"n_sequences={text}"]:
                words += ["--sequences", text]
            else:
                words += [part for setting in settings for part in ("--set", setting)]
        else:
            words.append(word)
    return shlex.join(["nrecur", *words, "--what", *remaining])


def parse_settings(settings: list[str]) -> dict:
    """``["probes.mlp_rows=8000", "periods=[2,3,4]"]`` → ``{"probes.mlp_rows": 8000, "periods": [2, 3, 4]}``."""
    options = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {setting!r}: give OPTION=VALUE (e.g. n_sequences=512 or probes.mlp_rows=8000)")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        options[key.strip()] = value
    return options


def plain(doc: str) -> str:
    """A docstring's text for a terminal: on one line, a cross-reference as the name it points at (the last part
    after ``~``) and double backticks as single ones."""
    doc = re.sub(r":\w+:`~[^`]*?([^.`]+)`", r"`\1`", " ".join(doc.split()))
    doc = re.sub(r":\w+:`([^`]+)`", r"`\1`", doc)
    return re.sub(r"``(.+?)``", r"`\1`", doc)


def list_analyses() -> str:
    """Every analysis, what it measures and its options with their defaults and meaning."""
    from nrecur.analysis import ANALYSES

    lines = []
    for analysis in ANALYSES.values():
        lines.append(f"{analysis.name}: {analysis.description}")
        for option, (default, doc) in analysis.options.documented().items():
            lines.append(f"    {option} (default {default!r}): {plain(doc)}")
        over = "yes" if analysis.over_training is not None else "no"
        lines.append(f"    over training (--checkpoints all): {over}")
        if not analysis.in_all:
            lines.append(f"    under --what all: no (it costs minutes; --what {analysis.name} runs it)")
    return "\n".join(lines)


def analyze_command(args: argparse.Namespace) -> int:
    from nrecur.analysis import OptionError, analyze
    from nrecur.runs import load_run
    from nrecur.train.loop import resolve_device

    if args.list:
        print(list_analyses())
        return 0
    if args.run is None:
        raise UsageError("give a run folder: nrecur analyze RUN (or --list to see the analyses)")
    from nrecur.analysis import ANALYSES

    unknown = [name for name in args.what if name != "all" and name not in ANALYSES]
    if unknown:  # before the run is loaded: a typo costs no time
        raise UsageError(f"unknown analysis {', '.join(unknown)}; choose from {', '.join(ANALYSES)} or all")
    options = parse_settings(args.set)
    if args.sequences is not None:
        if args.sequences < 8:
            raise UsageError(f"--sequences must be an integer >= 8, got {args.sequences}")
        options["n_sequences"] = args.sequences
    options["seed"] = args.seed
    run = load_run(args.run, step=args.step, device=resolve_device(args.device))
    interventions = run.config.train.interventions
    if args.with_interventions and not interventions:
        raise UsageError(f"--with-interventions: {run.path} trained without interventions")
    if interventions and not args.with_interventions:
        print(f"note: this run trained with interventions ({', '.join(i.describe() for i in interventions)}); analyzing the bare model (--with-interventions applies them)")
    elif args.with_interventions and not any(i.active(run.step) for i in interventions):
        print(f"note: none of this run's interventions was active at step {run.step}: the model is analyzed bare (its controls, the "
              "initialization, with those active at step 0; over training, each checkpoint with those active there)")  # fmt: skip
    try:
        analyze(
            run, args.what, options, over_training=args.checkpoints == "all", with_interventions=args.with_interventions,
            progress=not args.no_progress, log=lambda line: print(line, flush=True),
        )  # fmt: skip
    except OptionError as error:
        raise UsageError(str(error)) from None
    return 0
