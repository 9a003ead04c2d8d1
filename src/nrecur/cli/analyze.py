"""``nrecur analyze RUN --what NAME``: run analyses on a trained run and write them into its folder."""

from __future__ import annotations

import argparse
import inspect
import time

from nrecur._text import seconds_text
from nrecur.analysis import ANALYSES, write_analysis
from nrecur.cli import UsageError


def register(subparsers) -> None:
    names = list(ANALYSES)
    parser = subparsers.add_parser(
        "analyze",
        help="open a trained model up: probes, belief geometry, updates after events, failure modes",
        description="Run analyses on run folder RUN (its latest checkpoint, or --step) and write "
        "RUN/analysis/NAME.json (a 'headline' of named figures, then the data behind every figure) with its "
        "figures (PNG and SVG) beside it. --what all runs every analysis that applies to the run's task. "
        + " ".join(f"{a.name}: {a.description}." for a in ANALYSES.values()),
    )
    parser.add_argument("run", metavar="RUN", help="run folder")
    parser.add_argument("--what", nargs="+", required=True, choices=[*names, "all"], metavar="NAME", help=f"analyses to run: {', '.join(names)}, or all")
    parser.add_argument("--step", type=int, help="checkpoint step to analyze (default: the latest; an earlier step writes to RUN/analysis/step_NNNNNNNN/)")
    parser.add_argument(
        "--checkpoints", choices=["latest", "all"], default="latest",
        help="all: also run the analyses that make sense over training ("
        + ", ".join(a.name for a in ANALYSES.values() if a.over_training is not None)
        + ") at every saved checkpoint (analysis/NAME_over_training.json); runs with log-spaced checkpoints "
        "(--log-checkpoints) give the curves their points (default: latest)",
    )  # fmt: skip
    parser.add_argument("--sequences", type=int, help="fresh sequences to analyze (default: each analysis's own)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sequences (default: 0)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where to run the model (default: cpu)")
    parser.add_argument(
        "--with-interventions", action="store_true",
        help="analyze the model as training saw it: with the run's interventions (--ablate-head, --clamp-pattern of "
        "nrecur train) active at the checkpoint's step; progress applies them at every checkpoint (default: the bare model)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=analyze_command, command="analyze")


def analyze_command(args: argparse.Namespace) -> int:
    from nrecur.runs import load_run
    from nrecur.train.interventions import intervention_hooks
    from nrecur.train.loop import resolve_device

    if args.sequences is not None and args.sequences < 8:
        raise UsageError(f"--sequences must be an integer >= 8, got {args.sequences}")
    over_training = [name for name, a in ANALYSES.items() if a.over_training is not None]
    if args.checkpoints == "all" and "all" not in args.what and not set(args.what) & set(over_training):
        raise UsageError(f"--checkpoints all applies to {', '.join(over_training)}; none of them is in --what")
    run = load_run(args.run, step=args.step, device=resolve_device(args.device))
    if "all" in args.what:
        chosen = [a for a in ANALYSES.values() if a.applies(run) is None]
        for analysis in ANALYSES.values():
            if analysis not in chosen:
                print(f"skipped {analysis.name}: {analysis.applies(run)}")
    else:
        chosen = [ANALYSES[name] for name in dict.fromkeys(args.what)]
        for analysis in chosen:
            why = analysis.applies(run)
            if why is not None:
                raise UsageError(f"--what {analysis.name} does not apply to {run.path}: {why}")
    interventions = run.config.train.interventions
    active = intervention_hooks(interventions, run.step) if args.with_interventions else []
    if interventions and not args.with_interventions:
        print(f"note: this run trained with interventions ({', '.join(i.describe() for i in interventions)}); analyzing the bare model (--with-interventions applies them)")
    elif args.with_interventions and not interventions:
        raise UsageError(f"--with-interventions: {run.path} trained without interventions")
    elif args.with_interventions and not active:
        print(f"note: none of this run's interventions was active at step {run.step}; the latest-checkpoint analyses see the bare model")
    # Every analysis runs before anything is written: a failure leaves the folder as it was.
    results = []
    for analysis in chosen:
        start = time.perf_counter()
        itself = "with_interventions" in inspect.signature(analysis.run).parameters  # applies them per checkpoint
        with run.model.hooks([] if itself else active):
            results.append((analysis.run(run, **_options(analysis.run, args)), time.perf_counter() - start))
    if args.checkpoints == "all":
        over = [a for a in chosen if a.over_training is not None]
        steps = run.checkpoint_steps
        device = resolve_device(args.device)

        def load(step):
            return load_run(args.run, step=step, device=device)

        if over and args.with_interventions:
            print(f"note: {', '.join(a.name for a in over)} over checkpoints analyze the bare model; progress applies the interventions at every checkpoint")
        for analysis in over:
            start = time.perf_counter()
            results.append((analysis.over_training(run, steps, load, **_options(analysis.over_training, args)), time.perf_counter() - start))
    latest = run.step == run.checkpoint_steps[-1]
    folder = run.folder.analysis_dir if latest else run.folder.analysis_dir_at(run.step)
    for result, seconds in results:
        over_training = result.name.endswith("_over_training")
        seen = [] if over_training else [i.describe() for i in interventions if args.with_interventions and i.active(run.step)]
        start = time.perf_counter()
        paths = write_analysis(result, folder, step=None if over_training else run.step, interventions=seen)
        written = time.perf_counter() - start
        head = ", ".join(f"{k} {v:.3f}" for k, v in list(result.headline.items())[:6])
        at = "all checkpoints" if over_training else f"step {run.step}"
        print(f"{result.name} ({at}, {seconds_text(seconds)} s): {head}{' …' if len(result.headline) > 6 else ''}")
        print(f"  wrote {paths[0]} and {len(paths) - 1} figure files in {seconds_text(written)} s")
    return 0


def _options(fn, args: argparse.Namespace) -> dict:
    """The command's options that ``fn`` takes: seed, and sequences and progress where it has them."""
    parameters = inspect.signature(fn).parameters
    options = {"seed": args.seed}
    if args.sequences is not None and "n_sequences" in parameters:
        options["n_sequences"] = args.sequences
    if "show_progress" in parameters:
        options["show_progress"] = not args.no_progress
    if "with_interventions" in parameters:
        options["with_interventions"] = args.with_interventions
    return options
