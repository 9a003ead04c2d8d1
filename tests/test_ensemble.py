"""Ensembles: many same-shape models trained at once with vmap, against the same models trained alone.

The reference is the normal trainer (``train``: ``torch.optim.AdamW``, ``clip_grad_norm_``,
``GrokfastEMA``, the objective, the schedule, ``evaluate``), run once per config.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from nrecur.model import GPT, GPTConfig
from nrecur.runs import load_run
from nrecur.tasks import NRecurrence
from nrecur.train import (
    NonFiniteLossError,
    RunConfig,
    TrainConfig,
    evaluate,
    resume,
    train,
)
from nrecur.train.checkpoint import load_checkpoint
from nrecur.train.ensemble import Ensemble, can_ensemble, train_ensemble
from nrecur.train.evaluate import build_eval_sets
from nrecur.train.grokfast import GrokfastEMA
from nrecur.train.interventions import Intervention
from nrecur.train.optimizers import make_optimizer
from nrecur.train.vector_adamw import (
    FlatLayout,
    VectorAdamW,
    VectorGrokfast,
    clip_grad_norms,
)

TINY = GPTConfig(vocab_size=8, n_ctx=16, d_model=32, n_layers=2, n_heads=2, d_head=8, d_mlp=64)
BASE = dict(steps=6, batch_size=8, eval_every=3, eval_size=32, warmup_steps=2, checkpoint_every=100, device="cpu")

# Three members that differ in much of what an ensemble may vary (the third also in its task and steps).
VARIED = [
    dict(init_seed=0, data_seed=10, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.98)),
    dict(init_seed=1, data_seed=11, lr=3e-3, weight_decay=0.1, betas=(0.8, 0.99), grokfast_lambda=2.0, grokfast_alpha=0.9, objective="observer"),
    dict(init_seed=0, data_seed=12, eval_seed=5, lr=1e-2, weight_decay=1.0, betas=(0.9, 0.95), schedule="linear", steps=5),
]
NOISY = NRecurrence(p_noise=0.1)


def config(task: NRecurrence = NRecurrence(), **train) -> RunConfig:
    return RunConfig(task=task, model=TINY, train=TrainConfig(**{**BASE, **train}))


def varied_configs() -> list[RunConfig]:
    return [config(**VARIED[0]), config(**VARIED[1]), config(NOISY, **VARIED[2])]


def key_bias_mask(name: str, param: torch.Tensor) -> torch.Tensor:
    """True where a parameter is the attention's key bias: its gradient is zero up to rounding
    (a softmax ignores what is added to every score of a query), and AdamW turns that rounding
    noise into steps of size lr, so it cannot agree between two summation orders."""
    mask = torch.zeros_like(param, dtype=torch.bool)
    if name.endswith("attn.qkv.bias"):
        d_attn = param.numel() // 3
        mask[d_attn : 2 * d_attn] = True
    return mask


def assert_same_weights(a: nn.Module, b: nn.Module, train: TrainConfig) -> None:
    """Equal to float rounding, as AdamW lets rounding show.

    AdamW moves a weight by about lr per step whatever the size of its gradient, so rounding in a
    gradient that is itself near zero (a unit silent on a batch; the key bias, see key_bias_mask)
    becomes a difference at the scale of lr. Measured: almost every weight agrees within 2.5e-4 * lr
    after 6 steps, a rare one within 1e-2 * lr. So: no weight differs by more than AdamW's reach
    (2 * lr * steps), and all but 0.1% of them (key biases aside) agree within 1e-3 * lr.
    """
    far = total = 0
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        diff = (pa - pb).detach().abs()
        assert float(diff.max()) <= 2 * train.lr * train.steps, name
        keep = ~key_bias_mask(name, pa)
        far += int((diff[keep] > 1e-3 * train.lr + 1e-5 * pb.detach()[keep].abs()).sum())
        total += int(keep.sum())
    assert far <= 1e-3 * total, f"{far} of {total} weights differ by more than 1e-3 * lr"


# --- the vectorized optimizer pieces against torch's


def random_models(count: int, seed: int = 0) -> list[GPT]:
    models = []
    for index in range(count):
        torch.manual_seed(seed + index)
        models.append(GPT(TINY))
    return models


def test_vector_adamw_equals_torch_adamw_per_model():
    trains = [TrainConfig(**{**BASE, **varied}) for varied in VARIED]
    models = random_models(len(trains))
    layout = FlatLayout.of(models[0])
    params = torch.stack([layout.flatten(m) for m in models])  # [model, param]
    vector = VectorAdamW(params, layout.decayed, [t.weight_decay for t in trains], [t.betas for t in trains])
    optimizers = [make_optimizer(m, t) for m, t in zip(models, trains)]
    generator = torch.Generator().manual_seed(3)
    for step in range(5):
        grads = [{n: torch.randn(p.shape, generator=generator) * 10.0**-step for n, p in m.named_parameters()} for m in models]
        lrs = [t.lr_at(step) for t in trains]
        for model, optimizer, grad, lr in zip(models, optimizers, grads, lrs):
            for name, param in model.named_parameters():
                param.grad = grad[name].clone()
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
        flat_grad = torch.stack([torch.cat([g[s.name].reshape(-1) for s in layout.segments]) for g in grads])
        vector.step(flat_grad, lrs)
        for row, model in enumerate(models):
            torch.testing.assert_close(vector.params[row], layout.flatten(model), atol=1e-7, rtol=1e-6)
    # the moments too, as torch keeps them
    for row, (model, optimizer) in enumerate(zip(models, optimizers)):
        views = layout.views(vector.exp_avg_sq[row])
        for name, param in model.named_parameters():
            torch.testing.assert_close(views[name], optimizer.state[param]["exp_avg_sq"], atol=1e-9, rtol=1e-6)


def test_clip_and_grokfast_equal_the_lone_versions():
    models = random_models(3, seed=10)
    layout = FlatLayout.of(models[0])
    max_norms = [0.5, math.inf, 1e-3]
    alphas, lambdas = [0.98, 0.9, 0.5], [2.0, 0.0, 5.0]
    lone = [GrokfastEMA(m, a, lam) for m, a, lam in zip(models, alphas, lambdas)]
    flat = torch.zeros(3, layout.size)
    vector = VectorGrokfast(alphas, lambdas, flat)
    generator = torch.Generator().manual_seed(4)
    for _ in range(3):
        for model in models:
            for param in model.parameters():
                param.grad = torch.randn(param.shape, generator=generator)
        grad = torch.stack([torch.cat([dict(m.named_parameters())[s.name].grad.reshape(-1) for s in layout.segments]) for m in models])
        vector.filter(grad)
        norms = clip_grad_norms(grad, max_norms)
        for row, (model, grokfast, max_norm) in enumerate(zip(models, lone, max_norms)):
            if lambdas[row] > 0:
                grokfast.filter_gradients()
            norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm, foreach=True)
            assert float(norms[row]) == pytest.approx(float(norm), rel=1e-5)
            expected = torch.cat([dict(model.named_parameters())[s.name].grad.reshape(-1) for s in layout.segments])
            torch.testing.assert_close(grad[row], expected, atol=1e-7, rtol=1e-5)


# --- whole runs against lone runs


@pytest.fixture(scope="module")
def ensemble_and_lone(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    configs = varied_configs()
    results = train_ensemble(configs, [root / f"member{i}" for i in range(len(configs))])
    for index, run_config in enumerate(configs):
        train(run_config, root / f"lone{index}", progress=False)
    return root, configs, results


def test_members_follow_their_lone_trajectories(ensemble_and_lone):
    root, configs, results = ensemble_and_lone
    assert [(r.stop_reason, r.steps) for r in results] == [("steps", 6), ("steps", 6), ("steps", 5)]
    for index in range(len(configs)):
        member, lone = load_run(root / f"member{index}"), load_run(root / f"lone{index}")
        assert member.config == lone.config and member.step == lone.step == configs[index].train.steps
        assert_same_weights(member.model, lone.model, configs[index].train)
        assert len(member.metrics) == len(lone.metrics) == 3  # steps 0, 3 and the last
        for got, want in zip(member.metrics, lone.metrics):
            assert got.keys() == want.keys() and got["step"] == want["step"]
            for name, value in want.items():
                if name in ("seconds", "step"):
                    continue
                assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-6), (index, want["step"], name)


def test_members_saw_their_own_data(ensemble_and_lone):
    # Members 0 and 2 start from the same weights (init_seed 0) but train on different batches.
    root, _, _ = ensemble_and_lone
    first, third = load_run(root / "member0"), load_run(root / "member2")
    assert not torch.allclose(first.model.embed.weight, third.model.embed.weight, atol=1e-4)
    assert first.metrics[1]["train/loss"] != third.metrics[1]["train/loss"]


def test_checkpoints_hold_the_lone_optimizer_and_grokfast_state(ensemble_and_lone):
    root, _, _ = ensemble_and_lone
    for index in range(3):
        member = load_checkpoint(load_run(root / f"member{index}").checkpoint)
        lone = load_checkpoint(load_run(root / f"lone{index}").checkpoint)
        assert member.optimizer.keys() == lone.optimizer.keys() and member.grokfast.keys() == lone.grokfast.keys()
        assert bool(member.grokfast) == (index == 1)
        for name, tensor in lone.optimizer.items():
            if name.endswith(".step"):
                assert float(member.optimizer[name]) == float(tensor) == (5 if index == 2 else 6)
            elif name.endswith(".exp_avg_sq"):  # the key bias's first moment is rounding noise; its second moment is tiny
                torch.testing.assert_close(member.optimizer[name], tensor, atol=1e-9, rtol=1e-4)
        for name, tensor in lone.grokfast.items():
            torch.testing.assert_close(member.grokfast[name], tensor, atol=1e-6, rtol=1e-4)
        summary = json.loads((root / f"member{index}" / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["steps"] == (5 if index == 2 else 6)


def test_vmapped_evaluation_equals_evaluate_alone():
    configs = varied_configs()
    ensemble = Ensemble(configs, vmapped_evaluation=True)
    try:
        for member in ensemble.members:
            scores = ensemble.evaluations(member)
            for name, eval_set in ensemble._sets(member).items():
                alone = evaluate(member.model, eval_set)
                assert scores[name].kl == pytest.approx(alone.kl, rel=1e-6)
                assert scores[name].model_ce == pytest.approx(alone.model_ce, rel=1e-6)
                assert scores[name].kl_per_position == pytest.approx(alone.kl_per_position, rel=1e-5, abs=1e-9)
                assert scores[name].accuracy == alone.accuracy and scores[name].bayes_ce == alone.bayes_ce
    finally:
        ensemble.close()


def test_batched_evaluation_equals_evaluate_alone(ensemble_and_lone):
    root, configs, results = ensemble_and_lone
    for run_config, result in zip(configs, results):
        model = load_run(result.run_dir).model
        sets = build_eval_sets(run_config.task, run_config.length, run_config.train.eval_size, run_config.train.eval_seed)
        alone = evaluate(model, sets["eval"])
        batched = result.evaluations["eval"]
        assert batched.n_sequences == alone.n_sequences
        assert batched.kl == pytest.approx(alone.kl, rel=1e-6)
        assert batched.model_ce == pytest.approx(alone.model_ce, rel=1e-6)
        assert batched.accuracy == alone.accuracy and batched.bayes_ce == alone.bayes_ce
        assert batched.kl_per_position == pytest.approx(alone.kl_per_position, rel=1e-5, abs=1e-9)


def test_a_member_resumes_alone(tmp_path):
    base = config(**VARIED[1], schedule="constant")
    train_ensemble([base, config(**VARIED[0], schedule="constant")], [tmp_path / "a", tmp_path / "b"])
    resume(tmp_path / "a", steps=9, progress=False)
    longer = base.model_copy(update={"train": base.train.model_copy(update={"steps": 9, "decay_steps": 6})})
    train(longer, tmp_path / "lone", progress=False)
    assert_same_weights(load_run(tmp_path / "a").model, load_run(tmp_path / "lone").model, longer.train)


# --- which groups qualify, and bad input


def test_can_ensemble_needs_the_same_model_batch_and_device():
    assert can_ensemble(varied_configs())
    assert can_ensemble([config()])
    assert can_ensemble([config(mode="finite", train_size=8, batch_size=64), config()])  # full batch of 8
    wider = RunConfig(model=TINY.model_copy(update={"d_model": 64}), train=TrainConfig(**BASE))
    for other, field in [
        (wider, "model"),
        (config(batch_size=16), "batch size"),
        (config(mode="finite", train_size=4), "batch size"),
        (config(device="auto"), "train.device"),
    ]:
        verdict = can_ensemble([config(), other])
        assert not verdict and f"config 1 differs from config 0 in {field}" == verdict.reason, (field, verdict.reason)
    ablated = config(interventions=(Intervention(kind="ablate", layer=0, head=0),))
    assert "config 1 has interventions" in can_ensemble([config(), ablated]).reason
    assert can_ensemble([config(), config(optimizer="muon")]).reason == "config 1 has train.optimizer 'muon'; the ensemble supports only 'adamw'"
    assert not can_ensemble([])


def test_bad_groups_are_refused_before_anything_is_written(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        train_ensemble([config(), config(init_seed=1)], [tmp_path / "new", tmp_path / "busy"])
    assert not (tmp_path / "new").exists() and (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="same run folder"):
        train_ensemble([config(), config(init_seed=1)], [tmp_path / "x", tmp_path / "x"])
    with pytest.raises(ValueError, match="one folder per config"):
        train_ensemble([config(), config(init_seed=1)], [tmp_path / "y"])
    with pytest.raises(ValueError, match="differs from config 0 in batch size"):
        train_ensemble([config(), config(batch_size=4)])
    huge = RunConfig(model=TINY.model_copy(update={"d_mlp": 2**20}), train=TrainConfig(**BASE))  # ~1 GiB of weights each
    with pytest.raises(ValueError, match="these 64 runs together need about .* train fewer of them at once"):
        train_ensemble([huge] * 64, [tmp_path / f"huge{i}" for i in range(64)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


# --- members that end early


def test_a_diverging_member_stops_as_alone_and_the_others_go_on(tmp_path):
    # No clipping and an absurd learning rate: the weights overflow and the loss becomes NaN.
    wild = config(init_seed=3, lr=1e30, grad_clip=0.0, warmup_steps=0)
    calm = config(**VARIED[0])
    results = train_ensemble([wild, calm], [tmp_path / "wild", tmp_path / "calm"])
    with pytest.raises(NonFiniteLossError) as alone:
        train(wild, tmp_path / "wild_alone", progress=False)
    assert results[0].stop_reason == "non-finite loss" and results[0].steps == int(str(alone.value).split("at step ")[1].split()[0]) - 1
    summary = json.loads((tmp_path / "wild" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["error"] == str(alone.value)
    assert results[1].stop_reason == "steps" and results[1].steps == 6
    train(calm, tmp_path / "calm_alone", progress=False)
    assert_same_weights(load_run(tmp_path / "calm").model, load_run(tmp_path / "calm_alone").model, calm.train)


def test_a_member_that_reaches_its_threshold_leaves_and_the_others_go_on(tmp_path):
    first, second = config(**VARIED[0]), config(**VARIED[1])
    plain = train_ensemble([first, second])
    kls = [r.evaluations["eval"].kl for r in plain]
    # A threshold only the better member reaches at the last evaluation before the end (step 3) or earlier.
    at_three = [load_kl_at(first, 3), load_kl_at(second, 3)]
    threshold = sum(at_three) / 2
    better = at_three.index(min(at_three))
    stopping = [c.model_copy(update={"train": c.train.model_copy(update={"stop_at_threshold": True, "kl_threshold": threshold})}) for c in (first, second)]
    results = train_ensemble(stopping, [tmp_path / "a", tmp_path / "b"])
    assert results[better].stop_reason == "threshold" and results[better].steps == 3
    saved = load_checkpoint(load_run(results[better].run_dir).checkpoint)
    assert {float(t) for name, t in saved.optimizer.items() if name.endswith(".step")} == {3.0}
    other = 1 - better
    assert results[other].stop_reason == "steps" and results[other].steps == 6
    assert results[other].evaluations["eval"].kl == pytest.approx(kls[other], rel=1e-6)


def load_kl_at(run_config: RunConfig, step: int) -> float:
    """The eval KL of a lone run at ``step``."""
    short = run_config.model_copy(update={"train": run_config.train.model_copy(update={"steps": step})})
    return train(short, progress=False).evaluations["eval"].kl


@pytest.mark.slow  # starting a worker process imports torch: several seconds on a busy 2-core machine
def test_batches_drawn_in_worker_processes_change_nothing():
    configs = [config(init_seed=index, data_seed=20 + index) for index in range(2)]
    in_thread = train_ensemble(configs)
    in_processes = train_ensemble(configs, data_workers=1)
    for a, b in zip(in_thread, in_processes):
        assert a.evaluations["eval"].kl == b.evaluations["eval"].kl  # the same batches: bit for bit


@pytest.mark.slow  # torch.compile takes tens of seconds on a 2-core CPU
def test_compiled_ensemble_follows_the_same_trajectories(tmp_path):
    one_layer = TINY.model_copy(update={"n_layers": 1})  # half the graph to compile
    configs = [
        RunConfig(model=one_layer, train=TrainConfig(**{**BASE, **VARIED[0], "steps": 3})),
        RunConfig(model=one_layer, train=TrainConfig(**{**BASE, **VARIED[1], "objective": "next_token", "steps": 3})),
    ]
    train_ensemble(configs, [tmp_path / "eager0", tmp_path / "eager1"])
    train_ensemble(configs, [tmp_path / "compiled0", tmp_path / "compiled1"], compile=True)
    for index, run_config in enumerate(configs):
        assert_same_weights(
            load_run(tmp_path / f"compiled{index}").model, load_run(tmp_path / f"eager{index}").model, run_config.train
        )


def test_finite_training_sets_and_held_out_rules_follow_lone_runs(tmp_path):
    finite = {"mode": "finite", "train_size": 16, "held_out_fraction": 0.25}
    configs = [config(**VARIED[0], **finite), config(**{**VARIED[1], "data_seed": 13}, **finite)]
    train_ensemble(configs, [tmp_path / "m0", tmp_path / "m1"])
    for index, run_config in enumerate(configs):
        train(run_config, tmp_path / f"lone{index}", progress=False)
        member, lone = load_run(tmp_path / f"m{index}"), load_run(tmp_path / f"lone{index}")
        assert_same_weights(member.model, lone.model, run_config.train)
        got, want = member.metrics[-1], lone.metrics[-1]
        assert {"train/excess_ce", "in_dist/kl", "out_dist/kl"} <= want.keys() and got.keys() == want.keys()
        for name in ("train/excess_ce", "in_dist/kl", "out_dist/kl", "train/loss"):
            assert got[name] == pytest.approx(want[name], rel=1e-5, abs=1e-6), name
        assert member.summary["held_out_rules"] == lone.summary["held_out_rules"]


@pytest.mark.parametrize("unbatched", [None, 1])
@pytest.mark.parametrize("q_models_dim", [0, 2])
def test_folded_attention_under_vmap_equals_attention_per_model(unbatched, q_models_dim):
    """One fused call with the models folded into the batch: the outputs and gradients of attention model
    by model (also when one input is shared by all models, as vmap passes it unbatched, and when the models'
    dimension of an input is not its first)."""
    from nrecur.train.folded_attention import folded_causal_attention

    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 4, 6, 5, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(3))
    inputs = [q, k, v]
    if unbatched is not None:
        inputs[unbatched] = inputs[unbatched][0].detach().requires_grad_()
    in_dims = [None if index == unbatched else 0 for index in range(3)]
    called = list(inputs)
    if q_models_dim:
        called[0], in_dims[0] = inputs[0].movedim(0, q_models_dim), q_models_dim
    outward = torch.randn(3, 2, 4, 6, 5, generator=generator, dtype=torch.float64)
    folded = torch.vmap(folded_causal_attention, in_dims=tuple(in_dims))(*called)
    grads = torch.autograd.grad(folded, inputs, outward)
    per_model = [[x[m] if x.dim() == 5 else x for x in inputs] for m in range(3)]
    reference = torch.stack([torch.nn.functional.scaled_dot_product_attention(*one, is_causal=True) for one in per_model])
    torch.testing.assert_close(folded, reference, rtol=0, atol=1e-12)
    for grad, expected in zip(grads, torch.autograd.grad(reference, inputs, outward)):
        torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


def test_the_cpu_ensemble_runs_attention_folded():
    from nrecur.model import Attention
    from nrecur.train.folded_attention import folded_causal_attention

    configs = [RunConfig(model=GPTConfig(vocab_size=8, n_ctx=16, d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=32),
                         train=TrainConfig(batch_size=4, steps=2, init_seed=seed, eval_size=16, device="cpu")) for seed in (0, 1)]  # fmt: skip
    ensemble = Ensemble(configs)
    try:
        kernels = [module.kernel for module in ensemble.template.modules() if isinstance(module, Attention)]
        assert len(kernels) == 2 and all(kernel is folded_causal_attention for kernel in kernels)
        assert all(module.kernel is not folded_causal_attention for m in ensemble.members for module in m.model.modules() if isinstance(module, Attention))
    finally:
        ensemble.close()
    compiled = Ensemble(configs, compile=True)  # inductor fuses the composite form, measured faster there
    try:
        assert not any(m.kernel is folded_causal_attention for m in compiled.template.modules() if isinstance(m, Attention))
    finally:
        compiled.close()
