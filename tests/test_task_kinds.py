"""Every task kind through the one Task interface: sampling, observer, evaluation, training, run folders, CLI.

Kind-specific checks of the observers against brute force live next to each kind
(``test_observer_*``, ``test_modular.py``); here each kind goes end to end.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from nrecur import HMM, RRXOR, Mess3, ModularICL, NRecurrence, RunConfig, Task, load_run, mess3, rrxor, train
from nrecur.cli import main
from nrecur.model import GPTConfig
from nrecur.train import TrainConfig, build_eval_sets, evaluate
from nrecur.train.folder import RunFolder

#: A 3-state, 2-token HMM with emissions on transitions (not a Mess3 or RRXOR special case).
RANDOM_T = np.random.default_rng(7).dirichlet(np.ones(2 * 3), size=3).reshape(3, 2, 3).transpose(1, 0, 2)

KINDS = {
    "nrecurrence": NRecurrence(vocab_size=4, periods=(2, 3), p_noise=0.1),
    "mess3": Mess3(x=0.1, a=0.7),
    "rrxor": RRXOR(p1=0.3, p2=0.6),
    "hmm": HMM(T=RANDOM_T.tolist()),
    "modular": ModularICL(p=3, n_examples=4, n_tasks=4, task_seed=1),
}


def test_every_kind_is_registered_and_rebuilt_from_its_json():
    assert set(Task.KINDS) == set(KINDS)
    for kind, task in KINDS.items():
        config = RunConfig(task=task, model=GPTConfig(vocab_size=task.vocab_size, n_ctx=8))
        again = RunConfig.model_validate_json(config.model_dump_json())
        assert again.task == task and type(again.task) is type(task) and again.task.kind == kind


def test_a_config_json_of_an_older_version_without_kind_is_n_recurrence():
    data = RunConfig().model_dump(mode="json")
    del data["task"]["kind"]
    assert RunConfig.model_validate(data).task == NRecurrence()


@pytest.mark.parametrize("kind", list(KINDS))
def test_sample_and_posterior_shapes_and_calibration(kind):
    task = KINDS[kind]
    sample = task.sample(400, 9, seed=3)
    assert sample.tokens.shape == (400, 9) and sample.tokens.dtype == np.int64
    assert sample.tokens.min() >= 0 and sample.tokens.max() < task.vocab_size
    assert np.array_equal(sample.tokens, task.sample(400, 9, seed=3).tokens)
    post = task.posterior(sample.tokens)
    assert post.predictive.shape == (400, 9, task.vocab_size) and post.log_loss.shape == (400, 8)
    np.testing.assert_allclose(post.predictive.sum(-1), 1.0, atol=1e-12)
    # The observer's expected loss equals its realized loss on its own data (calibration in the mean).
    pred = post.predictive[:, :-1]
    expected = -(pred * np.log(np.where(pred > 0, pred, 1.0))).sum(-1).mean()
    assert abs(expected - post.log_loss.mean()) < 4 * post.log_loss.std() / np.sqrt(post.log_loss.size) + 0.01
    truth = task.truth(sample)
    assert truth.accuracy_mask.shape == (400, 8)
    assert truth.strata.labels.shape == (400, 9) and set(np.unique(truth.strata.labels)) <= set(truth.strata.values)


@pytest.mark.parametrize("task", [mess3(0.1, 0.7), rrxor(0.3, 0.6), HMM(T=RANDOM_T.tolist()).process])
def test_hmm_sampler_follows_its_transition_tensor(task):
    """Empirical P(token, next state | state) and the first state's distribution match T and the start."""
    data = task.sample(20000, 6, seed=11)
    V, S = task.vocab_size, task.n_states
    counts = np.zeros((S, V, S))
    np.add.at(counts, (data.states[:, :-1], data.tokens[:, :-1], data.states[:, 1:]), 1)
    for s in range(S):
        total = counts[s].sum()
        if total == 0:
            continue
        expected = task.transitions[:, s, :]  # [vocab, state]
        stderr = np.sqrt(expected * (1 - expected) / total)
        assert np.all(np.abs(counts[s] / total - expected) <= 5 * stderr + 1e-9), s
    first = np.bincount(data.states[:, 0], minlength=S) / len(data.states)
    assert np.all(np.abs(first - task.initial) <= 5 * np.sqrt(task.initial * (1 - task.initial) / len(data.states)) + 1e-9)


