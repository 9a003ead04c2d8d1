"""The compiled training step: the eager step's losses to float tolerance, exact resume, and when a run compiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nrecur.model import GPTConfig
from nrecur.tasks import NRecurrence
from nrecur.train import Callback, RunConfig, TrainConfig, resume, train
from nrecur.train.checkpoint import load_checkpoint
from nrecur.train.compiled import FASTER_COMPILED, compile_choice
from nrecur.train.folder import RunFolder
from nrecur.train.interventions import Intervention
from nrecur.train.loop import Trainer

MODEL = GPTConfig(vocab_size=4, n_ctx=12, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32)
TRAIN = TrainConfig(steps=12, batch_size=8, eval_every=6, eval_size=32, checkpoint_every=4, device="cpu", optimizer="muon")
CONFIG = RunConfig(task=NRecurrence(vocab_size=4, periods=(2, 3)), model=MODEL, train=TRAIN)


def losses(config: RunConfig, steps: int) -> tuple[list[float], Trainer]:
    trainer = Trainer(config)
    return [trainer.train_step().loss for _ in range(steps)], trainer


@pytest.mark.slow
def test_the_compiled_step_follows_the_eager_step_to_float_tolerance():
    eager, eager_trainer = losses(CONFIG.model_copy(update={"train": TRAIN.model_copy(update={"compile": "off"})}), 5)
    compiled, compiled_trainer = losses(CONFIG.model_copy(update={"train": TRAIN.model_copy(update={"compile": "on"})}), 5)
    assert compiled_trainer.compile_choice.compiled and not eager_trainer.compile_choice.compiled
    assert eager[0] != eager[-1]  # it trains: the losses move, and the compiled ones follow them
    assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-5)
    for (name, a), b in zip(eager_trainer.model.named_parameters(), compiled_trainer.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)


class InterruptAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, trainer, info) -> None:
        if trainer.step == self.step:
            raise KeyboardInterrupt


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(RunFolder(run_dir).latest_checkpoint()).model


@pytest.mark.slow
def test_a_compiled_run_resumes_to_the_weights_of_an_uninterrupted_compiled_run(tmp_path):
    config = CONFIG.model_copy(update={"train": TRAIN.model_copy(update={"compile": "on"})})
    train(config, tmp_path / "whole", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", progress=False, callbacks=[InterruptAt(10)])
    assert resume(tmp_path / "cut", progress=False).steps == TRAIN.steps
    whole, cut = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    assert whole.keys() == cut.keys() and all(torch.equal(whole[name], cut[name]) for name in whole)
    rows = [[{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("whole", "cut")]
    assert rows[0] == rows[1]


def test_when_a_run_compiles_and_why():
    cpu = torch.device("cpu")

    def choice(**train):
        return compile_choice(CONFIG.model_copy(update={"train": TRAIN.model_copy(update=train)}), cpu)

    assert choice(compile="on").compiled and "train.compile on" in choice(compile="on").reason
    assert not choice(compile="off").compiled
    auto = choice(compile="auto")
    assert auto.compiled == FASTER_COMPILED["cpu"] and "auto" in auto.reason
    observer = choice(compile="on", objective="observer")
    assert not observer.compiled and "observer objective" in observer.reason
    ablated = choice(compile="on", interventions=(Intervention(layer=0, head=0, kind="ablate"),))
    assert not ablated.compiled and "interventions" in ablated.reason
