"""Training: configs, data, the observer-based evaluation, Grokfast, failures, and a real run that learns."""

from __future__ import annotations

import json
import math

import numpy as np
import pydantic
import pytest
import torch
from torch import nn

from nrecur._config import format_error
from nrecur.model import GPTConfig
from nrecur.tasks import NRecurrence
from nrecur.train import (
    Callback,
    EvalSet,
    Evaluator,
    NonFiniteLossError,
    RunConfig,
    TrainConfig,
    Trainer,
    build_eval_sets,
    evaluate,
    train,
)
from nrecur.train.checkpoint import load_checkpoint
from nrecur.train.folder import RunFolder
from nrecur.train.data import FiniteData, OnlineData, held_out_rules, touches
from nrecur.train.grokfast import GrokfastEMA
from nrecur.train.loop import resolve_device

SMALL_MODEL = GPTConfig(vocab_size=8, n_ctx=16, d_model=32, n_layers=1, n_heads=2, d_head=16, d_mlp=64)


class ObserverModel(nn.Module):
    """A 'model' whose logits are the exact observer's log predictive: the best possible model."""

    def __init__(self, task: NRecurrence) -> None:
        super().__init__()
        self.task = task
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the evaluator a device

    def forward(self, tokens):
        predictive = torch.as_tensor(np.asarray(self.task.posterior(tokens.numpy()).predictive))
        return predictive.clamp_min(1e-300).log()


class UniformModel(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, tokens):
        return torch.zeros(*tokens.shape, self.vocab)


# --- config