def test_hmm_config_observer_equals_brute_force_path_sums():
    task = HMM(T=RANDOM_T.tolist())
    T, init = task.process.transitions, task.process.initial
    tokens = task.sample(3, 5, seed=2).tokens
    post = task.posterior(tokens)
    for b, x in enumerate(tokens):
        for k in range(len(x)):
            joint = np.zeros(3)  # P(x_0..x_k, state_{k+1})
            for path in itertools.product(range(3), repeat=k + 2):
                w = init[path[0]]
                for i in range(k + 1):
                    w *= T[x[i], path[i], path[i + 1]]
                joint[path[-1]] += w
            np.testing.assert_allclose(post.belief[b, k], joint / joint.sum(), atol=1e-12)
            np.testing.assert_allclose(post.predictive[b, k], (joint / joint.sum()) @ T.sum(2).T, atol=1e-12)


def test_describe_names_the_kind_and_its_parameters():
    assert Mess3(x=0.1, a=0.7).describe() == "Mess3(x=0.1, a=0.7)"
    assert RRXOR().describe() == "RRXOR(p1=0.5, p2=0.5)"
    assert HMM(T=RANDOM_T.tolist()).describe() == "HMM(states=3, tokens=2)"
    assert NRecurrence(p_noise="0.2/n").describe() == "NRecurrence(p_noise=0.2/n)"
    assert "3 of 9 task vectors" in ModularICL(p=3, n_tasks=3).describe()


def test_mess3_and_rrxor_configs_are_the_processes():
    np.testing.assert_array_equal(Mess3(x=0.05, a=0.85).process.transitions, mess3(0.05, 0.85).transitions)
    np.testing.assert_array_equal(RRXOR(p1=0.2, p2=0.7).process.transitions, rrxor(0.2, 0.7).transitions)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: Mess3(x=0.0), "x must lie in (0, 0.5]"),
        (lambda: Mess3(a=1.5), "a must lie in [0, 1]"),
        (lambda: RRXOR(p2=-0.1), "p2 must lie in [0, 1]"),
        (lambda: HMM(T=[[[0.5, 0.6], [0.5, 0.5]]]), "sum to 1"),
        (lambda: HMM(T=[[[-0.5, 1.5], [0.5, 0.5]]]), ">= 0"),
        (lambda: HMM(T=[[[1.0, 0.0], [0.0, 1.0]]]), "stationary distributions"),
        (lambda: HMM(T=[[[1.0, 0.0], [0.0, 1.0]]], initial=[0.5, 0.6]), "initial must be"),
        (lambda: ModularICL(p=1), "p must be an integer in [2"),
        (lambda: ModularICL(p=3, n_tasks=10), "n_tasks must be an integer in [1, p^2] = [1, 9]"),
        (lambda: ModularICL(n_tasks=0), "n_tasks must be an integer in [1"),
    ],
)
def test_invalid_task_parameters_name_the_problem(make, words):
    with pytest.raises(ValueError, match=None) as error:
        make()
    assert words in str(error.value)


def test_hmm_with_an_explicit_initial_distribution():
    task = HMM(T=[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]], initial=[0.25, 0.75])
    data = task.sample(4000, 3, seed=0)
    assert abs(data.tokens[:, 0].mean() - 0.75) < 0.03  # state 1 emits token 1 forever
    assert np.all(data.tokens == data.tokens[:, :1])


# --- evaluation: the observer itself as the model scores zero


class ObserverModel(nn.Module):
    def __init__(self, task, **observer) -> None:
        super().__init__()
        self.task, self.observer = task, observer
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, tokens):
        predictive = torch.as_tensor(np.asarray(self.task.posterior(tokens.numpy(), **self.observer).predictive))
        return predictive.clamp_min(1e-300).log()


@pytest.mark.parametrize("kind", ["mess3", "rrxor", "hmm"])
def test_hmm_kinds_observer_scores_zero_kl_and_full_strata(kind):
    task = KINDS[kind]
    sets = build_eval_sets(task, 10, 300, seed=0)
    assert list(sets) == ["eval"]
    result = evaluate(ObserverModel(task), sets["eval"])
    assert result.kl == pytest.approx(0.0, abs=1e-9)
    assert result.accuracy_name == "next_acc" and result.accuracy == pytest.approx(result.bayes_accuracy)
    assert sum(part.share for part in result.by_stratum) == pytest.approx(1.0)
    assert {part.name for part in result.by_stratum} == {f"s{name}" for name in task.process.state_names}


