"""``nrecur study SPEC``, ``nrecur minimal-arch``, ``grokking``, ``icl-rate``, ``modular-diversity``: the proposal's
studies, each a thin layer over :mod:`nrecur.studies`."""

from __future__ import annotations

import argparse

from nrecur.cli import UsageError, existing_path, same_command


STUDY_NAMES = ("minimal-arch", "grokking", "icl-rate", "faster-default", "modular-diversity", "rule-diversity", "variants")
"""The names a study spec's ``study`` takes: those of :data:`nrecur.studies.STUDIES`, listed here so that the help
text is written without importing the studies (a test keeps the two the same)."""


def _again(args: argparse.Namespace, error: KeyboardInterrupt) -> str:
    """A study is a resumable sweep: the same command continues it."""
    return same_command(args)


def _add_common(parser: argparse.ArgumentParser) -> None:
    """The options every study command has: where it goes, how many workers, how much it prints."""
    parser.add_argument("--out", required=True, metavar="DIR", help="study folder (a study to continue, or new)")
    parser.add_argument("--workers", type=int, metavar="N", help="worker processes (default: one per available CPU)")
    parser.add_argument("--quiet", action="store_true", help="no line per finished run")


def register(subparsers) -> None:
    study = subparsers.add_parser(
        "study",
        help="run a study from its spec file (examples/studies/*.toml): one command reruns it",
        description=f"Run the study named in SPEC (a TOML file: study = {' | '.join(STUDY_NAMES)}, workers, and the "
        "study's options; see examples/studies/) into DIR. "
        "Studies are resumable sweeps: running the same spec into the same DIR again reuses every finished run.",
    )
    study.add_argument("spec", metavar="SPEC", type=existing_path, help="study spec (.toml)")
    study.add_argument("--out", required=True, metavar="DIR", help="study folder")
    study.add_argument("--quiet", action="store_true", help="no line per finished run")
    study.set_defaults(handler=study_command, command="study", again=_again)

    subparsers.add_parser(
        "minimal-arch",
        help="the smallest architecture that reaches the KL threshold within a step budget in k of m seeds",
        description="Walk architectures (layers × width × heads × MLP or attention-only) in order of parameter count, "
        "training each from --seeds seeds on the preset's task until its KL threshold (as one resumable sweep in "
        "OUT/sweep), and stop after the first batch with a candidate that reaches it in at least --need seeds: every "
        "smaller candidate has run and failed. Writes OUT/minimal_arch.json (the answer and every candidate) and "
        "OUT/minimal_arch.png (steps to the threshold against parameters). With --init-from RUN the candidate is RUN's "
        "own architecture, fine-tuned from its weights.",
        build=_minimal_arch_options,
    )
    subparsers.add_parser(
        "grokking",
        help="a grokking phase diagram: training-set size × weight decay in finite mode, each cell classified",
        description="Train the preset's deterministic task in finite mode (a fixed training set) over the grid "
        "--sizes × --decays from --seeds seeds each (one resumable sweep in OUT/sweep; with --runner ensemble same-shape "
        "trials train together with torch.func), until held-out KL reaches the threshold or --steps end. Each trial "
        "is grokked (memorized, then generalized), generalized (no memorization phase first), memorized or neither; "
        "writes OUT/grokking.json, OUT/grokking.png (class and delay heatmaps) and the progress measures of the "
        "grokked trial with the longest delay in OUT/progress/.",
        build=_grokking_options,
    )
    subparsers.add_parser(
        "icl-rate",
        help="the in-context learning rate after rule transitions, model vs observer, across noise, context and width",
        description="Train the preset's stochastic task over p_noise = p_transition = C/n for each --rates C, context "
        "lengths --lengths and widths --widths (one resumable sweep in OUT/sweep), run the updates analysis on every "
        "finished run, and write OUT/icl_rate.json and OUT/icl_rate.png: the model's median learning rate and "
        "discreteness after transitions against the observer's, and the rate against context length.",
        build=_icl_rate_options,
    )
    modular = subparsers.add_parser(
        "modular-diversity",
        help="in-context modular arithmetic: KL to the in-distribution and universal observers, ID and OOD, against n_tasks",
        description="Train in-context modular arithmetic at every --n-tasks (one resumable sweep in OUT/sweep) and write "
        "OUT/modular_diversity.json and OUT/modular_diversity.png: at the end of training, KL to the in-distribution "
        "observer and to the universal one on sequences of the training task vectors, KL to the universal observer "
        "on unseen vectors, and the accuracy at z in and out of distribution, the model's against each observer's — "
        "where the model switches from the switchboard to the general algorithm.",
    )
    modular.add_argument("--preset", default="modular-quick", help="modular-quick (default; a 2-core CPU) or modular-paper (a GPU)")
    modular.add_argument("--n-tasks", type=int, nargs="+", default=[4, 8, 16, 32], help="training task vectors (default: 4 8 16 32)")
    modular.add_argument("--seeds", type=int, default=1, help="seeds per n_tasks (default: 1)")
    modular.add_argument("--steps", type=int, help="step budget per run (default: the preset's)")
    _add_common(modular)
    modular.set_defaults(handler=modular_diversity_command, command="modular-diversity", again=_again)


