"""The variants study: its statements come from its numbers, its files render the docs page, and a tiny study runs.

The verdict rule (:func:`compare`) is checked on values where the answer is known; a variant built to differ
from the default is said to differ (in that measure only), a variant whose seeds are the default's own numbers
is said to differ in nothing; the documentation page renders from what the study writes; a tiny study trains,
analyses and writes its tables through the same code as the CPU spec.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from nrecur.studies.variants import (
    DEFAULT,
    MEASURES,
    VARIANTS,
    compare,
    key_of,
    skewed,
    tabulate,
    write_variants,
)

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "studies" / "variants.md"
RESULTS = "results/studies/variants"


def test_compare_says_higher_or_lower_only_beyond_the_seed_spread():
    assert compare([1.0, 1.1], [0.5, 0.52]).verdict == "higher"
    assert compare([0.1, 0.12], [0.5, 0.52]).verdict == "lower"
    assert compare([0.5, 0.52], [0.5, 0.52]).verdict == "within the seed spread"
    # disjoint ranges, but the gap (0.02) does not exceed the two ranges together (0.02 + 0.02)
    assert compare([0.53, 0.55], [0.5, 0.52]).verdict == "within the seed spread"
    assert compare([0.3, 0.3], [0.3 + 1e-13, 0.3 + 1e-13]).verdict == "within the seed spread"  # rounding, not a gap
    assert compare([0.31, 0.31], [0.3, 0.3]).verdict == "higher"  # no spread at all: any real gap counts


def test_never_is_slower_than_any_number_and_missing_is_not_measured():
    assert compare([math.inf, math.inf], [100.0, 2000.0]).verdict == "higher"
    assert compare([math.inf, math.inf], [math.inf, math.inf]).verdict == "within the seed spread"
    assert compare([math.inf, 100.0], [100.0, 200.0]).verdict == "within the seed spread"  # one seed never: unknown
    assert compare([None, float("nan")], [1.0, 2.0]).verdict == "not measured"
    assert compare([1.0, None], [1.0, 1.0]).variant == (1.0,)


def test_skewed_priors_sum_to_one_and_fall():
    for k in (2, 4, 8, 16):
        prior = skewed(k)
        assert len(prior) == k and math.isclose(sum(prior), 1.0) and prior[0] == pytest.approx(k * prior[-1])
        assert all(a > b for a, b in zip(prior, prior[1:]))


def synthetic_runs(seed: int = 0) -> list[dict]:
    """Per-run rows as the study writes them, random numbers for every measure and control, every variant on
    the kinds it changes, two seeds each."""
    rng = np.random.default_rng(seed)
    rows = []
    for kind in ("deterministic", "stochastic"):
        for variant in VARIANTS.values():
            if kind not in variant.kinds:
                continue
            for s in range(2):
                row = {"kind": kind, "variant": variant.name, "seed": s, "kl_threshold": 0.04, "steps": 100}
                for measure in MEASURES:
                    row[measure.name] = float(rng.uniform(0.1, 0.2))
                    row.update({f"{measure.name}|{key}": float(rng.uniform(0.0, 0.1)) for _, key in measure.controls})
                rows.append(row)
    return rows


def test_a_variant_built_to_differ_is_said_to_differ_and_only_there():
    runs = synthetic_runs()
    for row in runs:  # every variant: its seeds are the default's own numbers ...
        if row["variant"] != DEFAULT:
            twin = next(r for r in runs if r["kind"] == row["kind"] and r["variant"] == DEFAULT and r["seed"] == row["seed"])
            row.update({m.name: twin[m.name] for m in MEASURES})
    for row in runs:  # ... but target_outside's final KL is ten times the default's
        if row["variant"] == "target_outside":
            row["final_kl"] *= 10
            row["steps_to_threshold"] = math.inf
    result = tabulate(runs, {})
    for row in result.comparisons:
        built = row["variant"] == "target_outside" and row["measure"] in ("final_kl", "steps_to_threshold")
        assert row["verdict"] == ("higher" if built else "within the seed spread"), row
    for row in result.summary:
        if row["variant"] == "target_outside":
            assert row["differ"] == 2 and "final KL (nats/token) (higher)" in row["statement"] and "not reached" not in row["statement"]
        else:
            assert row["differ"] == 0 and row["statement"].startswith("no measure differs from the default")
    statement = next(r["statement"] for r in result.comparisons if r["variant"] == "target_outside" and r["measure"] == "steps_to_threshold")
    assert "not reached against the default's" in statement and "higher by more than the seed spread" in statement


def test_identical_seeds_say_no_difference_in_anything():
    runs = synthetic_runs()
    default = {(r["kind"], r["seed"]): r for r in runs if r["variant"] == DEFAULT}
    same = [{**default[(r["kind"], r["seed"])], "variant": r["variant"]} for r in runs]
    result = tabulate(same, {})
    assert result.comparisons and {r["verdict"] for r in result.comparisons} == {"within the seed spread"}
    assert all(r["differ"] == 0 for r in result.summary)


def test_the_statements_quote_the_numbers_they_compare():
    runs = synthetic_runs(1)
    result = tabulate(runs, {})
    row = next(r for r in result.comparisons if r["kind"] == "stochastic" and r["variant"] == "fake_recent" and r["measure"] == "final_kl")
    mine = sorted(r["final_kl"] for r in runs if r["kind"] == "stochastic" and r["variant"] == "fake_recent")
    assert f"{np.mean(mine):.3g} ({mine[0]:.3g}–{mine[1]:.3g})" in row["statement"] and row["value"] in row["statement"]
    assert compare(mine, [r["final_kl"] for r in runs if r["kind"] == "stochastic" and r["variant"] == DEFAULT]).verdict == row["verdict"]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """The synthetic study written into ``TMP/docs/results/studies/variants`` as the study writes it (once)."""
    tmp_path = tmp_path_factory.mktemp("variants")
    runs = synthetic_runs(2)
    curves = [{"kind": r["kind"], "variant": r["variant"], "seed": r["seed"], "step": step, "seconds": step / 10, "kl": 1 / (step + 1),
               "loss": 2 + 1 / (step + 1), "bayes": 2.0} for r in runs for step in (0, 50, 100)]  # fmt: skip
    periods = [{"kind": r["kind"], "variant": r["variant"], "seed": r["seed"], "step": step, "period_margin": step / 200, "margin": 0.25}
               for r in runs for step in (0, 10, 100)]  # fmt: skip
    out = tmp_path / "docs" / RESULTS
    options = {"seeds": 2, "command": "nrecur study variants.toml", "rule": "differs: a rule"}
    timing = {"wall_seconds": 3000.0, "train_seconds_sum": 4000.0, "load_average": 2.0, "workers": 2}
    write_variants(tabulate(runs, options, curves, periods, timing=timing), out)
    return out


def docs_results():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("docs_results", ROOT / "scripts" / "docs_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_results"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_docs_page_renders_from_what_the_study_writes(written):
    """Every number on docs/studies/variants.md is a macro over the study's own files (no number typed in)."""
    pytest.importorskip("jinja2")
    results = docs_results()
    out = written
    tmp_path = out.parents[3]
    text = PAGE.read_text()
    assert text.startswith("---\nrender_macros: true\n---\n")
    rendered = results.render(text, docs=tmp_path / "docs")
    assert "|---|" in rendered and "{{" not in rendered and "{%" not in rendered
    prose = re.sub(r"\{\{.*?\}\}|`[^`]*`|\(.*?\.png\)", "", text, flags=re.S)
    assert not re.findall(r"\b\d+\.\d+\b", prose), "a measured number typed into the page"
    for figure in re.findall(r"\]\(\.\./(results/studies/variants/[^)]+\.png)\)", text):
        assert (tmp_path / "docs" / figure).is_file(), figure
    data = json.loads((out / "variants.json").read_text())
    for row in data["summary"]:  # every variant on every kind it ran on: its summary, and its three readings
        for part in ("summary", "difficulty", "dynamics", "algorithm"):
            quoted = results.value(f"{RESULTS}/variants.json", f"by_variant.{row['variant']}.{row['kind']}.{part}", docs=tmp_path / "docs")
            assert quoted in rendered, (row["variant"], row["kind"], part)
    assert set(data["by_variant"]["target_outside"]) == {"deterministic", "stochastic"}
    assert key_of("probes.r2_mlp/period") in data["by_variant"]["target_outside"]["stochastic"]["statements"]