def test_modular_evaluation_sets_and_observers():
    task = ModularICL(p=5, n_examples=6, n_tasks=6, task_seed=0)
    sets = build_eval_sets(task, 17, 300, seed=0)
    assert list(sets) == ["eval", "universal", "out_dist"]
    in_dist = evaluate(ObserverModel(task, prior="in_distribution"), sets["eval"])
    assert in_dist.kl == pytest.approx(0.0, abs=1e-9) and in_dist.accuracy_name == "z_acc"
    universal = evaluate(ObserverModel(task, prior="universal"), sets["universal"])
    assert universal.kl == pytest.approx(0.0, abs=1e-9)
    # The in-distribution observer is not the universal one on in-distribution data, and not 0 KL there.
    assert evaluate(ObserverModel(task, prior="in_distribution"), sets["universal"]).kl > 1e-3
    assert evaluate(ObserverModel(task, prior="universal"), sets["out_dist"]).kl == pytest.approx(0.0, abs=1e-9)
    # x and y are never predictable: the observer predicts them uniformly, and KL there is 0 for it.
    kinds = {part.name: part for part in in_dist.by_stratum}
    assert set(kinds) == {"next_x", "next_y", "next_z"}
    assert kinds["next_x"].kl == pytest.approx(0.0, abs=1e-12) and kinds["next_y"].kl == pytest.approx(0.0, abs=1e-12)
    predicting_x = sets["eval"].strata == 0  # [batch, pos]: the next token is an x
    assert torch.allclose(sets["eval"].predictive[predicting_x], torch.full((5,), 0.2, dtype=torch.float64))
    every = ModularICL(p=3, n_examples=2, n_tasks=9)
    assert list(build_eval_sets(every, 5, 20, seed=0)) == ["eval", "universal"]


# --- training and run folders, for every kind


def tiny_config(task: Task, steps: int, n_ctx: int = 9, **train) -> RunConfig:
    model = GPTConfig(vocab_size=task.vocab_size, n_ctx=n_ctx, d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=64)
    settings = dict(steps=steps, batch_size=64, lr=3e-3, warmup_steps=10, eval_every=steps, eval_size=256, device="cpu")
    return RunConfig(task=task, model=model, train=TrainConfig(**{**settings, **train}))


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_tiny_training_run_learns_and_its_folder_round_trips(tmp_path, kind):
    task = KINDS[kind]
    n_ctx = 11 if kind == "modular" else 9
    config = tiny_config(task, steps=300, n_ctx=n_ctx)
    result = train(config, tmp_path / kind, progress=False)
    metrics = RunFolder(tmp_path / kind).read_metrics()
    start, end = metrics[0]["eval/kl"], metrics[-1]["eval/kl"]
    assert end < 0.5 * start, (start, end)
    run = load_run(tmp_path / kind)
    assert run.task == task and run.config == config and run.step == 300
    assert json.loads((tmp_path / kind / "config.json").read_text())["task"]["kind"] == kind
    again = run.evaluate()
    assert again["eval"].kl == pytest.approx(result.evaluations["eval"].kl, rel=1e-6)
    if kind == "modular":
        assert {"eval/kl", "universal/kl", "out_dist/kl", "eval/z_acc", "out_dist/z_acc"} <= set(metrics[-1])


def test_run_config_refuses_a_context_longer_than_a_modular_sequence_and_held_out_rules_without_rules():
    task = ModularICL(p=3, n_examples=4, n_tasks=4)
    with pytest.raises(ValueError, match="n_ctx must be <= 11"):
        tiny_config(task, 10, n_ctx=12)
    with pytest.raises(ValueError, match="held_out_fraction must be 0 for task kind 'mess3'"):
        tiny_config(Mess3(), 10, held_out_fraction=0.2)


# --- the command line


