"""The rule-diversity study: K*, the phase diagram and the delay from a tiny sweep; K* from its definition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nrecur.studies.rule_diversity import RuleDiversityResult, diversity_threshold
from nrecur.studies.rule_diversity_figures import plot_rule_diversity


def test_k_star_is_the_smallest_k_from_which_on_every_k_generalizes():
    assert diversity_threshold({1: 0.5, 2: 0.2, 4: 0.005, 8: 0.004, 16: None}, 0.01) == 4
    assert diversity_threshold({1: 0.5, 2: 0.005, 4: 0.02, 8: 0.004}, 0.01) == 8  # a relapse at 4: from 8 on
    assert diversity_threshold({1: 0.5, 2: 0.2}, 0.01) is None
    assert diversity_threshold({1: None}, 0.01) is None


def _trial(k: int, decay: float, ood: float | None, w: float | None, delay: int | None = None) -> dict:
    return {
        "n_rules": k, "weight_decay": decay, "out_dist/kl": ood, "in_dist_mem/kl": 0.002 * k, "w_final/ood": w, "w_final/id": w,
        "w_final_random_init/ood": 0.5 if w is not None else None, "fit_step": 100 if ood is not None else None,
        "generalization_step": None if delay is None else 100 + delay, "delay": delay,
    }  # fmt: skip


def test_the_answer_in_words_says_k_star_or_how_close_the_grid_came_from_the_numbers():
    from nrecur.studies.rule_diversity import answer_in_words

    options = {"kl_threshold": 0.01, "steps": 5000, "rules": 8}
    trials = [_trial(1, 0.1, 0.5, 0.9), _trial(4, 0.1, 0.005, 0.1, delay=400), {**_trial(8, 0.1, None, None), "eval/kl": 0.004}]
    trials += [_trial(1, 1.0, 0.7, 0.95), _trial(4, 1.0, 0.3, 0.6)]
    thresholds = [
        {"weight_decay": 0.1, "k_star": 4, "median_ood_kl/1": 0.5, "median_ood_kl/4": 0.005, "median_ood_kl/8": None},
        {"weight_decay": 1.0, "k_star": None, "median_ood_kl/1": 0.7, "median_ood_kl/4": 0.3},
    ]
    first, second = answer_in_words(trials, thresholds, options)
    assert first.startswith("Weight decay 0.1: K* = 4 of 8 rules — from K = 4 on, the final KL to the universal observer on held-out rules is at most the threshold 0.01 within 5,000 steps.")
    assert "within KL 0.002–0.008 of the memorizing observer" in first
    assert "At K = 1 the final strategy weight is w = 0.9 on held-out sequences and 0.9 on training ones (initialization: 0.5)." in first
    assert "At K = 4 the final strategy weight is w = 0.1" in first
    assert "The run on all 8 rules (nothing held out) ends at KL 0.004 to the universal observer: the budget suffices for the task itself." in first
    assert first.endswith("In-context grokking: 1 of 2 runs generalized after fitting (2 fitted their training rules), 400 steps later.")
    assert second.startswith("Weight decay 1: no K of the grid generalizes within 5,000 steps — the final KL to the universal observer on held-out "
                             "rules stays above the threshold 0.01 for every K up to 4 (smallest: 0.3 at K = 4, largest: 0.7).")  # fmt: skip
    assert second.endswith("In-context grokking: 0 of 2 runs generalized after fitting (2 fitted their training rules).")


@pytest.mark.slow
def test_the_study_end_to_end_on_a_tiny_grid(tmp_path):
    from nrecur.studies import rule_diversity
    from nrecur.sweep import BackendOptions, load_sweep

    out = tmp_path / "rules"
    train = {"steps": 20, "eval_every": 10, "eval_size": 64, "log_checkpoints": 2}
    task = {"p_noise": 0.05, "target_outside": True}
    result = rule_diversity(out, preset="tiny", n_rules=(1, 3, 8), task=task, train=train, n_sequences=32, options=BackendOptions(workers=1), report=None)
    assert result.options["rules"] == 8 and sorted(t["n_rules"] for t in result.trials) == [1, 3, 8]
    table = load_sweep(out / "sweep")
    for trial in result.trials:
        config = json.loads((Path(trial["run_dir"]) / "config.json").read_text())
        held_out = json.loads((Path(trial["run_dir"]) / "summary.json").read_text())["held_out_rules"]
        assert len(held_out) == 8 - trial["n_rules"] and config["task"]["p_noise"] == 0.05
        if trial["n_rules"] < 8:  # the strategy analysis of each run with held-out rules, written into the run
            analysis = json.loads((Path(trial["run_dir"]) / "analysis" / "strategy.json").read_text())
            assert trial["w_final/id"] == pytest.approx(analysis["headline"]["w_final/id"])
            phase = result.phase[Path(trial["run_dir"]).name]
            assert phase["checkpoint_steps"] == [p["step"] for p in analysis["checkpoints"]] and len(phase["w_ood"]) == len(phase["checkpoint_steps"])
            row = table[table["run_dir"] == trial["run_dir"]].iloc[0]
            assert trial["out_dist/kl"] == pytest.approx(float(row["out_dist/kl"]))
        else:  # nothing held out: no second observer
            assert trial["w_final/id"] is None and trial["in_dist_mem/kl"] == trial["eval/kl"]
    assert [entry["weight_decay"] for entry in result.thresholds] == [0.1]
    data = json.loads((out / "rule_diversity.json").read_text())
    assert data["trials"] == json.loads(json.dumps(result.trials))
    assert all((out / name).stat().st_size > 0 for name in ("rule_diversity.png", "rule_diversity_phase.png"))
    again = rule_diversity(out, preset="tiny", n_rules=(1, 3, 8), task=task, train=train, n_sequences=32, options=BackendOptions(workers=1), report=None)
    assert again.trials == result.trials  # a rerun reuses the runs and their analyses
    redrawn = plot_rule_diversity(RuleDiversityResult(**{k: data[k] for k in ("trials", "thresholds", "options", "phase")}), tmp_path / "redrawn")
    assert {p.name for p in redrawn} == {"rule_diversity.png", "rule_diversity.svg", "rule_diversity_phase.png", "rule_diversity_phase.svg"}


def test_a_bad_grid_is_refused_before_anything_runs(tmp_path):
    from nrecur.studies import rule_diversity

    with pytest.raises(ValueError, match=r"n_rules must be numbers of training rules in 1..8 \(the task has 8 rules\), got \[0, 3\]"):
        rule_diversity(tmp_path / "x", preset="tiny", n_rules=(0, 3), report=None)
    with pytest.raises(ValueError, match="needs a task with rules to hold out"):
        rule_diversity(tmp_path / "x", preset="modular-quick", report=None)
    assert not (tmp_path / "x").exists()
