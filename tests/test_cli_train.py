"""``nrecur train``, ``nrecur eval`` and ``nrecur run`` through ``nrecur.cli.main``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from nrecur.cli import main
from nrecur.train.presets import get_preset
from nrecur.runs import load_run

TINY = [
    "--vocab-size", "6", "--periods", "2", "3", "--n-ctx", "10", "--d-model", "16", "--n-layers", "1",
    "--n-heads", "2", "--d-head", "8", "--d-mlp", "32", "--steps", "20", "--batch-size", "8",
    "--eval-every", "10", "--eval-size", "32", "--device", "cpu", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "det"
    assert main(["train", "--out", str(folder), *TINY]) == 0
    return folder


def test_the_end_of_training_line_keeps_a_tenth_of_a_short_time():
    from nrecur.cli.train import format_result

    result = SimpleNamespace(run_dir="runs/det", stop_reason="steps", steps=20, seconds=1.26, evaluations={}, grokking=None)
    assert format_result(result) == "runs/det: ran all its steps: 20 steps, 1.3 s"
    assert format_result(SimpleNamespace(**{**vars(result), "seconds": 131.6})).endswith("20 steps, 132 s")


def test_the_end_of_training_says_how_to_continue_a_run_that_stopped_short():
    from nrecur.cli.train import format_result

    short = SimpleNamespace(threshold_step=None, kl_threshold=0.01, memorization_step=None, delay=None)
    result = SimpleNamespace(run_dir="runs/det", stop_reason="time budget", steps=20, seconds=61.2, evaluations={}, grokking=short)
    assert format_result(result).endswith("continue it: nrecur train --resume runs/det --time-budget S (S > 61, or 0 for no limit)")
    result = SimpleNamespace(**{**vars(result), "stop_reason": "steps"})
    assert format_result(result).endswith("KL <= 0.01: not reached\ncontinue it: nrecur train --resume runs/det --steps N (N > 20)")
    reached = SimpleNamespace(**{**vars(short), "threshold_step": 18, "threshold_seconds": 50.0})
    assert "continue it" not in format_result(SimpleNamespace(**{**vars(result), "grokking": reached}))


def test_train_writes_a_complete_run_folder(trained, capsys):
    config = json.loads((trained / "config.json").read_text())
    assert config["task"]["vocab_size"] == 6 and config["model"]["vocab_size"] == 6
    assert config["task"]["periods"] == [2, 3] and config["train"]["steps"] == 20
    assert (trained / "summary.json").exists() and (trained / "metrics.jsonl").exists()
    run = load_run(trained)
    assert run.step == 20 and run.config.model.d_model == 16


def test_train_refuses_to_overwrite_and_resume_refuses_new_options(trained, capsys):
    assert main(["train", "--out", str(trained), *TINY]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--resume", str(trained), "--lr", "0.1"]) == 2
    assert "drop --lr" in capsys.readouterr().err
    assert main(["train", "--resume", str(trained), "--no-progress"]) == 2
    assert "already finished" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (["--lr", "-1"], "lr must be a finite number > 0"),
        (["--p-noise", "1.5"], "p_noise must lie in [0, 1)"),
        (["--d-mlp", "-3"], "d_mlp must be an integer >= 0"),
        (["--stochastic"], "--stochastic needs an n-recurrence --preset"),
    ],
)
def test_invalid_options_fail_with_one_line(tmp_path, capsys, options, message):
    assert main(["train", "--out", str(tmp_path / "x"), *TINY, *options]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x" / "config.json").exists()


def test_init_from_fine_tunes_and_mismatched_shapes_are_a_clear_error(trained, tmp_path, capsys):
    stochastic = tmp_path / "stoch"
    assert main(["train", "--out", str(stochastic), *TINY, "--p-noise", "0.2/n", "--p-transition", "0.2/n", "--init-from", str(trained)]) == 0
    capsys.readouterr()
    assert load_run(stochastic).config.init_from == str(trained)
    assert load_run(stochastic).metrics[0]["eval/kl"] < load_run(trained).metrics[0]["eval/kl"]  # starts from trained weights

    assert main(["train", "--out", str(tmp_path / "wide"), *TINY, "--d-model", "32", "--init-from", str(trained)]) == 2
    err = capsys.readouterr().err
    assert "cannot initialize from" in err and "d_model 16 there, 32 here" in err and "embed.weight is (6, 16) there but (6, 32) here" in err
    assert main(["train", "--out", str(tmp_path / "mlp"), *TINY, "--d-mlp", "0", "--init-from", str(trained)]) == 2
    assert "blocks.0.mlp.fc_in.weight" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "none"), *TINY, "--init-from", str(tmp_path / "missing")]) == 2
    assert f"{tmp_path / 'missing'} does not exist" in capsys.readouterr().err


def test_eval_prints_the_table_on_its_own_and_on_another_task(trained, capsys):
    assert main(["eval", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "model CE" in out and "Bayes CE" in out and "by period" in out and "KL by position" in out
    run = load_run(trained)
    assert f"{run.evaluate()['eval'].kl:.4f}" in out
    assert main(["eval", str(trained), "--p-noise", "0.2/n", "--eval-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "p_noise=0.2/n" in out and "   16" in out
    assert main(["eval", str(trained), "--vocab-size", "9"]) == 2
    assert "vocab_size 9" in capsys.readouterr().err


@pytest.mark.slow
def test_run_main_job_tiny_preset_writes_four_runs_and_a_summary(tmp_path, capsys):
    """Four worker processes (after the deterministic one, two at a time)."""
    assert main(["run", "--preset", "tiny", "--out", str(tmp_path), "--jobs", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "tiny-det" in out and "tiny-stoch-scratch" in out and "tiny-stoch-finetune" in out
    summary = json.loads((tmp_path / "tiny-summary.json").read_text())
    assert [row["name"] for row in summary["rows"]] == ["tiny-det", "tiny-stoch-scratch", "tiny-stoch-finetune", "tiny-mess3"]
    assert summary["rows"][2]["init"] == "tiny-det"
    assert load_run(tmp_path / "tiny-stoch-finetune").config.init_from == str(tmp_path / "tiny-det")
    assert "finished" in json.loads((tmp_path / "tiny-det" / "summary.json").read_text())["status"]
    # Every run analyzed and reported, in the worker that trained it; the index links every page.
    assert f"reports: {tmp_path / 'index.html'}" in out
    index = (tmp_path / "index.html").read_text()
    for name in summary["rows"]:
        folder = tmp_path / name["name"]
        assert (folder / "report.html").stat().st_size > 0, name
        assert any((folder / "analysis").glob("*.json")), name
        assert f'href="{name["name"]}/report.html"' in index
    assert "tiny-det analysis probes: wrote" in (tmp_path / "tiny-det" / "train.log").read_text()
    # The preset's caps reached the worker's analyses (probes fitted in a second, as a tiny model deserves).
    probes = json.loads((tmp_path / "tiny-det" / "analysis" / "probes.json").read_text())["options"]
    assert {name: probes[name] for name in ("n_sequences", "mlp_rows", "mlp_steps")} == {
        name: get_preset("tiny").analysis_caps[name] for name in ("n_sequences", "mlp_rows", "mlp_steps")
    }
    reports = {name["name"]: (tmp_path / name["name"] / "report.html").stat().st_mtime_ns for name in summary["rows"]}
    # A second call reuses the finished runs and their reports.
    assert main(["run", "--preset", "tiny", "--out", str(tmp_path), "--jobs", "1", "--no-progress"]) == 0
    assert json.loads((tmp_path / "tiny-summary.json").read_text())["rows"] == summary["rows"]
    assert {name: (tmp_path / name / "report.html").stat().st_mtime_ns for name in reports} == reports


def test_eval_refuses_an_empty_evaluation_set(capsys, tmp_path):
    from nrecur.cli import main

    assert main(["eval", str(tmp_path), "--eval-size", "0"]) == 2
    assert "--eval-size must be an integer >= 1" in capsys.readouterr().err


def test_a_tuple_option_with_too_few_values_names_the_option(capsys, tmp_path):
    from nrecur.cli import main

    assert main(["train", "--betas", "0.9", "--out", str(tmp_path / "run")]) == 2
    assert "betas: wrong number of values" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_help_says_which_preset_values_apply():
    """Each option's help lists the values the presets give it (generated from the presets), and the epilog
    the --stochastic / --finetune variants."""
    from nrecur.cli import build_parser
    from nrecur.model import GPTConfig
    from nrecur.train.config import TrainConfig
    from nrecur.train.presets import PRESETS, get_preset

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["train"]
    helps = {action.dest: action.help for action in sub._actions}
    assert "(default: 10000; presets: quick 1750, quick-adamw 5000, proposal 30000, tiny 40," in helps["steps"]
    assert "(default: 4; presets: quick 8, quick-adamw 8, proposal 8, tiny 2," in helps["n_heads"]
    for name in PRESETS:
        run = get_preset(name).run
        for section, default in (("model", GPTConfig()), ("train", TrainConfig())):
            for field in type(default).model_fields:
                value = getattr(getattr(run, section), field)
                if field != "vocab_size" and value != getattr(default, field) and not isinstance(value, tuple):
                    assert f"{name} {value}" in helps[field], (name, field)
    assert "--preset quick --finetune: p_noise 0.2/n, p_transition 0.2/n, steps 5000, lr 0.001, warmup_steps 20," in sub.epilog
    assert "--preset quick-adamw --finetune: p_noise 0.2/n, p_transition 0.2/n, steps 12000, lr 0.001, warmup_steps 20" in sub.epilog


def test_the_finetune_preset_form_matches_the_main_jobs_fine_tune(tmp_path):
    """``--preset quick --finetune --init-from RUN`` is the main job's fine-tuning run: lr 1e-3, 20 warm-up steps."""
    from nrecur.cli import build_parser
    from nrecur.cli.train import config_from_train_args
    from nrecur.jobs.main import main_job_configs
    from nrecur.train.presets import get_preset

    (tmp_path / "quick-det").mkdir()
    args = build_parser().parse_args(["train", "--preset", "quick", "--finetune", "--init-from", str(tmp_path / "quick-det")])
    config = config_from_train_args(args)
    assert config.train.lr == 1e-3 and config.train.warmup_steps == 20 and not config.task.is_deterministic
    assert config == main_job_configs(get_preset("quick"), tmp_path)["stoch-finetune"]


def test_bad_optimizer_choices_are_one_line_errors(tmp_path, capsys):
    """An unknown optimizer, and Muon on a model without blocks: exit 2, one line naming the problem, no folder."""
    assert main(["train", "--preset", "tiny", "--optimizer", "sgd", "--out", str(tmp_path / "a")]) == 2  # argparse's own refusal
    err = capsys.readouterr().err
    assert "invalid choice: 'sgd' (choose from 'adamw', 'muon')" in err and "Traceback" not in err
    assert main(["train", "--preset", "tiny", "--optimizer", "muon", "--n-layers", "0", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "train.optimizer 'muon' needs model.n_layers >= 1" in err and "Traceback" not in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