# The study presets' options are added when the command is used (nrecur.train.presets imports torch).


def _minimal_arch_options(parser: argparse.ArgumentParser) -> None:
    from nrecur.train.presets import STUDY_PRESET, STUDY_PRESET_WHY

    parser.add_argument("--preset", default=STUDY_PRESET, help=f"the task, base model and training settings (default: {STUDY_PRESET}, {STUDY_PRESET_WHY})")
    parser.add_argument("--task", default="deterministic", choices=["deterministic", "stochastic"], help="the preset's deterministic run or its stochastic companion (default: deterministic)")
    parser.add_argument("--threshold", type=float, help="KL threshold, nats/token (default: the preset's: 0.01 deterministic, 0.02 stochastic)")
    parser.add_argument("--steps", type=int, default=5000, help="step budget per trial (default: 5000)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per candidate, m (default: 3)")
    parser.add_argument("--need", type=int, default=2, help="seeds that must reach the threshold, k (default: 2)")
    parser.add_argument("--init-from", metavar="RUN", type=existing_path, help="fine-tune from RUN's weights (its architecture is the only candidate); a minimal-arch study folder names its answer's run")
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3], help="numbers of layers (default: 1 2 3)")
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64], help="residual widths d_model (default: 16 32 64)")
    parser.add_argument("--heads", type=int, nargs="+", default=[1, 2, 4, 8], help="numbers of heads, d_head = d_model / heads >= 4 (default: 1 2 4 8)")
    parser.add_argument("--mlp", default="both", choices=["both", "yes", "no"], help="with an MLP of 4·d_model, attention-only, or both (default)")
    parser.add_argument("--batch", type=int, default=4, help="candidates per round of the walk (default: 4)")
    parser.add_argument("--complete", action="store_true", help="run every candidate (for the whole curve), not only up to the answer")
    _add_common(parser)
    parser.set_defaults(handler=minimal_arch_command, command="minimal-arch", again=_again)


def _grokking_options(grok: argparse.ArgumentParser) -> None:
    from nrecur.train.presets import STUDY_PRESET, STUDY_PRESET_WHY

    grok.add_argument("--preset", default=STUDY_PRESET, help=f"the task, model and training settings (default: {STUDY_PRESET}, {STUDY_PRESET_WHY})")
    grok.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048], help="training-set sizes, sequences (default: 256 512 1024 2048)")
    grok.add_argument("--decays", type=float, nargs="+", default=[0.0, 0.1, 0.3, 1.0], help="weight decays (default: 0 0.1 0.3 1)")
    grok.add_argument("--seeds", type=int, default=2, help="seeds per cell (default: 2)")
    grok.add_argument("--steps", type=int, default=5000, help="step budget per trial (default: 5000)")
    grok.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    grok.add_argument("--batch-size", type=int, help="sequences per step, capped at the training-set size (default: the preset's)")
    grok.add_argument("--runner", default="one-by-one", choices=["one-by-one", "ensemble"], help="one-by-one: a process per trial (default; faster on a CPU at the preset's batch of 64); ensemble: same-shape trials together with torch.func (10x on a GPU)")
    _add_common(grok)
    grok.set_defaults(handler=grokking_command, command="grokking", again=_again)


