"""Studies: the minimal-architecture walk stops at the first batch with a qualifier and says none when none does."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from nrecur.cli import main
from nrecur.model import GPT, GPTConfig
from nrecur.studies import candidates
from nrecur.studies.minimal_arch import MinimalArchResult, answer_run, kl_curves, plot_minimal_arch

WALK = ["--preset", "tiny", "--layers", "1", "--widths", "16", "--heads", "2", "4", "--mlp", "no", "--seeds", "1", "--need", "1",
        "--steps", "40", "--batch", "1", "--workers", "2", "--quiet"]  # fmt: skip


def test_candidates_are_ordered_by_parameter_count_and_count_them_right():
    base = GPTConfig(vocab_size=8, n_ctx=16)
    found = candidates(base, layers=(1, 2), widths=(16, 32), heads=(1, 2, 8), mlp=(False, True))
    assert [c.n_params for c in found] == sorted(c.n_params for c in found)
    assert all(c.d_model % c.n_heads == 0 and c.d_head >= 4 for c in found)
    assert not any(c.d_model == 16 and c.n_heads == 8 for c in found)  # d_head 2 < 4
    for c in found[:3] + found[-2:]:
        config = base.model_copy(update={"n_layers": c.n_layers, "d_model": c.d_model, "n_heads": c.n_heads, "d_head": c.d_head, "d_mlp": c.d_mlp})
        assert c.n_params == sum(p.numel() for p in GPT(config).parameters())


@pytest.fixture(scope="module")
def easy_walk(tmp_path_factory) -> tuple[Path, str]:
    """A walk whose threshold (KL <= 5 nats) any model meets, and what it printed; read, never written, by the
    tests that use it."""
    easy = tmp_path_factory.mktemp("minimal-arch") / "easy"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["minimal-arch", "--out", str(easy), *WALK, "--threshold", "5"]) == 0
    return easy, printed.getvalue()


@pytest.mark.slow
def test_the_walk_stops_at_the_first_qualifier_and_runs_everything_when_none_qualifies(easy_walk, tmp_path, capsys):
    easy, printed = easy_walk  # any model qualifies, so the first candidate is the answer
    data = json.loads((easy / "minimal_arch.json").read_text())
    assert data["options"]["candidates_run"] == 1 and data["options"]["candidates_in_grid"] == 2
    assert data["minimal"]["name"] == data["candidates"][0]["name"] and data["minimal"]["seeds_at_threshold"] >= 1
    assert (easy / "minimal_arch.png").stat().st_size > 0 and "smallest: L1 d16" in printed

    hard = tmp_path / "hard"  # KL <= 1e-9 within 40 steps: nobody qualifies, every candidate runs
    assert main(["minimal-arch", "--out", str(hard), *WALK, "--threshold", "1e-9"]) == 0
    data = json.loads((hard / "minimal_arch.json").read_text())
    assert data["minimal"] is None and data["options"]["candidates_run"] == 2
    assert len(data["trials"]) == 2 and all(t["steps_to_threshold"] is None and t["steps"] == 40 for t in data["trials"])
    assert "no candidate reached" in capsys.readouterr().out


@pytest.mark.slow
def test_a_fine_tuning_walk_trains_a_studys_answer_and_plots_each_seeds_kl(easy_walk, tmp_path):
    study, _ = easy_walk
    tuned = tmp_path / "tuned"  # out of reach: the seed trains its whole budget, evaluated at 0, 20, 40
    assert main(["minimal-arch", "--out", str(tuned), *WALK, "--threshold", "1e-9", "--init-from", str(study)]) == 0
    result = MinimalArchResult.from_json(json.loads((tuned / "minimal_arch.json").read_text()))
    assert result.options["init_from"] == str(answer_run(study).resolve()) and result.options["candidates_in_grid"] == 1
    assert result.minimal is None and result.table[0]["seeds"] == 1
    [curve] = kl_curves(result)  # the figure's curve: every evaluation of the trial's run
    assert curve.steps == [0, 20, 40] and curve.kl[-1] == pytest.approx(curve.trial["final_kl"])
    # a trial without an evaluation whose run folder is gone: an empty curve, and the figure is still drawn
    gone = {**curve.trial, "seed": 1, "run_dir": str(tmp_path / "gone"), "final_kl": None, "steps_to_threshold": None}
    broken = MinimalArchResult(result.minimal, result.table, result.options, [curve.trial, gone])
    assert kl_curves(broken)[1].steps == []
    assert all(path.stat().st_size > 0 for path in plot_minimal_arch(broken, tmp_path / "figure"))


def test_bad_walks_are_refused(tmp_path, capsys):
    assert main(["minimal-arch", "--out", str(tmp_path / "x"), "--seeds", "2", "--need", "3"]) == 2
    assert "--need must be between 1 and --seeds (2), got 3" in capsys.readouterr().err
    assert main(["minimal-arch", "--out", str(tmp_path / "x"), "--preset", "nope"]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_a_trial_is_classified_by_its_memorization_and_threshold_steps():
    from nrecur.studies import classify

    assert classify(memorization_step=100, threshold_step=900) == "grokked"
    assert classify(memorization_step=None, threshold_step=900) == "generalized"
    assert classify(memorization_step=900, threshold_step=900) == "generalized"  # no memorization phase before it
    assert classify(memorization_step=1200, threshold_step=900) == "generalized"
    assert classify(memorization_step=100, threshold_step=None) == "memorized"
    assert classify(memorization_step=None, threshold_step=None) == "neither"


def test_the_phase_diagram_title_names_the_recipe_budget_and_seeds():
    from nrecur.studies.grokking import figure_title

    options = {"preset": "quick", "lr": 0.001, "schedule": "constant", "kl_threshold": 0.01, "step_budget": 20000, "seeds": 1}
    assert figure_title(options) == "quick, finite mode, lr 0.001 (constant schedule): KL ≤ 0.01 within 20,000 steps, 1 seed per cell"
    assert figure_title({**options, "schedule": "cosine", "seeds": 2}).endswith("(cosine schedule): KL ≤ 0.01 within 20,000 steps, 2 seeds per cell")


def test_cells_take_their_most_common_class_and_median_delay():
    import pandas as pd

    from nrecur.studies.grokking import summarize

    rows = [  # train_size, weight_decay, seed, memorization, grok
        (64, 1.0, 0, 100, 500), (64, 1.0, 1, 100, 300), (64, 1.0, 2, None, None),
        (64, 0.0, 0, 100, None), (64, 0.0, 1, None, 200),  # a tie: grokked beats memorized, generalized beats memorized
    ]  # fmt: skip
    frame = pd.DataFrame([
        {"train.train_size": s, "train.weight_decay": d, "seed": seed, "memorization_step": m, "steps_to_threshold": g,
         "status": "ok", "final_kl": 0.1, "run_dir": "x"} for s, d, seed, m, g in rows
    ]).astype({"memorization_step": "Int64", "steps_to_threshold": "Int64"})  # fmt: skip
    result = summarize(frame, [64], [0.0, 1.0], {})
    assert result.cell(64, 1.0)["class"] == "grokked" and result.cell(64, 1.0)["median_delay"] == 300
    assert result.cell(64, 0.0)["class"] == "generalized" and result.cell(64, 0.0)["median_delay"] is None
    assert result.cell(64, 1.0)["counts"] == {"grokked": 2, "generalized": 0, "memorized": 0, "neither": 1}


@pytest.mark.slow
def test_the_grokking_study_end_to_end(tmp_path, capsys):
    out = tmp_path / "grok"
    args = ["grokking", "--out", str(out), "--preset", "tiny", "--sizes", "32", "--decays", "0", "1", "--seeds", "1", "--steps", "300", "--workers", "1", "--quiet"]
    assert main(args) == 0
    data = json.loads((out / "grokking.json").read_text())
    assert len(data["cells"]) == 2 and len(data["trials"]) == 2
    for trial in data["trials"]:
        from nrecur.studies import classify

        assert trial["class"] == classify(trial["memorization_step"], trial["threshold_step"])
    assert (out / "grokking.png").stat().st_size > 0 and "wrote" in capsys.readouterr().out


@pytest.mark.slow
def test_the_icl_rate_study_reads_each_runs_updates_analysis(tmp_path):
    out = tmp_path / "icl"
    args = ["icl-rate", "--out", str(out), "--preset", "tiny", "--rates", "0.2", "--lengths", "16", "--widths", "16", "--steps", "100",
            "--sequences", "128", "--workers", "1", "--quiet"]  # fmt: skip
    assert main(args) == 0
    data = json.loads((out / "icl_rate.json").read_text())
    assert len(data["runs"]) == 1 and data["runs"][0]["rate"] == "0.2/n"
    run = data["runs"][0]
    analysis = json.loads((Path(run["run_dir"]) / "analysis" / "updates.json").read_text())  # load_sweep gives absolute paths
    for who, suffix in (("model", ""), ("observer", "_ceiling"), ("random_init", "_random_init")):
        rate, never = analysis["headline"][f"learning_rate{suffix}/transition"], analysis["headline"][f"never{suffix}/transition"]
        assert run[f"learning_rate_{who}"] == (rate if rate is not None else "never" if never >= 0.5 else None)
    assert (out / "icl_rate.png").stat().st_size > 0 and run["n_events"] > 0
    assert main(args) == 0  # a rerun reuses the runs and their analyses


def test_the_icl_rate_study_refuses_a_context_without_room_for_events(tmp_path, capsys):
    """tiny's periods 2, 3: the rule must have held 6 positions and a window of min(12, n // 2) follow."""
    args = ["icl-rate", "--out", str(tmp_path / "icl"), "--preset", "tiny", "--lengths", "10", "16", "--quiet"]
    assert main(args) == 2
    assert "context lengths [10] leave no room for a transition event" in capsys.readouterr().err
    assert not (tmp_path / "icl").exists()


