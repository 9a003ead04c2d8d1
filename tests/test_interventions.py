"""Interventions during training: ablated heads write nothing while active, clamped heads use the fixed
pattern, runs with them resume exactly, runs without them are unchanged, bad input fails in one line."""

from __future__ import annotations

import pytest
import torch
from test_train_resume import (
    Interrupt,
    InterruptAt,
    assert_bitwise_equal,
    final_weights,
    metrics_without_time,
)

from nrecur.cli import main
from nrecur.model import GPTConfig
from nrecur.runs import load_run
from nrecur.tasks import Mess3
from nrecur.train import (
    Callback,
    Evaluator,
    Intervention,
    RunConfig,
    TrainConfig,
    Trainer,
    resume,
    train,
)
from nrecur.train.interventions import (
    intervention_hooks,
    period_pattern,
    previous_token_pattern,
)

MODEL = GPTConfig(
    vocab_size=8, n_ctx=12, d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=32
)
FAST = {"eval_every": 10, "eval_size": 32, "checkpoint_every": 20, "batch_size": 16, "device": "cpu"}


def config(steps: int = 30, interventions=(), **train) -> RunConfig:
    return RunConfig(
        model=MODEL,
        train=TrainConfig(
            steps=steps, interventions=interventions, **{**FAST, **train}
        ),
    )


class HeadOutputRecorder(Callback):
    """Records, for every forward pass (training and evaluation), the step and the largest |z| of one head,
    read at the input of the block's output projection (after every hook on hook_z)."""

    def __init__(self, layer: int, head: int) -> None:
        self.layer, self.head = layer, head
        self.seen: list[tuple[int, float]] = []

    def on_start(self, trainer) -> None:
        attn = trainer.model.blocks[self.layer].attn
        width = attn.d_head

        def record(module, inputs) -> None:
            z = inputs[0]  # [batch, pos, head * d_head]
            part = z[..., self.head * width : (self.head + 1) * width]
            self.seen.append((trainer.step, float(part.detach().abs().max())))

        self._handle = attn.out.register_forward_pre_hook(record)

    def on_end(self, trainer) -> None:
        self._handle.remove()


def test_an_ablated_head_outputs_zero_exactly_while_active_in_training_and_evaluation():
    recorder = HeadOutputRecorder(layer=0, head=1)
    ablation = Intervention(kind="ablate", layer=0, head=1, start=5, end=20)
    Trainer(config(interventions=[ablation]), callbacks=[Evaluator(), recorder]).fit()
    steps = {step for step, _ in recorder.seen}
    assert steps == set(
        range(31)
    )  # a training forward at steps 0..29, evaluations at 0, 10, 20, 30
    for step, largest in recorder.seen:
        assert (largest == 0.0) == (5 <= step < 20), (step, largest)


def test_a_clamped_head_attends_with_the_fixed_pattern():
    clamp = Intervention(
        kind="clamp_pattern", layer=1, head=0, pattern="period", period=3
    )
    trainer = Trainer(config(interventions=[clamp]))
    tokens = torch.randint(0, 8, (4, 12))
    with trainer.model.hooks(intervention_hooks([clamp], step=0)):
        _, cache = trainer.model.run_with_cache(
            tokens,
            names_filter=[
                "blocks.1.attn.hook_pattern",
                "blocks.1.attn.hook_v",
                "blocks.1.attn.hook_z",
            ],
        )
    fixed = period_pattern(12, 3)  # [query_pos, key_pos]
    torch.testing.assert_close(
        cache["blocks.1.attn.hook_pattern"][:, 0],
        fixed.expand(4, 12, 12),
        rtol=0,
        atol=0,
    )
    z_expected = fixed @ cache["blocks.1.attn.hook_v"][:, :, 0]  # [batch, pos, d_head]
    torch.testing.assert_close(
        cache["blocks.1.attn.hook_z"][:, :, 0], z_expected, rtol=1e-5, atol=1e-6
    )
    # Query 7 (next token at 8 ≡ 2 mod 3) spreads over keys 2 and 5; query 0 has none and attends to itself.
    assert fixed[7].nonzero().flatten().tolist() == [2, 5] and fixed[0, 0] == 1.0
    assert previous_token_pattern(4).argmax(dim=-1).tolist() == [0, 0, 1, 2]
    torch.testing.assert_close(fixed.sum(-1), torch.ones(12))


def test_a_run_with_interventions_resumes_exactly_and_records_them(tmp_path):
    interventions = [
        Intervention(kind="ablate", layer=0, head=1, start=10, end=45),
        Intervention(
            kind="clamp_pattern", layer=1, head=0, pattern="previous", start=30
        ),
    ]
    run_config = config(steps=60, interventions=interventions)
    train(run_config, tmp_path / "whole", progress=False)
    with pytest.raises(Interrupt):
        train(run_config, tmp_path / "cut", progress=False, callbacks=[InterruptAt(47)])
    resume(tmp_path / "cut", progress=False)
    assert_bitwise_equal(
        final_weights(tmp_path / "whole"), final_weights(tmp_path / "cut")
    )
    assert metrics_without_time(tmp_path / "whole") == metrics_without_time(
        tmp_path / "cut"
    )
    assert load_run(tmp_path / "cut").config.train.interventions == tuple(interventions)
    # The intervention changed training: without it the weights differ.
    train(config(steps=60), tmp_path / "plain", progress=False)
    assert not torch.equal(
        final_weights(tmp_path / "plain")["blocks.0.attn.qkv.weight"],
        final_weights(tmp_path / "whole")["blocks.0.attn.qkv.weight"],
    )


