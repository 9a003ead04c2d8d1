"""In-context modular arithmetic on a CPU: which observer does the model approach, and does it work OOD?

Trains the ``modular-quick`` preset (p = 7, 8 examples per sequence) at several
numbers of training task vectors, then plots, over training, KL(observer ‖ model)
to the in-distribution observer (on in-distribution sequences) and to the
universal observer (on in-distribution and on out-of-distribution sequences),
and the accuracy at ``z`` positions against the universal observer's.

    python examples/modular_curves.py --n-tasks 8 32 --out runs/modular      # trains (10 min each) and plots
    python examples/modular_curves.py --n-tasks 8 32 --out runs/modular --plot-only

Runs that exist are resumed or reused; the figure goes to ``OUT/modular_curves.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nrecur import RunFolder, resume, train  # noqa: E402
from nrecur.train.presets import get_preset  # noqa: E402

SERIES = [
    ("eval/kl", "KL to in-distribution observer (ID seqs)", "#0072B2", "-"),
    ("universal/kl", "KL to universal observer (ID seqs)", "#E69F00", "--"),
    ("out_dist/kl", "KL to universal observer (OOD seqs)", "#D55E00", ":"),
]
ACCURACY = [
    ("eval/z_acc", "model, ID", "#0072B2", "-"),
    ("out_dist/z_acc", "model, OOD", "#D55E00", ":"),
    ("eval/bayes_z_acc", "in-distribution observer, ID", "#000000", "--"),
    ("universal/bayes_z_acc", "universal observer, ID", "#999999", "-"),
    ("out_dist/bayes_z_acc", "universal observer, OOD", "#999999", ":"),
]


def run_folder(out: Path, n_tasks: int) -> Path:
    return out / f"modular-quick-{n_tasks}"


def ensure_run(out: Path, n_tasks: int) -> None:
    folder = RunFolder(run_folder(out, n_tasks))
    preset = get_preset("modular-quick").run
    config = preset.model_copy(update={"task": preset.task.model_copy(update={"n_tasks": n_tasks})})
    if not folder.is_run():
        train(config, folder.path)
    elif (folder.read_summary() or {}).get("status") != "finished":
        resume(folder.path)


def plot(out: Path, n_tasks: list[int]) -> Path:
    fig, axes = plt.subplots(2, len(n_tasks), figsize=(5.2 * len(n_tasks), 7), squeeze=False, sharex="col")
    for column, count in enumerate(n_tasks):
        folder = RunFolder(run_folder(out, count))
        lines = folder.read_metrics()
        task = folder.read_config().task
        steps = [line["step"] for line in lines]
        top, bottom = axes[0, column], axes[1, column]
        for key, label, color, style in SERIES:
            if key in lines[-1]:
                top.plot(steps, [line[key] for line in lines], style, color=color, label=label)
        top.set_yscale("log")
        top.set_ylabel("KL(observer ‖ model), nats/token")
        top.set_title(f"p={task.p}, {task.n_examples} examples, {count} of {task.n_vectors} vectors in training")
        for key, label, color, style in ACCURACY:
            if key in lines[-1]:
                bottom.plot(steps, [line[key] for line in lines], style, color=color, label=label)
        bottom.set_ylim(0, 1.02)
        bottom.set_ylabel("accuracy at z positions")
        bottom.set_xlabel("training step")
        top.grid(alpha=0.3)
        bottom.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    axes[1, 0].legend(fontsize=8)
    fig.tight_layout()
    path = out / "modular_curves.png"
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-tasks", type=int, nargs="+", default=[8, 32], help="training task vectors per run")
    parser.add_argument("--out", type=Path, default=Path("runs/modular"), help="folder for the runs and the figure")
    parser.add_argument("--plot-only", action="store_true", help="only draw the figure from existing runs")
    args = parser.parse_args()
    if not args.plot_only:
        for count in args.n_tasks:
            ensure_run(args.out, count)
    print(plot(args.out, args.n_tasks))


if __name__ == "__main__":
    main()