def _icl_rate_options(icl: argparse.ArgumentParser) -> None:
    from nrecur.train.presets import STUDY_PRESET, STUDY_PRESET_WHY

    icl.add_argument("--preset", default=STUDY_PRESET, help=f"the task, model and training settings (default: {STUDY_PRESET}, {STUDY_PRESET_WHY})")
    icl.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.2], help="C of p_noise = p_transition = C/n (default: 0.1 0.2)")
    icl.add_argument("--lengths", type=int, nargs="+", default=[32, 48], help="context lengths, each with room for events (default: 32 48)")
    icl.add_argument("--widths", type=int, nargs="+", default=[32, 64], help="residual widths d_model (default: 32 64)")
    icl.add_argument("--seeds", type=int, default=1, help="seeds per cell (default: 1)")
    icl.add_argument("--steps", type=int, help="step budget per run (default: the preset's)")
    icl.add_argument("--sequences", type=int, default=1024, help="fresh sequences for the updates analysis (default: 1024)")
    _add_common(icl)
    icl.set_defaults(handler=icl_rate_command, command="icl-rate", again=_again)


def minimal_arch_command(args: argparse.Namespace) -> int:
    from nrecur.studies import minimal_arch
    from nrecur.sweep import BackendOptions

    if args.steps < 1 or args.seeds < 1:
        raise UsageError(f"--steps and --seeds must be >= 1, got {args.steps} and {args.seeds}")
    if not 1 <= args.need <= args.seeds:
        raise UsageError(f"--need must be between 1 and --seeds ({args.seeds}), got {args.need}")
    for name in ("layers", "widths", "heads"):
        if min(getattr(args, name)) < 1:
            raise UsageError(f"--{name} must be integers >= 1, got {getattr(args, name)}")
    train = {"steps": args.steps}
    if args.threshold is not None:
        train["kl_threshold"] = args.threshold
    if args.lr is not None:
        train["lr"] = args.lr
    mlp = {"both": (False, True), "yes": (True,), "no": (False,)}[args.mlp]
    arch = {"layers": tuple(args.layers), "widths": tuple(args.widths), "heads": tuple(args.heads), "mlp": mlp}
    result = minimal_arch(
        args.out, preset=args.preset, variant="run" if args.task == "deterministic" else "stochastic", train=train,
        init_from=args.init_from, seeds=args.seeds, need=args.need, arch=arch, batch=args.batch, complete=args.complete,
        options=BackendOptions(workers=args.workers), report=None if args.quiet else print,
    )  # fmt: skip
    for entry in result.table:
        steps = "—" if entry["median_steps_to_threshold"] is None else f"{entry['median_steps_to_threshold']:.0f}"
        print(f"{entry['name']:<32} {entry['n_params']:>8,} params  {entry['seeds_at_threshold']}/{entry['seeds']} seeds  median steps {steps}")
    if result.minimal is None:
        print(f"no candidate reached KL <= {result.options['kl_threshold']} in {args.need} of {args.seeds} seeds within {args.steps} steps")
    else:
        print(f"smallest: {result.minimal['name']} ({result.minimal['n_params']:,} parameters)")
    print(f"wrote {args.out}/minimal_arch.json and minimal_arch.png")
    return 0