def test_the_icl_rate_figure_draws_a_never_median_above_the_finite_ones(tmp_path, monkeypatch):
    """A model whose median rate is "never" must not vanish from the figure: a hollow point on its own row."""
    import importlib

    module = importlib.import_module("nrecur.studies.icl_rate")  # the module, not the function of the same name
    figures = []
    monkeypatch.setattr(module, "save_figure", lambda fig, folder, stem: figures.append(fig) or [])
    common = {"rate": "0.2/n", "d_model": 32, "seed": 0, "final_kl": 0.1, "steps": 10, "run_dir": "x", "n_events": 5}
    runs = [
        {**common, "n_ctx": 32, "learning_rate_model": "never", "learning_rate_observer": 11.0, "discreteness_model": 0.7, "discreteness_observer": 0.6},
        {**common, "n_ctx": 48, "learning_rate_model": 13.0, "learning_rate_observer": 11.5, "discreteness_model": 0.7, "discreteness_observer": 0.6},
        {**common, "n_ctx": 64, "n_events": 0, "learning_rate_model": None, "learning_rate_observer": None, "discreteness_model": None, "discreteness_observer": None},
    ]
    module.plot_icl_rate(module.IclRateResult(runs=runs, options={}), tmp_path)
    first, second, by_length = figures[0].axes
    assert len(np.concatenate([c.get_offsets() for c in second.collections])) == 2  # the run without events is left out
    for ax, x in ((first, 11.0), (by_length, 32.0)):
        points = np.concatenate([c.get_offsets() for c in ax.collections])
        assert len(points) == 2
        hollow = points[points[:, 1] > 13.0]
        assert hollow.shape == (1, 2) and hollow[0, 0] == pytest.approx(x, abs=0.5) and hollow[0, 1] == 14.0