def test_lr_schedule_warmup_then_cosine_to_min_ratio():
    config = TrainConfig(steps=1000, lr=1e-2, warmup_steps=100, schedule="cosine", min_lr_ratio=0.1)
    assert config.lr_at(0) == pytest.approx(1e-4)
    assert config.lr_at(99) == pytest.approx(1e-2)
    assert config.lr_at(100) == pytest.approx(1e-2)
    assert config.lr_at(550) == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5))
    assert config.lr_at(1000) == pytest.approx(1e-3)
    lrs = [config.lr_at(s) for s in range(100, 1001)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert TrainConfig(schedule="constant", warmup_steps=0).lr_at(5000) == TrainConfig().lr
    assert TrainConfig(steps=200, warmup_steps=0, schedule="linear", min_lr_ratio=0.0).lr_at(100) == pytest.approx(TrainConfig().lr / 2)


@pytest.mark.parametrize(
    "values, field, words",
    [
        ({"lr": 0.0}, "lr", "> 0"),
        ({"lr": float("nan")}, "lr", "finite"),
        ({"steps": 0}, "steps", ">= 1"),
        ({"betas": (0.9, 1.0)}, "betas", "[0, 1)"),
        ({"held_out_fraction": 1.0}, "held_out_fraction", "[0, 1)"),
        ({"weight_decay": -1.0}, "weight_decay", ">= 0"),
        ({"mode": "batch"}, "mode", "online"),
        ({"device": "tpu"}, "device", "cuda"),
        ({"lr_max": 1.0}, "lr_max", "Extra inputs"),
    ],
)
def test_invalid_train_config_names_the_field(values, field, words):
    with pytest.raises(pydantic.ValidationError) as info:
        TrainConfig(**values)
    message = format_error(info.value)
    assert message.startswith(field) and words in message


def test_run_config_vocab_mismatch_is_an_error():
    with pytest.raises(pydantic.ValidationError, match="model.vocab_size .16. must equal task.vocab_size .8."):
        RunConfig(task=NRecurrence(vocab_size=8), model=GPTConfig(vocab_size=16))


def test_run_config_round_trips_through_json_with_per_period_probabilities():
    config = RunConfig(task=NRecurrence(p_noise="0.2/n", p_transition={2: 0.1, 3: 0.05, 4: 0.0, 5: 0.02}))
    again = RunConfig.model_validate_json(json.dumps(config.model_dump(mode="json")))
    assert again == config
    assert np.allclose(again.task.noise_by_period, [0.1, 0.2 / 3, 0.05, 0.04])


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


# --- data


def test_online_batches_are_a_function_of_the_step():
    data = OnlineData(NRecurrence(), length=17, batch_size=8, seed=3)
    assert data.batch(5).shape == (8, 17)
    assert np.array_equal(data.batch(5), data.batch(5))
    assert not np.array_equal(data.batch(5), data.batch(6))
    assert not np.array_equal(data.batch(5), OnlineData(NRecurrence(), 17, 8, seed=4).batch(5))


def test_finite_data_visits_every_sequence_once_per_epoch():
    data = FiniteData(NRecurrence(), length=9, size=40, batch_size=8, seed=0)
    rows = {tuple(row) for row in data.tokens}
    assert len(rows) == 40
    epoch = np.concatenate([data.batch(step) for step in range(5)])
    assert sorted(map(tuple, epoch)) == sorted(map(tuple, data.tokens))
    assert not np.array_equal(np.concatenate([data.batch(step) for step in range(5, 10)]), epoch)
    full = FiniteData(NRecurrence(), length=9, size=40, batch_size=100, seed=0)
    assert np.array_equal(full.batch(0), full.tokens) and np.array_equal(full.batch(7), full.tokens)


def test_held_out_rules_never_reach_training_and_split_evaluation():
    task = NRecurrence(p_transition=0.05)
    rules = held_out_rules(task, 0.25, seed=0)
    assert len(rules) == 8 and rules == held_out_rules(task, 0.25, seed=0)
    assert rules != held_out_rules(task, 0.25, seed=1)
    data = FiniteData(task, length=20, size=300, batch_size=300, seed=0, held_out=rules)
    assert not touches(task, data.sequences, rules).any()
    online = OnlineData(task, length=20, batch_size=64, seed=0, held_out=rules)
    batch = online.batch(3)
    assert batch.shape == (64, 20)
    sets = build_eval_sets(task, 20, 400, seed=5, held_out=rules)
    assert len(sets["in_dist"]) + len(sets["out_dist"]) == 400
    assert len(sets["out_dist"]) > 0 and len(sets["in_dist"]) > 0
    assert held_out_rules(task, 0.0, seed=0) == frozenset()


# --- evaluation against the observer


def test_the_observer_itself_scores_zero_kl():
    task = NRecurrence(p_noise="0.2/n", p_transition="0.2/n")
    eval_set = build_eval_sets(task, 20, 200, seed=0)["eval"]
    result = evaluate(ObserverModel(task), eval_set)
    assert result.kl == pytest.approx(0.0, abs=1e-9)
    assert result.model_ce == pytest.approx(result.bayes_ce, abs=1e-9)
    assert result.target_accuracy == pytest.approx(result.bayes_target_accuracy)
    assert len(result.kl_per_position) == 20
    assert sum(part.share for part in result.by_period) == pytest.approx(1.0)


def test_uniform_model_kl_is_log_vocab_minus_observer_entropy():
    task = NRecurrence()
    eval_set = build_eval_sets(task, 16, 100, seed=0)["eval"]
    result = evaluate(UniformModel(8), eval_set)
    entropy = -eval_set.neg_entropy  # [batch, pos]
    assert result.kl == pytest.approx(float((math.log(8) - entropy).mean()), rel=1e-9)
    assert result.model_ce == pytest.approx(math.log(8))
    # Deterministic task: the observer is certain at target positions late in the sequence.
    assert result.kl_per_position[-1] > result.kl_per_position[0]
    assert result.bayes_target_accuracy > 0.7 > result.target_accuracy + 0.3


def test_eval_set_on_another_task_uses_that_tasks_observer():
    det, noisy = NRecurrence(), NRecurrence(p_noise=0.3)
    batch = noisy.sample(50, 16, seed=0)
    eval_set = EvalSet.build("eval", noisy, batch)
    assert evaluate(ObserverModel(noisy), eval_set).kl == pytest.approx(0.0, abs=1e-9)
    assert evaluate(ObserverModel(NRecurrence(p_noise=0.1)), eval_set).kl > 1e-3
    assert det.vocab_size == noisy.vocab_size


# --- Grokfast


def test_grokfast_amplifies_the_ema_of_the_gradient():
    layer = nn.Linear(1, 1, bias=False)
    grokfast = GrokfastEMA(layer, alpha=0.5, lamb=2.0)
    expected_ema = None
    for g in (1.0, 3.0, -2.0):
        layer.weight.grad = torch.tensor([[g]])
        grokfast.filter_gradients()
        expected_ema = g if expected_ema is None else 0.5 * expected_ema + 0.5 * g
        assert float(grokfast.ema["weight"]) == pytest.approx(expected_ema)
        assert float(layer.weight.grad) == pytest.approx(g + 2.0 * expected_ema)


# --- failure


class PoisonAt(Callback):
    """Puts a NaN into a weight once ``step`` is reached."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, trainer, info) -> None:
        if trainer.step == self.step:
            with torch.no_grad():
                trainer.model.embed.weight[0, 0] = float("nan")


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    config = RunConfig(
        model=SMALL_MODEL,
        train=TrainConfig(steps=50, batch_size=8, eval_every=10, eval_size=32, checkpoint_every=10, device="cpu"),
    )
    with pytest.raises(NonFiniteLossError, match=r"became nan at step 2[56].*last good checkpoint: .*step_00000020"):
        train(config, tmp_path / "run", progress=False, callbacks=[PoisonAt(25)])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" and "nan" in summary["error"]
    checkpoint = load_checkpoint(RunFolder(tmp_path / "run").latest_checkpoint())
    assert checkpoint.step == 20
    assert all(torch.isfinite(t).all() for t in checkpoint.model.values())


# --- a real run that learns


def test_a_tiny_training_run_learns():
    """KL(observer || model) falls far below its starting value within seconds on CPU."""
    config = RunConfig(
        model=SMALL_MODEL,
        train=TrainConfig(steps=400, batch_size=32, lr=1e-2, warmup_steps=20, eval_every=400, eval_size=256, device="cpu"),
    )
    torch.set_num_threads(1)
    trainer = Trainer(config, [Evaluator()])
    start = evaluate(trainer.model, build_eval_sets(config.task, 16, 256, seed=config.train.eval_seed)["eval"])
    result = trainer.fit()
    final = result.evaluations["eval"]
    assert start.kl > 0.3
    assert final.kl < 0.6 * start.kl
    assert final.target_accuracy > start.target_accuracy + 0.2
    assert final.model_ce > final.bayes_ce - 0.05  # no model beats the observer on fresh data (up to noise)


def test_finite_mode_reports_train_and_memorization(tmp_path):
    config = RunConfig(
        model=SMALL_MODEL,
        train=TrainConfig(
            mode="finite", train_size=16, batch_size=16, steps=150, lr=1e-2, warmup_steps=10, weight_decay=0.0,
            eval_every=50, eval_size=64, memorization_threshold=0.0, device="cpu",
        ),
    )  # fmt: skip
    result = train(config, tmp_path / "run", progress=False)
    assert set(result.evaluations) == {"eval", "train"}
    train_eval, fresh = result.evaluations["train"], result.evaluations["eval"]
    # 16 sequences memorized: the model beats the observer on its own training data, not on fresh data.
    assert train_eval.excess_ce < 0 < fresh.excess_ce
    assert result.grokking.memorization_step is not None and result.grokking.threshold_step is None
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 50, 100, 150]
    assert "train/excess_ce" in lines[-1] and "eval/kl" in lines[-1]


def test_tensorboard_events_are_written_when_tensorboard_is_installed(tmp_path):
    pytest.importorskip("tensorboard")
    config = RunConfig(model=SMALL_MODEL, train=TrainConfig(steps=4, batch_size=4, eval_every=2, eval_size=16, device="cpu"))
    train(config, tmp_path / "run", progress=False)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_matches_the_cpu_evaluation_pipeline(tmp_path):
    config = RunConfig(model=SMALL_MODEL, train=TrainConfig(steps=20, batch_size=16, eval_every=10, eval_size=64, device="cuda"))
    result = train(config, tmp_path / "run", progress=False)
    assert result.steps == 20 and math.isfinite(result.evaluations["eval"].kl)
    from nrecur.runs import load_run

    run = load_run(tmp_path / "run", device="cuda")
    assert next(run.model.parameters()).device.type == "cuda"
    assert run.evaluate()["eval"].kl == pytest.approx(result.evaluations["eval"].kl, abs=1e-4)
