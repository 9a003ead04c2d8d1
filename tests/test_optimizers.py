"""Optimizers: Muon on the blocks' matrices with AdamW on the rest, as one optimizer, against the two run apart."""

from __future__ import annotations

import copy
import json

import pydantic
import pytest
import torch

from nrecur.model import GPT, GPTConfig
from nrecur.tasks import NRecurrence
from nrecur.train import RunConfig, TrainConfig, optimizers, train
from nrecur.train.optimizers import MuonWithAdamW, make_optimizer, muon_parameters, newton_schulz, newton_schulz_dtype

MODEL = GPTConfig(vocab_size=8, n_ctx=12, d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=32)


def loss_of(model: GPT, step: int) -> torch.Tensor:
    tokens = torch.randint(0, 8, (4, 12), generator=torch.Generator().manual_seed(step))
    return torch.nn.functional.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())


def assert_same_next_step(*pairs: tuple[GPT, torch.optim.Optimizer], step: int) -> None:
    """One step of each (model, optimizer) on batch ``step`` leaves the models with identical weights."""
    for model, optimizer in pairs:
        optimizer.zero_grad()
        loss_of(model, step).backward()
        optimizer.step()
    first = list(pairs[0][0].parameters())
    for model, _ in pairs[1:]:
        for a, b in zip(first, model.parameters()):
            assert torch.equal(a, b)


def test_muon_trains_exactly_the_linear_weights_inside_the_blocks():
    model = GPT(MODEL)
    names = {name for name, p in model.named_parameters() if any(p is h for h in muon_parameters(model))}
    expected = {f"blocks.{i}.{part}.weight" for i in range(2) for part in ("attn.qkv", "attn.out", "mlp.fc_in", "mlp.fc_out")}
    assert names == expected


def test_muon_with_adamw_steps_like_torch_muon_and_adamw_apart(monkeypatch):
    """Orthogonalizing in bfloat16 (torch's dtype): the same trajectory, bit for bit, as torch.optim.Muon on the
    matrices plus torch.optim.AdamW on the rest, including a learning rate changed on the param groups between
    steps (as the trainer's schedule does)."""
    torch.manual_seed(0)
    ours, reference = GPT(MODEL), GPT(MODEL)
    reference.load_state_dict(ours.state_dict())
    initial_qkv = ours.blocks[0].attn.qkv.weight.detach().clone()
    train_config = TrainConfig(optimizer="muon", lr=5e-3, weight_decay=0.1, betas=(0.9, 0.98))
    monkeypatch.setattr(optimizers, "newton_schulz_dtype", lambda device: torch.bfloat16)
    optimizer = make_optimizer(ours, train_config)
    assert isinstance(optimizer, MuonWithAdamW) and optimizer.muon.ns_dtype == torch.bfloat16
    matrices = muon_parameters(reference)
    rest = [p for p in reference.parameters() if all(p is not m for m in matrices)]
    muon = torch.optim.Muon(matrices, lr=5e-3, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    adamw = torch.optim.AdamW(
        [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": 0.1}, {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}],
        lr=5e-3, betas=(0.9, 0.98), foreach=True,
    )  # fmt: skip
    for step in range(6):
        lr = 5e-3 * (1 - step / 10)
        for opt in (optimizer, muon, adamw):
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
        loss_of(ours, step).backward()
        loss_of(reference, step).backward()
        optimizer.step()
        muon.step()
        adamw.step()
    for (name, a), b in zip(ours.named_parameters(), reference.parameters()):
        assert torch.equal(a, b), name
    assert not torch.equal(ours.blocks[0].attn.qkv.weight, initial_qkv)


def reference_newton_schulz(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The quintic iteration written out in float64 on the tall-or-wide matrix as given (X <- aX + b(XX^T)X +
    c(XX^T)^2 X on the wide orientation)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = matrix.double()
    wide = x if x.shape[0] <= x.shape[1] else x.T
    wide = wide / torch.linalg.matrix_norm(wide)
    for _ in range(steps):
        gram = wide @ wide.T
        wide = a * wide + b * gram @ wide + c * gram @ gram @ wide
    return wide if x.shape[0] <= x.shape[1] else wide.T


@pytest.mark.parametrize("shape", [(24, 8), (8, 8), (8, 32)])
def test_newton_schulz_in_float32_follows_the_float64_iteration_and_bfloat16_is_coarser(shape):
    torch.manual_seed(3)
    matrix = torch.randn(shape)
    exact = reference_newton_schulz(matrix)
    in_float32, in_bfloat16 = newton_schulz(matrix, torch.float32), newton_schulz(matrix, torch.bfloat16)
    assert in_float32.dtype == torch.float32 and in_float32.shape == shape
    float32_error = (in_float32.double() - exact).abs().max().item()
    bfloat16_error = (in_bfloat16.double() - exact).abs().max().item()
    assert float32_error < 1e-5 < bfloat16_error, (float32_error, bfloat16_error)
    singular = torch.linalg.svdvals(exact)
    assert singular.min() > 0.5 and singular.max() < 1.3  # orthogonalized: the iteration's band, not the input's spread


def test_muon_orthogonalizes_in_float32_on_a_cpu_and_in_bfloat16_on_cuda():
    model = GPT(MODEL)
    assert make_optimizer(model, TrainConfig(optimizer="muon")).muon.ns_dtype == torch.float32
    assert newton_schulz_dtype("cpu") == torch.float32 and newton_schulz_dtype("cuda") == torch.bfloat16


def test_muon_with_adamw_state_dict_round_trip_continues_identically():
    torch.manual_seed(1)
    model = GPT(MODEL)
    optimizer = make_optimizer(model, TrainConfig(optimizer="muon"))
    for step in range(3):
        optimizer.zero_grad()
        loss_of(model, step).backward()
        optimizer.step()
    state = copy.deepcopy(optimizer.state_dict())
    assert len(state["state"]) == len(list(model.parameters()))  # both halves' state in one dict
    twin = copy.deepcopy(model)
    restored = make_optimizer(twin, TrainConfig(optimizer="muon"))
    restored.load_state_dict(state)
    assert_same_next_step((model, optimizer), (twin, restored), step=3)


def test_a_copy_steps_like_the_original_and_groups_cannot_be_added():
    torch.manual_seed(2)
    model = GPT(MODEL)
    optimizer = make_optimizer(model, TrainConfig(optimizer="muon"))
    loss_of(model, 0).backward()
    optimizer.step()
    twin_model, twin = copy.deepcopy((model, optimizer))  # one memo: the copy's groups hold the copied weights
    assert_same_next_step((model, optimizer), (twin_model, twin), step=1)
    with pytest.raises(NotImplementedError, match="cannot take new parameter groups"):
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3))]})


def test_muon_refuses_a_model_without_blocks():
    with pytest.raises(pydantic.ValidationError, match="train.optimizer 'muon' needs model.n_layers >= 1"):
        RunConfig(task=NRecurrence(), model=MODEL.model_copy(update={"n_layers": 0}), train=TrainConfig(optimizer="muon"))


def test_a_run_with_muon_learns(tmp_path):
    config = RunConfig(
        task=NRecurrence(vocab_size=4, periods=(2,)),
        model=MODEL.model_copy(update={"vocab_size": 4}),
        train=TrainConfig(optimizer="muon", steps=150, batch_size=32, lr=5e-3, eval_every=150, eval_size=64, device="cpu"),
    )
    result = train(config, tmp_path / "run", progress=False)
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert result.steps == 150 and result.evaluations["eval"].kl < 0.5 * first["eval/kl"], (first["eval/kl"], result.evaluations["eval"].kl)
