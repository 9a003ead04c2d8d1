"""``nrecur sweep SPEC --out DIR`` runs a sweep; ``nrecur sweep-plot DIR --metric M --x A --y B`` draws it."""

from __future__ import annotations

import argparse

from nrecur.cli import UsageError, existing_path, same_command


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="train a grid of runs described by one spec file; one results table",
        description="Run every trial of the sweep spec SPEC (TOML or YAML: a base config, grid / zip / random axes over "
        "any task, model or train field by dotted path, seeds; see nrecur.sweep.spec) in its own run folder under "
        "DIR/trials/, and write DIR/results.parquet and DIR/results.csv: one row per trial with every varied field, "
        "the seed, steps and time to the KL threshold, memorization step, grok delay, final KL and losses, parameter "
        "count, run folder and status. Every trial's config is validated before anything runs. Running it again "
        "continues where it stopped: recorded trials are never rerun, interrupted ones resume from their run folders.",
    )
    parser.add_argument("spec", metavar="SPEC", type=existing_path, help="sweep spec file (.toml, .yaml or .yml)")
    parser.add_argument("--out", required=True, metavar="DIR", help="sweep folder (new, empty, or a sweep to continue)")
    parser.add_argument("--backend", default="local", choices=["local", "ray"], help="local: worker processes on this machine (default); ray: a Ray cluster (pip install 'nrecur[ray]')")
    parser.add_argument("--workers", type=int, metavar="N", help="local: worker processes (default: one per available CPU)")
    parser.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads per trial (default: 1)")
    parser.add_argument("--address", metavar="ADDR", help="ray: the cluster to join (auto, ray://HEAD:10001, HEAD:6379); default: start a local Ray")
    parser.add_argument("--num-cpus", type=int, metavar="N", help="ray, local instance: CPUs it may use (default: all)")
    parser.add_argument("--asha", type=int, metavar="GRACE", help="ray: stop hopeless trials early (ASHA on eval KL), each after at least GRACE evaluations")
    parser.add_argument(
        "--group-runner", default="auto", choices=["auto", "one-by-one", "ensemble"],
        help="auto (default): ensemble when every trial trains on a GPU, or on a CPU when every trial's steps are small "
        "(at most 6e7 multiply-adds), else one-by-one (the faster, as measured; also when no two trials can train "
        "together; the log says which); one-by-one: each "
        "trial alone; ensemble: trials of the same model and batch size trained at once in one process (torch.func "
        "vmap, nrecur.train.ensemble), up to 16 per group",
    )  # fmt: skip
    parser.add_argument("--retry-failed", action="store_true", help="run failed and early-stopped trials again (they resume from their run folders)")
    parser.add_argument("--dry-run", action="store_true", help="validate the spec and the options, list its trials and the plan for all of them (the group runner, the groups); run nothing")
    parser.add_argument("--quiet", action="store_true", help="no line per finished trial")
    parser.set_defaults(handler=sweep_command, command="sweep", again=lambda args, error: same_command(args))

    plot = subparsers.add_parser(
        "sweep-plot",
        help="a sweep metric as a heatmap over two varied fields (median over seeds, IQR shown)",
        description="Draw METRIC (a numeric column of DIR/results.parquet: final_kl, steps_to_threshold, grok_delay, …) "
        "over the varied fields X and Y, median over seeds and the fields not on an axis, the IQR and the number of "
        "trials written in each cell; with --facet, one panel per value of a third field. Writes PNG and SVG to "
        "DIR/plots/ (or --out).",
    )
    plot.add_argument("sweep", metavar="DIR", type=existing_path, help="sweep folder")
    plot.add_argument("--metric", required=True, help="column to draw, e.g. final_kl")
    plot.add_argument("--x", required=True, help="varied field on the x axis, e.g. model.d_model")
    plot.add_argument("--y", required=True, help="varied field on the y axis (or seed)")
    plot.add_argument("--facet", help="varied field: one panel per value")
    plot.add_argument("--out", metavar="FOLDER", help="where the figures go (default: DIR/plots)")
    plot.set_defaults(handler=plot_command, command="sweep-plot")


def sweep_command(args: argparse.Namespace) -> int:
    from nrecur.sweep import BackendOptions, check_options, expand, load_spec, plan_groups, run_sweep

    spec = load_spec(args.spec)
    if args.backend != "ray" and (args.address or args.asha is not None or args.num_cpus is not None):
        raise UsageError("--address, --num-cpus and --asha are options of --backend ray")
    options = BackendOptions(
        workers=args.workers, threads=args.threads, address=args.address, num_cpus=args.num_cpus, asha_grace=args.asha,
        runner=args.group_runner,
    )  # fmt: skip
    if args.dry_run:
        check_options(args.backend, options)
        trials = expand(spec)
        for trial in trials:
            print(f"{trial.index:4d} {trial.trial_id} {trial.describe()}")
        for line in plan_groups(trials, args.backend, options).describe():  # all trials, as if none were done
            print(f"{spec.name}: {line}")
        print(f"{spec.name}: {len(trials)} trials, all valid")
        return 0
    result = run_sweep(spec, args.out, args.backend, options, retry_failed=args.retry_failed, report=None if args.quiet else print)
    print(result.describe())
    return 0


def plot_command(args: argparse.Namespace) -> int:
    from nrecur.sweep.plots import plot_metric

    for path in plot_metric(args.sweep, args.metric, args.x, args.y, args.facet, args.out):
        print(path)
    return 0
