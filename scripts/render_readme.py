"""Render the README's measured sections from committed result files (the numbers are never typed).

    python scripts/render_readme.py          # rewrite README.md's generated blocks
    python scripts/render_readme.py --check  # exit 1 when README.md is not what its result files give

A generated block sits between ``<!-- generated:NAME -->`` and ``<!-- end:NAME -->``; :data:`BLOCKS`
says what renders each: the analyses (each example result's headline figure beside its controls, and
one figure) from ``docs/results/analyses/``, the benchmarks from ``docs/results/benchmarks/``, the
main job from ``docs/results/main-job/``. ``tests/test_docs.py`` runs the check.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results"

ANALYSIS_FIGURE = {
    "probes": ("probes_r2.png", "r2_mlp/period"),
    "geometry": ("geometry.png", "r2"),
    "updates": ("updates_curves.png", "learning_rate/transition"),
    "failure": ("failure.png", "perseveration_never"),
    "heads": ("heads_scores.png", "period_score"),
    "progress": ("progress.png", "loss_excluded"),
    "patching": ("patching_sites.png", "moved_best_before_last"),
    "prior": ("prior.png", "static_target_kl"),
    "edit": ("edit_hold.png", "hold_rate"),
}
"""analysis → (the figure the README shows, the headline figure it quotes beside its controls)."""


def _number(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _controls(headline: dict, name: str, initialization: dict | None = None) -> list[str]:
    """``["initialization 0.1", "shuffled 0"]``: the controls of headline figure ``name``, labelled as the report
    labels them (a fine-tune's initialization is its fine-tuning source: the file's ``initialization`` says so)."""
    from nrecur.analysis.figures.over_training import CONTROL_SUFFIXES, control_label

    stem, _, tail = name.partition("/")
    found = []
    for key in headline:
        other, _, other_tail = key.partition("/")
        if other != stem and other.startswith(stem + "_") and other_tail == tail:
            suffix = other[len(stem) :]
            if suffix in CONTROL_SUFFIXES:
                found.append(f"{control_label(suffix, initialization)} {_number(headline[key])}")
    return found


def analyses_block() -> str:
    folder = RESULTS / "analyses"
    source = json.loads((folder / "source.json").read_text())
    lines = [
        "| analysis | headline figure | model | controls | on |",
        "|---|---|---|---|---|",
    ]
    figures = []
    for name, (figure, quoted) in ANALYSIS_FIGURE.items():
        path = folder / f"{name}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        headline = data["headline"]
        if quoted not in headline:
            raise ValueError(f"{path}: its headline has no {quoted!r} (the README quotes it)")
        run = source.get("runs", {}).get(name, "").replace("the main job's run ", "")
        controls = ", ".join(_controls(headline, quoted, data.get("initialization"))) or "–"
        lines.append(f"| {name} | `{quoted}` | {_number(headline[quoted])} | {controls} | {run} |")
        if (folder / figure).is_file():
            figures.append(f'<img src="docs/results/analyses/{figure}" alt="{name}" width="400">')
    lines += ["", f"Rendered from `docs/results/analyses/` ({source.get('command', '')}).", ""]
    return "\n".join(lines + ["<p>", *figures, "</p>"])


def benchmarks_block() -> str:
    lines = ["| benchmark | what | ours | reference | ratio | machine |", "|---|---|---|---|---|---|"]
    for path in sorted((RESULTS / "benchmarks").glob("*.json")):
        data = json.loads(path.read_text())
        machine = data.get("machine", "").split(";")[0]
        load = re.search(r"load average ([\d.]+)", data.get("machine", ""))
        where = f"{machine}, load {load.group(1)}" if load else machine
        for row in data.get("rows", []):
            ours = next((v for k, v in row.items() if k.startswith(("ours", "fast"))), None)
            reference = next((v for k, v in row.items() if k.startswith(("loop", "reference", "dense", "brute"))), None)
            ratio = row.get("ratio")
            named = [(k, v) for k, v in row.items() if isinstance(v, str)]
            what = named[0][1] if len(named) == 1 else " · ".join(f"{k} {v}" for k, v in named)
            if ratio is None:
                continue
            lines.append(f"| {path.stem} | {what} | {_number(ours)} | {_number(reference)} | {ratio:.1f}× | {where} |")
    return "\n".join(lines)


BLOCKS = {"analyses": analyses_block, "benchmarks": benchmarks_block}


def render(text: str) -> str:
    for name, block in BLOCKS.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- end:{name} -->)", re.DOTALL)
        if pattern.search(text):
            text = pattern.sub(lambda m: m.group(1) + block() + "\n" + m.group(2), text)
    return text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when README.md differs from what its result files give")
    args = parser.parse_args(argv)
    text = README.read_text()
    rendered = render(text)
    if args.check:
        if rendered != text:
            print("README.md is not what its result files give: run python scripts/render_readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
