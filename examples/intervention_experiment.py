"""Which sub-circuits does the period mechanism need? Train with heads clamped or ablated, follow the progress.

Trains the ``quick`` preset's deterministic model three times from the same initialization on the same data,
for a fixed number of steps (no early stop), with 10 log-spaced checkpoints:

* ``plain``: no intervention;
* ``clamped``: heads 0.0–0.3 clamped for the whole run to the period pattern of n = 2, 3, 4, 5 (each attends to
  the earlier positions in the phase of the next token for its period) — the period heads handed over;
* ``ablated``: every head of layer 0 ablated (its ``z`` zeroed) for the first 40 % of the steps, then released.

Then the progress measures of each run (``nrecur.analysis.compute(run, "progress", ...)``), measured with its
interventions where they were active, side by side (``OUT/progress_side_by_side.png``), and per run the first step with held-out
KL ≤ 0.05 and ≤ 0.01 and the final KL (``OUT/intervention_experiment.json``)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python examples/intervention_experiment.py --out runs/intervention-experiment

Runs that already have a ``summary.json`` are reused (delete a folder to retrain it). About a minute of
training per run on a quiet 2-core CPU at the default 2,500 steps, then ~20 s of analysis each.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from nrecur import load_run, train
from nrecur.analysis import compute
from nrecur.analysis.figures.progress import draw_side_by_side
from nrecur.train.interventions import Intervention
from nrecur.train.presets import get_preset


def conditions(steps: int) -> dict[str, list[Intervention]]:
    release = int(0.4 * steps)
    return {
        "plain": [],
        "clamped": [Intervention(kind="clamp_pattern", layer=0, head=h, pattern="period", period=n) for h, n in enumerate((2, 3, 4, 5))],
        "ablated": [Intervention(kind="ablate", layer=0, head=h, start=0, end=release) for h in range(8)],
    }


def train_condition(folder: Path, interventions: list[Intervention], steps: int, seed: int) -> None:
    if (folder / "summary.json").exists():
        print(f"{folder}: trained already, reused")
        return
    base = get_preset("quick-adamw").run
    update = {"steps": steps, "interventions": tuple(interventions), "init_seed": seed, "stop_at_threshold": False, "time_budget": 0.0, "log_checkpoints": 10}
    config = base.model_copy(update={"train": base.train.model_validate({**base.train.model_dump(), **update})})
    described = ", ".join(i.describe() for i in interventions) or "no intervention"
    print(f"{folder}: training {steps} steps with {described}")
    train(config, folder, progress=False)


def first_step_below(curve: dict, threshold: float) -> int | None:
    return next((step for step, value in zip(curve["step"], curve["value"]) if value <= threshold), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sequences", type=int, default=256, help="sequences for the progress measures (default 256)")
    args = parser.parse_args()
    results, summary = {}, {}
    for name, interventions in conditions(args.steps).items():
        folder = args.out / name
        train_condition(folder, interventions, args.steps, args.seed)
        run = load_run(folder)
        result = compute(run, "progress", n_sequences=args.sequences, seed=args.seed, with_interventions=True)
        results[name] = result
        kl = result.logged["eval/kl"]
        summary[name] = {
            "interventions": result.interventions,
            "steps_to_kl_0.05": first_step_below(kl, 0.05),
            "steps_to_kl_0.01": first_step_below(kl, 0.01),
            "final_kl": kl["value"][-1],
            "period_heads": list(result.period_heads),
            **{key: value for key, value in result.headline.items() if key.startswith("loss")},
        }
        print(f"{name}: {json.dumps(summary[name])}")
    paths = draw_side_by_side(results, args.out)
    (args.out / "intervention_experiment.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {paths[0]} and {args.out / 'intervention_experiment.json'}")


if __name__ == "__main__":
    main()
