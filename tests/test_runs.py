"""``load_run``: a run folder comes back as the same model, config, task and metrics."""

from __future__ import annotations

import pytest
import torch

from nrecur.model import GPTConfig
from nrecur.runs import load_run
from nrecur.tasks import NRecurrence
from nrecur.train import Callback, RunConfig, TrainConfig, train

MODEL = GPTConfig(vocab_size=8, n_ctx=12, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32)


class KeepModel(Callback):
    def on_end(self, trainer) -> None:
        self.model = trainer.model


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "run"
    keep = KeepModel()
    config = RunConfig(
        task=NRecurrence(p_noise=0.1),
        model=MODEL,
        train=TrainConfig(steps=30, batch_size=8, eval_every=10, eval_size=32, log_checkpoints=3, held_out_fraction=0.2, device="cpu"),
    )
    result = train(config, folder, progress=False, callbacks=[keep])
    return folder, config, keep.model, result


def test_load_run_round_trips(finished_run):
    folder, config, model, result = finished_run
    run = load_run(folder)
    assert run.config == config and run.task == config.task
    assert run.step == 30 and run.summary["status"] == "finished"
    tokens = config.task.sample(4, 12, seed=9).tokens
    with torch.no_grad():
        expected = model(torch.as_tensor(tokens))
        got = run.model(torch.as_tensor(tokens))
    assert got.shape == (4, 12, 8)
    assert torch.equal(got, expected)
    assert [row["step"] for row in run.metrics] == [0, 10, 20, 30]
    steps, kls = run.metric("eval/kl")
    assert steps == [0, 10, 20, 30] and kls[-1] == pytest.approx(result.evaluations["eval"].kl)


def test_load_run_at_an_earlier_checkpoint_and_evaluate_on_another_task(finished_run):
    folder, config, _, result = finished_run
    run = load_run(folder)
    assert 0 in run.checkpoint_steps and 30 in run.checkpoint_steps
    first = load_run(folder, step=0)
    assert first.step == 0
    assert not torch.equal(first.model.embed.weight, run.model.embed.weight)
    with pytest.raises(FileNotFoundError, match="no checkpoint at step 7"):
        load_run(folder, step=7)

    own = run.evaluate()
    assert set(own) == {"eval", "in_dist", "out_dist", "in_dist_mem"}
    assert own["eval"].kl == pytest.approx(result.evaluations["eval"].kl)
    other = run.evaluate(NRecurrence(p_noise="0.2/n", p_transition="0.2/n"), size=64, seed=3)
    assert set(other) == {"eval"} and other["eval"].n_sequences == 64
    with pytest.raises(ValueError, match="vocab_size 16 but the model was trained with 8"):
        run.evaluate(NRecurrence(vocab_size=16))


def test_load_run_of_a_non_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        load_run(tmp_path)