def test_without_active_interventions_training_is_bit_identical(tmp_path):
    train(config(), tmp_path / "default", progress=False)
    train(config(interventions=[]), tmp_path / "empty", progress=False)
    later = Intervention(
        kind="ablate", layer=0, head=0, start=1000
    )  # never active in 30 steps
    train(config(interventions=[later]), tmp_path / "later", progress=False)
    for other in ("empty", "later"):
        assert_bitwise_equal(
            final_weights(tmp_path / "default"), final_weights(tmp_path / other)
        )
        assert metrics_without_time(tmp_path / "default") == metrics_without_time(
            tmp_path / other
        )


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: config(
                interventions=[Intervention(kind="ablate", layer=2, head=0)]
            ),
            r"layer 2 is out of range; the model has layers 0\.\.1",
        ),
        (
            lambda: config(
                interventions=[Intervention(kind="ablate", layer=0, head=2)]
            ),
            r"head 2 is out of range; the model has heads 0\.\.1",
        ),
        (
            lambda: config(
                interventions=[
                    Intervention(
                        kind="clamp_pattern",
                        layer=0,
                        head=0,
                        pattern="period",
                        period=7,
                    )
                ]
            ),
            r"period 7 is not one of the task's periods \[2, 3, 4, 5\]",
        ),
        (
            lambda: RunConfig(
                task=Mess3(),
                train=TrainConfig(
                    interventions=[
                        Intervention(
                            kind="clamp_pattern",
                            layer=0,
                            head=0,
                            pattern="period",
                            period=3,
                        )
                    ]
                ),
            ),
            "task kind 'mess3' has no periods",
        ),
        (
            lambda: Intervention(kind="ablate", layer=0, head=0, start=5, end=5),
            "start must be < end, got start 5, end 5",
        ),
        (
            lambda: Intervention(kind="clamp_pattern", layer=0, head=0),
            "clamp_pattern needs a pattern",
        ),
        (
            lambda: Intervention(
                kind="clamp_pattern", layer=0, head=0, pattern="period"
            ),
            "needs a period",
        ),
        (
            lambda: Intervention(kind="ablate", layer=-1, head=0),
            "layer must be an integer >= 0, got -1",
        ),
    ],
)
def test_bad_interventions_are_refused_with_a_message_naming_the_allowed_values(
    make, message
):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "option, message",
    [
        (
            ["--ablate-head", "0.x"],
            "argument --ablate-head: cannot read '0.x': write L.H[@A:B]",
        ),
        (
            ["--ablate-head", "0.1@9:3"],
            "argument --ablate-head: an intervention's start must be < end, got start 9, end 3",
        ),
        (
            ["--clamp-pattern", "0.1=diagonal"],
            "argument --clamp-pattern: cannot read '0.1=diagonal': write L.H=previous|period:N[@A:B]",
        ),
        (
            ["--clamp-pattern", "0.1=period:7"],
            "period 7 is not one of the task's periods [2, 3, 4, 5]",
        ),
        (
            ["--ablate-head", "4.0"],
            "layer 4 is out of range; the model has layers 0..1",
        ),
        (
            ["--ablate-head", "0.9@:10"],
            "head 9 is out of range; the model has heads 0..3",
        ),
    ],
)
def test_bad_intervention_options_fail_in_one_line(tmp_path, capsys, option, message):
    code = run_cli(
        [
            "train",
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "3",
            "--no-progress",
            *option,
        ]
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("usage: nrecur")]  # argparse's usage line
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "run").exists()


def run_cli(argv: list[str]) -> int:
    """The exit code of ``nrecur ARGV`` (argparse errors exit through SystemExit)."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


def test_the_cli_records_interventions_in_the_config(tmp_path, capsys):
    from nrecur.cli import build_parser
    from nrecur.cli.train import config_from_train_args

    args = build_parser().parse_args(
        [
            "train",
            "--ablate-head",
            "0.3@0:500",
            "--clamp-pattern",
            "1.2=period:3@100:",
            "--clamp-pattern",
            "1.0=previous",
        ]
    )
    found = config_from_train_args(args).train.interventions
    assert [i.describe() for i in found] == [
        "ablate 0.3@0:500",
        "clamp 1.2=period:3@100:",
        "clamp 1.0=previous",
    ]
    assert run_cli(["train", "--resume", str(tmp_path), "--ablate-head", "0.1"]) == 2
    assert "drop --ablate-head" in capsys.readouterr().err
