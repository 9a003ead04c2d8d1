"""Calibration of the LLC sampler (nrecur.analysis.llc) on a model whose local learning coefficient is known.

The known model (tests/llc_reference.py) is a softmax regression with ``K`` classes and ``p`` features fitted by
maximum likelihood: its shift symmetry leaves ``(K − 1)·p`` identified parameters, so λ = (K − 1)·p/2. Its
features are scaled so that the top eigenvalue of its loss's Hessian is of the size a small trained transformer's is
(``--scale``; this script prints both the calibration model's and, given ``--run``, that run's last checkpoint's):
SGLD's bias depends on ε·nβ·(curvature), so matching the curvature is what lets the settings carry over.

For each step size ε (at the default nβ, γ, chains, draws, burn-in and batch size of
``nrecur.analysis.progress.LLC_DEFAULTS``) it prints λ̂ ± the spread over chains against the known λ, the drift
(second half of the draws against the first: near 0 when the chains have settled), and whether λ̂ is within
``--tolerance`` of λ. The default ε is the one the test tests/test_analysis_llc.py holds to that tolerance.

    python benchmarks/bench_llc_calibration.py [--run runs/quick-det] [--scale 12] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from _common import add_json_option, machine, write_json
from llc_reference import softmax_regression, top_curvature

from nrecur.analysis.llc import estimate_llc
from nrecur.analysis.progress import LLC_DEFAULTS


def run_curvature(folder: str, sequences: int = 256) -> float:
    """Top Hessian eigenvalue of the mean cross-entropy of ``folder``'s last checkpoint on fresh sequences."""
    from nrecur import load_run
    from nrecur.analysis.progress import sequence_loss

    run = load_run(folder)
    tokens = torch.as_tensor(run.task.sample(sequences, run.config.length, 0).tokens, dtype=torch.long)
    layers = run.model.config.n_layers
    watch = [(f"blocks.{layer}.attn.hook_pattern", lambda x, hook=None: x) for layer in range(layers)]
    with run.model.hooks(watch):  # a watched pattern: the unfused attention, which has a second derivative
        return top_curvature(run.model, sequence_loss, (tokens,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained run whose curvature to print beside the calibration model's")
    parser.add_argument("--scale", type=float, default=12.0, help="feature scale of the calibration model")
    parser.add_argument("--step-sizes", type=float, nargs="+", default=[1e-5, 3e-5, 1e-4, 3e-4])
    parser.add_argument("--tolerance", type=float, default=0.2, help="relative tolerance on λ")
    add_json_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    text = machine()
    print(text)
    known = softmax_regression(scale=args.scale)
    curvature = top_curvature(known.model, known.loss, known.pool)
    print(f"calibration model: softmax regression, known λ = {known.llc}, top Hessian eigenvalue {curvature:.1f}")
    if args.run:
        print(f"run {args.run}: top Hessian eigenvalue {run_curvature(args.run):.1f}")
    rows = []
    for step_size in args.step_sizes:
        settings = dataclasses.replace(LLC_DEFAULTS, step_size=step_size)
        cpu = time.process_time()
        estimate = estimate_llc(known.model, known.loss, known.pool, settings, seed=0)
        cpu = time.process_time() - cpu
        within = abs(estimate.mean - known.llc) <= args.tolerance * known.llc
        rows.append({"step_size": step_size, "llc": estimate.mean, "std": estimate.std, "drift": estimate.drift, "known": known.llc, "within": within, "cpu_s": cpu})
        print(f"ε {step_size:g}: λ̂ {estimate.mean:.2f} ± {estimate.std:.2f} (known {known.llc}), drift {estimate.drift:.2f}, "
              f"{'within' if within else 'outside'} ±{args.tolerance:.0%}, {cpu:.1f} CPU s")  # fmt: skip
    settings = {**dataclasses.asdict(LLC_DEFAULTS), "scale": args.scale, "curvature": curvature, "tolerance": args.tolerance}
    write_json(args.json, text, settings, calibration=rows)


if __name__ == "__main__":
    main()