def test_cli_trains_the_mess3_preset_with_no_other_option(tmp_path):
    # The preset's own run is minutes long; cap it here and check the rest is the preset.
    assert main(["train", "--task", "mess3", "--out", str(tmp_path / "m"), "--steps", "3", "--no-progress"]) == 0
    config = load_run(tmp_path / "m").config
    assert config.task == Mess3(x=0.05, a=0.85)
    assert (config.model.n_layers, config.model.d_model, config.model.n_ctx) == (4, 64, 10)


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample", "--task", "modular", "--p", "1"], "p must be an integer in [2"),
        (["sample", "--task", "modular", "--p", "3", "--n-tasks", "10"], "n_tasks must be an integer in [1, p^2]"),
        (["sample", "--task", "hmm", "--T", "[[[0.5, 0.6], [0.5, 0.5]]]"], "sum to 1"),
        (["sample", "--task", "hmm", "--T", "[[[0.5"], "cannot read"),
        (["sample", "--task", "mess3", "--periods", "2", "3"], "does not take --periods"),
        (["bayes", "--task", "modular", "--x", "0.1"], "does not take --x"),
        (["sample", "--task", "markov"], "invalid choice: 'markov'"),
        (["train", "--task", "mess3", "--preset", "quick"], "is a nrecurrence preset"),
        (["train", "--task", "rrxor", "--held-out-fraction", "0.2"], "held_out_fraction must be 0"),
        (["sample", "--task", "mess3", "--split", "out_of_distribution"], "--split is for modular tasks"),
    ],
)
def test_bad_task_options_are_one_line_and_exit_code_2(args, message, capsys, tmp_path):
    if args[0] == "train":
        args = [*args, "--out", str(tmp_path / "x")]
    try:
        code = main(args)
    except SystemExit as exit:  # argparse's own errors (an unknown choice) exit from the parser
        code = exit.code
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("usage: nrecur")]  # argparse's usage line
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "x").exists()


def test_unknown_task_kind_from_the_real_command_exits_2_without_traceback():
    result = subprocess.run([sys.executable, "-m", "nrecur", "sample", "--task", "markov"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "invalid choice" in result.stderr


@pytest.mark.parametrize("kind", ["mess3", "rrxor", "modular"])
def test_cli_sample_and_bayes_for_other_kinds(kind, capsys, tmp_path):
    assert main(["sample", "--task", kind, "--batch-size", "2", "--length", "9"]) == 0
    assert "seq 1" in capsys.readouterr().out
    assert main(["bayes", "--task", kind, "--length", "9", "--batch-size", "64"]) == 0
    assert "mean over positions" in capsys.readouterr().out
    assert main(["sample", "--task", kind, "--length", "9", "--out", str(tmp_path / "d.npz")]) == 0
    with np.load(tmp_path / "d.npz") as data:
        assert json.loads(str(data["task"]))["kind"] == kind


# --- a kind defined outside nrecur trains like the built-in ones


def test_a_user_defined_kind_trains_and_round_trips(tmp_path):
    """A ``Task`` subclass with its own ``kind`` and a registered observer is a task like any other."""
    from dataclasses import dataclass
    from typing import Literal

    from nrecur import Sequences, Strata, Truth, register_observer
    from nrecur.observer.results import HMMPosterior
    from nrecur.tasks.base import OBSERVERS

    @dataclass(frozen=True)
    class Flips(Sequences):
        pass

    class Coin(Task):
        kind: Literal["coin"] = "coin"
        q: float = 0.8
        """Probability of token 1."""

        @property
        def vocab_size(self) -> int:
            return 2

        def sample(self, batch_size, length, seed=0):
            rng = np.random.default_rng(seed)
            return Flips(tokens=(rng.random((batch_size, length)) < self.q).astype(np.int64))

        def truth(self, sample):
            every = np.ones((len(sample), sample.tokens.shape[1] - 1), dtype=bool)
            return Truth("next_acc", every, "everywhere", Strata(np.zeros_like(sample.tokens), (0,), ("all",), "all"))

    @register_observer(Coin)
    def coin_posterior(task, tokens, impossible="raise"):
        tokens = np.asarray(tokens)
        predictive = np.broadcast_to(np.array([1 - task.q, task.q]), (*tokens.shape, 2)).copy()
        log_p = np.log(np.where(tokens == 1, task.q, 1 - task.q))
        return HMMPosterior(predictive, predictive[..., :1], -log_p[:, 1:], log_p.sum(1), np.full(len(tokens), -1))

    try:
        config = tiny_config(Coin(q=0.9), steps=60)
        assert RunConfig.model_validate_json(config.model_dump_json()).task == Coin(q=0.9)
        train(config, tmp_path / "coin", progress=False)
        run = load_run(tmp_path / "coin")
        assert isinstance(run.task, Coin) and run.task.q == 0.9
        assert run.evaluate()["eval"].kl < 0.05  # a constant is easy to learn
    finally:
        Task.KINDS.pop("coin", None)
        OBSERVERS.pop(Coin, None)
