"""Sweep specs: axes expand to validated trials; every kind of bad spec fails before anything runs (exit 2, one line)."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from nrecur.cli import main
from nrecur.sweep import expand, load_spec, spec_from_data
from nrecur.sweep.expand import config_id
from nrecur.sweep.groups import group_trials, shape_key

BASE = {"preset": "tiny", "base": {"train": {"steps": 20}}}


def test_grid_zip_random_and_seeds_multiply():
    spec = spec_from_data(
        {
            **BASE,
            "seeds": 2,
            "grid": {"model.d_model": [16, 32], "train.weight_decay": [0.0, 1.0]},
            "zip": [{"model.n_heads": [1, 2], "model.d_head": [16, 8]}],
            "random": {"samples": 3, "seed": 5, "fields": {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}}},
        }
    )
    trials = expand(spec)
    assert len(trials) == 2 * 2 * 2 * 3 * 2
    assert len({t.trial_id for t in trials}) == len(trials)
    assert [t.index for t in trials] == list(range(len(trials)))
    for trial in trials:
        config = trial.config
        assert config.model.d_model == trial.params["model.d_model"]
        assert config.train.weight_decay == trial.params["train.weight_decay"]
        assert (config.model.n_heads, config.model.d_head) in {(1, 16), (2, 8)}
        assert config.model.n_heads == trial.params["model.n_heads"] and config.model.d_head == trial.params["model.d_head"]
        assert 1e-4 <= config.train.lr <= 1e-2 and config.train.lr == trial.params["train.lr"]
        assert config.train.init_seed == config.train.data_seed == trial.seed
        assert config.train.steps == 20  # the base applies to every trial
    lrs = sorted({t.params["train.lr"] for t in trials})
    assert len(lrs) == 3
    # seeded: the same spec draws the same points, so ids (and run folders) stay the same
    assert [t.trial_id for t in expand(spec)] == [t.trial_id for t in trials]


def test_model_vocab_follows_the_task_and_ids_depend_only_on_the_config():
    spec = spec_from_data({**BASE, "grid": {"task.vocab_size": [4, 6]}})
    trials = expand(spec)
    assert [t.config.model.vocab_size for t in trials] == [4, 6]
    more = spec_from_data({**BASE, "seeds": [0, 1], "grid": {"task.vocab_size": [4, 6, 8]}})
    old = {t.trial_id for t in trials}
    new = {t.trial_id for t in expand(more)}
    assert old < new and len(new) == 6  # extending a sweep keeps the ids of what is done


def test_task_kind_axis_starts_each_kind_from_its_defaults():
    spec = spec_from_data({**BASE, "grid": {"task.kind": ["nrecurrence", "mess3"]}})
    kinds = [t.config.task.kind for t in expand(spec)]
    assert kinds == ["nrecurrence", "mess3"]
    assert expand(spec)[1].config.model.vocab_size == 3


def test_toml_and_yaml_give_the_same_trials(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('preset = "tiny"\nseeds = 2\n[base.train]\nsteps = 20\n[grid]\n"model.d_model" = [16, 32]\n')
    yaml = tmp_path / "s.yaml"
    yaml.write_text("preset: tiny\nseeds: 2\nbase:\n  train.steps: 20\ngrid:\n  model.d_model: [16, 32]\n")
    assert [t.trial_id for t in expand(load_spec(toml))] == [t.trial_id for t in expand(load_spec(yaml))]


def test_shape_groups_gather_trials_that_differ_in_seed_and_optimizer_only():
    spec = spec_from_data({**BASE, "seeds": 3, "grid": {"model.d_model": [16, 32], "train.lr": [1e-3, 3e-3]}})
    trials = expand(spec)
    groups = group_trials(trials, by_shape=True)
    assert len(groups) == 2 and all(len(g.trials) == 6 for g in groups)
    assert all(len({shape_key(t) for t in g.trials}) == 1 for g in groups)
    assert len(group_trials(trials)) == len(trials)


def test_muon_trials_are_groups_of_their_own():
    spec = spec_from_data({**BASE, "seeds": 2, "grid": {"train.optimizer": ["adamw", "muon"]}})
    groups = group_trials(expand(spec), by_shape=True)
    assert sorted(len(g.trials) for g in groups) == [1, 1, 2]
    assert all(t.config.train.optimizer == "muon" for g in groups if len(g.trials) == 1 for t in g.trials)


def test_a_trial_keeps_the_id_an_earlier_version_gave_it():
    """The id of this spec's trial as version 113742a (before the optimizer field) computed it: a new config
    field at its old value (ADDED_FIELDS) and a renamed one (FIRST_NAMES) change no id, so finished trials are
    not trained again."""
    config = expand(spec_from_data(BASE))[0].config
    assert config_id(config) == "e9c3c799a519"
    dump = config.model_dump(mode="json")
    del dump["train"]["optimizer"], dump["train"]["compile"]
    dump["train"]["stop_when_grokked"] = dump["train"].pop("stop_at_threshold")
    assert config_id(config) == hashlib.sha256(json.dumps(dump, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    muon = config.model_copy(update={"train": config.train.model_copy(update={"optimizer": "muon"})})
    assert config_id(muon) != config_id(config)


BAD_SPECS = [
    ('[grid]\n"model.d_modle" = [16]\n', "grid 'model.d_modle'", "model has no field 'd_modle'"),
    ('[grid]\n"train.lr" = [0.001, -1.0]\n', "grid 'train.lr' = -1.0", "lr must be a finite number > 0"),
    ('[grid]\n"model.vocab_size" = [4, 5]\n', "grid 'model.vocab_size' = 5", "must equal task.vocab_size (4)"),
    ('[grid]\n"task.periods" = [[2, 3], [1]]\n', "grid 'task.periods'", "periods"),
    ('[grid]\n"model.d_model" = [16, 16]\n', "grid 'model.d_model'", "listed twice"),
    ('[grid]\n"model.d_model" = []\n', "grid 'model.d_model'", "empty"),
    ('[grid]\n"modle.d_model" = [16]\n', "grid 'modle.d_model'", "is not a field"),
    ('[[zip]]\n"model.n_heads" = [1, 2]\n"model.d_head" = [8]\n', "zip[0]", "same length"),
    ('[random]\nsamples = 2\nfields."train.lr" = { low = 0.1, high = 0.01 }\n', "random", "low <= high"),
    ('[axes]\n"model.d_model" = [16]\n', "unknown entry 'axes'", "a sweep spec holds name, preset"),
    ('seeds = 0\n', "seeds", "seeds must be"),
    ('[base.train]\nsteps = 0\n', "base train.steps = 0", "steps must be an integer >= 1"),
    ('[grid]\n"train.init_seed" = [0, 1]\n', "seed_fields", "also varied"),
    ('[record]\nmetrics = ["target_acc"]\n', "record.metrics", "not a metric name"),
    ('[grid\n', "not valid TOML", ""),
]


@pytest.mark.parametrize("body, entry, problem", BAD_SPECS, ids=[entry for _, entry, _ in BAD_SPECS])
def test_bad_spec_fails_before_anything_runs(tmp_path, capsys, body, entry, problem):
    spec = tmp_path / "bad.toml"
    spec.write_text('preset = "tiny"\n' + body)
    out = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nrecur sweep: error:"), err
    assert entry in err and problem in err, err
    assert "Traceback" not in err
    assert not out.exists()  # nothing ran, nothing was written


def test_bad_preset_and_missing_file(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("preset: huge\n")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o")]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "none.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "none.toml does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_out_must_be_a_sweep_or_empty(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text('preset = "tiny"\n')
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "busy")]) == 2
    assert "holds no sweep" in capsys.readouterr().err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_dry_run_lists_trials(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # the tiny preset's device "auto" is the CPU
    spec = tmp_path / "s.toml"
    spec.write_text('preset = "tiny"\nseeds = 2\n[grid]\n"model.d_model" = [16, 32]\n')
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 trials, all valid" in out and "model.d_model=32 seed=1" in out
    # the plan a run would follow: auto's choice and the groups
    assert "group runner auto: ensemble (on a CPU" in out
    assert "4 trials in 2 groups of the same shape (2, 2), each trained at once (ensemble)" in out
    assert not (tmp_path / "o").exists()
    # options a run would refuse are refused here too
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--dry-run", "--asha", "2"]) == 2
    assert "options of --backend ray" in capsys.readouterr().err
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--dry-run", "--workers", "0"]) == 2
    assert "workers must be an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_random_integer_and_choice_draws_stay_in_range():
    spec = spec_from_data(
        {
            **BASE,
            "random": {
                "samples": 40,
                "fields": {"model.n_layers": {"low": 1, "high": 3, "integer": True}, "model.act": {"choices": ["relu", "gelu"]}},
            },
        }
    )
    with pytest.warns(UserWarning, match="same config"):
        trials = expand(spec)  # 6 distinct points among 40 draws: duplicates run once
    points = {(t.config.model.n_layers, t.config.model.act) for t in trials}
    assert points == {(n, a) for n in (1, 2, 3) for a in ("relu", "gelu")}
    assert not any(math.isnan(t.config.train.lr) for t in trials)


@pytest.mark.parametrize("path", sorted((__import__("pathlib").Path(__file__).parent.parent / "examples" / "sweeps").iterdir()), ids=lambda p: p.name)
def test_example_specs_are_valid(path):
    trials = expand(load_spec(path))
    assert trials and len({t.trial_id for t in trials}) == len(trials)