def test_a_median_rate_read_back_from_json_tells_never_from_no_events():
    import importlib

    median_rate = importlib.import_module("nrecur.studies.icl_rate").median_rate

    assert median_rate({"learning_rate/transition": 12.0, "never/transition": 0.1}, "model") == 12.0
    assert median_rate({"learning_rate_ceiling/transition": 9.0, "never_ceiling/transition": 0.1}, "observer") == 9.0
    assert median_rate({"learning_rate/transition": float("inf"), "never/transition": 0.6}, "model") == "never"
    assert median_rate({"learning_rate_random_init/transition": None, "never_random_init/transition": 0.5}, "random_init") == "never"  # JSON's inf
    assert median_rate({"learning_rate/transition": None, "never/transition": None}, "model") is None  # no events


@pytest.mark.slow
def test_the_modular_diversity_study_records_the_three_references(tmp_path):
    from nrecur.studies import modular_diversity
    from nrecur.sweep import BackendOptions, load_sweep

    out = tmp_path / "modular"
    train = {"steps": 20, "eval_every": 20, "eval_size": 64}
    result = modular_diversity(out, n_tasks=(4, 16), train=train, model={"n_layers": 1}, strategy_sequences=32, options=BackendOptions(workers=1), report=None)
    assert [row["n_tasks"] for row in result.rows] == [4, 16]
    table = load_sweep(out / "sweep")
    assert all(json.loads((Path(run) / "config.json").read_text())["model"]["n_layers"] == 1 for run in table["run_dir"])
    for row in result.rows:
        trial = table[table["task.n_tasks"] == row["n_tasks"]].iloc[0]
        for name in ("eval/kl", "universal/kl", "out_dist/kl", "out_dist/z_acc", "eval/bayes_z_acc"):
            assert row[name] == pytest.approx(float(trial[name])), name
        strategy = json.loads((Path(trial["run_dir"]) / "analysis" / "strategy.json").read_text())  # each run's, in the run
        assert strategy["options"]["n_sequences"] == 32
        for name in ("w_final/id", "w_final/ood", "w_final_random_init/id"):
            assert row[name] == pytest.approx(strategy["headline"][name]), name
    options = json.loads((out / "modular_diversity.json").read_text())["options"]
    assert options["p"] == 7 and options["model"] == {"n_layers": 1}
    assert (out / "modular_diversity.png").stat().st_size > 0