@pytest.mark.slow
def test_the_figures_are_drawn_beside_the_json(written):
    names = {p.name for p in written.glob("*.png")}
    assert names == {"variants_difficulty.png", "variants_verdicts.png"} | {f"variants_{f}_{k}.png" for f in ("dynamics", "algorithm") for k in ("deterministic", "stochastic")}
    assert all(p.stat().st_size > 0 for p in written.glob("*.png"))


def test_bad_options_are_refused_before_anything_runs(tmp_path):
    from nrecur.studies import variants_study

    for options, message in (
        ({"variants": ["nope"]}, "unknown variant 'nope'; variants are target_outside"),
        ({"variants": ["default"]}, "unknown variant 'default'"),
        ({"seeds": 1}, "seeds must be >= 2"),
        ({"kinds": ["mess3"]}, "kinds must name some of deterministic, stochastic"),
        ({"analyses": ["geometry"]}, "unknown analysis 'geometry'"),
        ({"analyses": ["heads"], "analysis_options": {"probes": {}}}, "analysis_options names 'probes'"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            variants_study(tmp_path / "x", preset="tiny", **options)
    assert not (tmp_path / "x").exists()


def test_the_study_specs_load_and_name_every_variant():
    from nrecur.studies import load_study

    for spec in ("variants_cpu.toml", "variants_gpu.toml"):
        name, options = load_study(ROOT / "examples" / "studies" / spec)
        assert name == "variants" and set(options["variants"]) == set(VARIANTS) - {DEFAULT} and options["seeds"] >= 2


@pytest.mark.slow
def test_a_tiny_study_end_to_end_through_the_spec(tmp_path):
    """The tiny preset, one variant beside the default, two seeds, the cheap analyses: the same code path as the CPU
    spec; every verdict in the tables is the rule applied to the per-run numbers in the same file."""
    from nrecur.studies import run_study

    spec = tmp_path / "tiny.toml"
    spec.write_text(
        'study = "variants"\nworkers = 1\npreset = "tiny"\nseeds = 2\nvariants = ["target_outside"]\nkinds = ["deterministic"]\n'
        'analyses = ["heads", "progress"]\nbayes_sequences = 64\nbayes_batches = 2\n'
        "[analysis_options]\nheads = { n_sequences = 32 }\nprogress = { n_sequences = 32, head_sequences = 16 }\n"
    )
    run_study(spec, tmp_path / "out", report=None)
    data = json.loads((tmp_path / "out" / "variants.json").read_text())
    assert len(data["runs"]) == 4 and {r["variant"] for r in data["runs"]} == {DEFAULT, "target_outside"}
    assert all(r["period_heads_step"] is None or r["period_heads_step"] >= 0 for r in data["runs"])
    for row in data["comparisons"]:
        measure = row["measure"]
        mine = [r.get(measure) for r in data["runs"] if r["variant"] == "target_outside"]
        theirs = [r.get(measure) for r in data["runs"] if r["variant"] == DEFAULT]
        if measure == "bayes_floor" or measure.startswith(("steps_to", "seconds_to", "period_heads")):
            continue  # batches of sequences, and "never" (None in JSON) stand in for these
        assert compare(mine, theirs).verdict == row["verdict"], measure
    assert (tmp_path / "out" / "variants_comparisons.csv").is_file() and (tmp_path / "out" / "variants_difficulty.png").is_file()
    measured = {r["measure"] for r in data["comparisons"] if r["verdict"] != "not measured"}
    assert {"final_kl", "bayes_floor", "heads.period_score", "progress.restricted_gap"} <= measured


def test_an_analysis_that_fails_is_recorded_with_its_error_in_the_result(tmp_path):
    """variants.json says why a measure is not measured: the analysis, the model and the error's first line."""
    from nrecur.studies.variants import _analyze_all
    from nrecur.sweep import BackendOptions

    row = {"kind": "deterministic", "variant": DEFAULT, "seed": 3, "run_dir": str(tmp_path / "no-such-run")}
    failures = _analyze_all([row], ["heads"], {}, BackendOptions(workers=1), report=None)
    assert [(f["kind"], f["variant"], f["seed"], f["analysis"]) for f in failures] == [("deterministic", DEFAULT, 3, "heads")]
    assert "no-such-run" in failures[0]["error"] and "\n" not in failures[0]["error"]
    runs = [{"kind": "deterministic", "variant": v, "seed": s, "final_kl": 0.1 + s} for v in (DEFAULT, "target_outside") for s in (0, 1)]
    assert tabulate(runs, {}, failures=failures).to_json()["failures"] == failures  # written into variants.json