def grokking_command(args: argparse.Namespace) -> int:
    from nrecur.studies import grokking_diagram
    from nrecur.sweep import BackendOptions

    if args.steps < 1 or args.seeds < 1 or min(args.sizes) < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise UsageError(f"--steps, --seeds, --sizes and --batch-size must be >= 1, got {args.steps}, {args.seeds}, {args.sizes} and {args.batch_size}")
    train = {"steps": args.steps, **({"lr": args.lr} if args.lr is not None else {}), **({"batch_size": args.batch_size} if args.batch_size is not None else {})}
    result = grokking_diagram(
        args.out, preset=args.preset, sizes=args.sizes, decays=args.decays, seeds=args.seeds, train=train, runner=args.runner,
        options=BackendOptions(workers=args.workers), report=None if args.quiet else print,
    )  # fmt: skip
    for cell in result.cells:
        delay = "" if cell["median_delay"] is None else f", delay {cell['median_delay']:.0f} steps"
        counts = ", ".join(f"{k} {n}" for k, n in cell["counts"].items() if n)
        print(f"train_size {cell['train_size']:>6}  weight_decay {cell['weight_decay']:<5g} {cell['class']:<11} ({counts}{delay})")
    if not any(cell["class"] == "grokked" for cell in result.cells):
        print(f"no cell grokked within {args.steps} steps")
    print(f"wrote {args.out}/grokking.json and grokking.png")
    return 0


def icl_rate_command(args: argparse.Namespace) -> int:
    from nrecur.studies import icl_rate
    from nrecur.sweep import BackendOptions

    if args.seeds < 1 or args.sequences < 8 or (args.steps is not None and args.steps < 1):
        raise UsageError("--seeds and --steps must be >= 1 and --sequences >= 8")
    if min(args.rates) <= 0:
        raise UsageError(f"--rates must be > 0 (rule transitions are the events measured), got {args.rates}")
    result = icl_rate(
        args.out, preset=args.preset, rates=args.rates, lengths=args.lengths, widths=args.widths, seeds=args.seeds,
        train={"steps": args.steps} if args.steps else None, n_sequences=args.sequences, options=BackendOptions(workers=args.workers),
        report=None if args.quiet else print,
    )  # fmt: skip
    for run in result.runs:
        print(
            f"p = {run['rate']:<6} n_ctx {run['n_ctx']:>3}  d_model {run['d_model']:>3}  seed {run['seed']}  KL {run['final_kl']:.4f}  "
            f"learning rate {run['learning_rate_model']} vs {run['learning_rate_observer']}  discreteness "
            f"{_fmt(run['discreteness_model'])} vs {_fmt(run['discreteness_observer'])}"
        )
    print(f"wrote {args.out}/icl_rate.json and icl_rate.png")
    return 0


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def modular_diversity_command(args: argparse.Namespace) -> int:
    from nrecur.studies import modular_diversity
    from nrecur.studies.modular_diversity import ACCURACY, SERIES
    from nrecur.sweep import BackendOptions

    if args.seeds < 1 or (args.steps is not None and args.steps < 1):
        raise UsageError("--seeds and --steps must be >= 1")
    result = modular_diversity(
        args.out, n_tasks=args.n_tasks, preset=args.preset, seeds=args.seeds, train={"steps": args.steps} if args.steps else None,
        options=BackendOptions(workers=args.workers), report=None if args.quiet else print,
    )  # fmt: skip
    for row in result.rows:
        values = "  ".join(f"{name} {_fmt(row.get(name))}" for name in (*SERIES, *ACCURACY))
        print(f"n_tasks {row['n_tasks']:>4}: {values}")
    print(f"wrote {args.out}/modular_diversity.json and modular_diversity.png")
    return 0


def study_command(args: argparse.Namespace) -> int:
    from nrecur.studies import load_study, run_study

    name, _ = load_study(args.spec)  # a bad spec fails here, before anything runs
    run_study(args.spec, args.out, report=None if args.quiet else print)
    print(f"{name}: wrote {args.out}")
    return 0