@pytest.mark.parametrize("spec", sorted((Path(__file__).parent.parent / "examples" / "studies").glob("*.toml")), ids=lambda p: p.stem)
def test_every_example_study_spec_names_a_study_and_its_options(spec):
    import inspect

    from nrecur.studies import STUDIES, load_study

    name, options = load_study(spec)
    assert name in STUDIES
    if "arch" in options:
        assert set(options["arch"]) <= set(inspect.signature(candidates).parameters)


def test_the_help_names_every_study():
    from nrecur.cli.studies import STUDY_NAMES
    from nrecur.studies import STUDIES

    assert STUDY_NAMES == tuple(STUDIES)


def test_a_bad_study_spec_fails_before_anything_runs(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text('study = "grokking"\nsizes = [64]\nwidth = 3\n')
    assert main(["study", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "unknown option 'width' of study 'grokking'" in err and "decays" in err and not (tmp_path / "out").exists()
    spec.write_text('study = "phase-diagram"\n')
    assert main(["study", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert "'study' must be one of minimal-arch, grokking" in capsys.readouterr().err
    # A model field the study's model table does not have: named, before any trial runs.
    spec.write_text('study = "modular-diversity"\nn_tasks = [4]\nmodel = { n_layerz = 4 }\n')
    assert main(["study", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "model.n_layerz" in err and "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_faster_default_study_estimates_and_confirms(tmp_path):
    from nrecur.studies import faster_default
    from nrecur.sweep import BackendOptions

    result = faster_default(tmp_path / "fd", preset="tiny", samples=1, steps=60, confirm=1, confirm_seeds=1, threshold=0.6, threads=1, options=BackendOptions(workers=1), report=None)
    assert len(result.searched) == 3  # one random setting × three widths
    for trial in result.searched:
        assert trial["seconds_per_step"] > 0
        if trial["steps_to_threshold"] is not None:
            assert trial["estimated_seconds"] == pytest.approx(trial["steps_to_threshold"] * trial["seconds_per_step"])
    assert result.confirmed[0]["name"] == "preset" and result.confirmed[0]["settings"] == {}
    reached = [t for t in result.searched if t["estimated_seconds"] is not None]
    if reached:  # the best estimate is confirmed with its own settings
        best = min(reached, key=lambda t: t["estimated_seconds"])
        assert result.confirmed[1]["search"] == best and result.confirmed[1]["settings"]["train.lr"] == best["train.lr"]
    assert json.loads((tmp_path / "fd" / "faster_default.json").read_text())["options"]["threads"] == 1


def test_log_axes_read_in_plain_numbers_with_minor_labels_only_under_a_decade():
    from nrecur.analysis.figures.common import plain_log_ticks, pyplot

    fig, (narrow, wide) = pyplot().subplots(1, 2)
    for ax, (low, high) in ((narrow, (0.2, 0.9)), (wide, (1e-4, 2.0))):
        ax.plot([0, 1], [low, high])
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    fig.canvas.draw()

    def labels(ax, minor):
        return [t.get_text() for t in ax.yaxis.get_ticklabels(minor=minor) if t.get_text()]

    assert "0.5" in labels(narrow, minor=True) and labels(wide, minor=True) == []
    assert {"0.001", "0.01", "0.1", "1"} <= set(labels(wide, minor=False))
    pyplot().close(fig)
