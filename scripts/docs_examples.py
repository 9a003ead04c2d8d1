"""Copy the example results the analyses' pages show from a main job's runs into ``docs/results/analyses/``.

    python scripts/docs_examples.py runs

For each analysis, the first run of :data:`PREFERRED` (suffixes of the main
job's run folders) that has ``analysis/NAME.json`` gives the JSON and its PNG
figures; ``source.json`` records which run each came from and the command that
made it. The pages (``scripts/docs_analyses.py``) render from these files, so
rerunning the main job and this script updates them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from nrecur._io import atomic_write_text
from nrecur.analysis.contract import initialization_of
from nrecur.train.folder import RunFolder

DOCS = Path(__file__).resolve().parent.parent / "docs" / "results" / "analyses"
PREFERRED = {
    "geometry": ("mess3",),
    "updates": ("stoch-finetune", "stoch-scratch"),
    "failure": ("det",),
}
"""analysis → run-folder suffixes to take its example from, in order; others: the deterministic run first."""
DEFAULT = ("det", "stoch-scratch", "stoch-finetune", "mess3")


def _with_initialization(data: dict, initialization: dict) -> dict:
    """``data`` with ``initialization`` where the driver writes it: after ``step`` (or the headline)."""
    at = list(data).index("step" if "step" in data else "headline") + 1
    items = list(data.items())
    return dict(items[:at] + [("initialization", initialization)] + items[at:])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="the main job's output folder (nrecur run --out)")
    args = parser.parse_args(argv)
    folders = sorted(p for p in args.runs.iterdir() if (p / "analysis").is_dir())
    if not folders:
        parser.error(f"{args.runs} holds no analyzed run folder")
    names = sorted({p.stem for folder in folders for p in (folder / "analysis").glob("*.json") if not p.stem.endswith("_over_training")})
    DOCS.mkdir(parents=True, exist_ok=True)
    sources = {}
    for name in names:
        for suffix in PREFERRED.get(name, DEFAULT):
            found = [f for f in folders if f.name.endswith(suffix) and (f / "analysis" / f"{name}.json").is_file()]
            if found:
                folder = found[0]
                data = json.loads((folder / "analysis" / f"{name}.json").read_text())
                if "initialization" in data:
                    shutil.copyfile(folder / "analysis" / f"{name}.json", DOCS / f"{name}.json")
                else:  # a file that does not say what the control model is: the run's config does
                    data = _with_initialization(data, initialization_of(RunFolder(folder).read_config()))
                    atomic_write_text(DOCS / f"{name}.json", json.dumps(data, indent=1) + "\n")
                for figure in data.get("figures", []):
                    if figure.endswith(".png"):
                        shutil.copyfile(folder / "analysis" / figure, DOCS / figure)
                summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
                kl = (summary.get("final") or {}).get("eval", {}).get("eval/kl")
                ended = f", {summary['stop_reason']} at step {summary['steps']}, KL {kl:.3f}" if kl is not None else ""
                sources[name] = f"the main job's run {folder.name}{ended}"
                break
    atomic_write_text(DOCS / "source.json", json.dumps({"command": "./run.sh; python scripts/docs_examples.py runs", "runs": sources}, indent=1) + "\n")
    print(f"copied {len(sources)} example results into {DOCS}: " + ", ".join(f"{k} from {v}" for k, v in sources.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
