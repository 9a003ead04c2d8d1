"""Activation patching and steering (SPEC §5): exact identities of patching, batched against one forward per cell."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nrecur import NRecurrence, load_run, train
from nrecur.analysis import ANALYSES, compute, read_result, write_result
from nrecur.analysis.patching import moved_toward, patch_cell, patch_positions, sample_pairs, scan, site_hooks
from nrecur.analysis.steering import swap_target
from nrecur.model import GPT, GPTConfig
from nrecur.train import RunConfig, TrainConfig

TASK = NRecurrence(vocab_size=4, periods=(2, 3))


@pytest.fixture(scope="module")
def untrained() -> GPT:
    """A random model with large weights, so that every site changes the prediction."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=4, n_ctx=10, d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=32, init_std=0.4)
    return GPT(config).eval()


@pytest.fixture(scope="module")
def pairs():
    return sample_pairs(TASK, 12, 10, seed=3)


def _log_probs(model, tokens) -> torch.Tensor:
    with torch.no_grad():
        return F.log_softmax(model(torch.as_tensor(tokens))[:, -1].double(), -1)


def test_pairs_follow_one_rule_each_and_differ_in_target(pairs):
    for batch in (pairs.destination, pairs.source):
        assert (batch.target == batch.target[:, :1]).all() and (batch.period == batch.period[:, :1]).all()
        assert not batch.is_fake.any() and not batch.transition_after.any()
    assert (pairs.destination.target[:, 0] != pairs.source.target[:, 0]).all()
    np.testing.assert_array_equal(pairs.period_differs, pairs.destination.period[:, 0] != pairs.source.period[:, 0])
    np.testing.assert_allclose(pairs.observer_source.sum(-1), 1.0)


def test_patching_the_clean_activations_changes_nothing(untrained, pairs):
    tokens = pairs.destination.tokens
    clean = _log_probs(untrained, tokens)
    for hook in [h for hooks in site_hooks(untrained).values() for h in hooks] + ["hook_embed", "ln_final.hook_normalized"]:
        patched = patch_positions(untrained, tokens, tokens, hook)
        expanded = clean[:, None, None] if patched.dim() == 4 else clean[:, None]
        torch.testing.assert_close(patched, expanded.expand_as(patched), atol=1e-5, rtol=0, msg=hook)  # float32 rounding
        target = torch.as_tensor(pairs.observer_source)
        assert moved_toward(target, clean, patched).abs().max() < 1e-5, hook


def test_patching_the_final_residual_stream_reproduces_the_source(untrained, pairs):
    destination, source = pairs.destination.tokens, pairs.source.tokens
    clean, wanted = _log_probs(untrained, destination), _log_probs(untrained, source)
    patched = patch_positions(untrained, destination, source, "blocks.1.hook_resid_post")  # [batch, pos, vocab]
    torch.testing.assert_close(patched[:, -1], wanted, atol=1e-5, rtol=0)
    moved = moved_toward(wanted.exp(), clean, patched)  # toward the model's own prediction for the source
    torch.testing.assert_close(moved[:, -1], torch.ones(len(moved), dtype=moved.dtype), atol=1e-5, rtol=0)
    assert moved[:, :-1].abs().max() < 1e-6  # the last block's output at earlier positions reaches nothing
    # Every position of the residual stream entering the last block carries the whole source: the same.
    every = untrained.run_with_cache(torch.as_tensor(source), names_filter="blocks.1.hook_resid_pre").cache["blocks.1.hook_resid_pre"]
    with untrained.hooks([("blocks.1.hook_resid_pre", lambda act, hook: every)]), torch.no_grad():
        torch.testing.assert_close(F.log_softmax(untrained(torch.as_tensor(destination))[:, -1].double(), -1), wanted, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "hook, head",
    [
        ("blocks.0.hook_resid_pre", None),
        ("blocks.0.hook_attn_out", None),
        ("blocks.1.hook_resid_pre", None),
        ("blocks.1.hook_mlp_out", None),  # after the last attention: only the last position is run
        ("blocks.0.attn.hook_z", 1),
        ("blocks.1.attn.hook_z", 0),
        ("blocks.0.attn.hook_k", 1),
        ("hook_embed", None),  # runs from the tokens
        ("ln_final.hook_normalized", None),
    ],
)
def test_batched_patching_equals_one_forward_per_cell(untrained, pairs, hook, head):
    destination, source = pairs.destination.tokens, pairs.source.tokens
    batched = patch_positions(untrained, destination, source, hook, max_rows=7)  # several chunks, one split pair
    for position in (0, 4, 9):
        cell = patch_cell(untrained, destination, source, hook, position, head)
        got = batched[:, position] if head is None else batched[:, position, head]
        torch.testing.assert_close(got, cell, atol=1e-5, rtol=0, msg=f"{hook} @ {position}")
    clean = _log_probs(untrained, destination)
    assert (batched - (clean[:, None] if head is None else clean[:, None, None])).abs().max() > 1e-3  # the patch does something


def test_an_unknown_hook_names_the_closest_ones(untrained, pairs):
    tokens = pairs.destination.tokens
    with pytest.raises(KeyError, match=r"did you mean blocks\.0\.hook_attn_out"):
        patch_positions(untrained, tokens, tokens, "blocks.0.hook_atn_out")
    with pytest.raises(KeyError, match="no position axis"):
        patch_positions(untrained, tokens, tokens, "blocks.0.attn.hook_pattern")
    with pytest.raises(KeyError, match="did you mean"):
        patch_cell(untrained, tokens, tokens, "blocks.1.hook_mlp_ot", 0)


def test_swapping_target_gives_a_sequence_of_the_new_rule(pairs):
    batch = pairs.destination
    new = (batch.target[:, 0] + 1) % TASK.vocab_size
    swapped = swap_target(batch.tokens, batch.target[:, 0], new)
    at_targets = np.where(batch.is_target_position, swapped, -1)
    assert ((at_targets == new[:, None]) | ~batch.is_target_position).all()
    assert not ((swapped == new[:, None]) & ~batch.is_target_position).any()
    np.testing.assert_array_equal(swap_target(swapped, new, batch.target[:, 0]), batch.tokens)


def _train(folder, steps, log_checkpoints=0):
    model = GPTConfig(vocab_size=4, n_ctx=10, d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=64)
    settings = TrainConfig(steps=steps, batch_size=64, eval_every=steps, eval_size=128, device="cpu", log_checkpoints=log_checkpoints)
    train(RunConfig(task=TASK, model=model, train=settings), folder, progress=False)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return load_run(_train(tmp_path_factory.mktemp("patching") / "run", steps=600))


@pytest.mark.slow
def test_patching_a_trained_model_beside_its_initialization(trained, tmp_path):
    result = compute(trained, "patching", n_sequences=48, seed=1)
    head = result.headline
    assert all(isinstance(v, float) for v in head.values())
    # The final residual stream at the last position is the model's prediction for the source: a model that
    # has learned something is closer to the source's observer there than its prediction for the destination;
    # its initialization, whose prediction hardly depends on the rule, is not.
    final = np.asarray(result.trained.moved["resid"][-1])
    assert final[-1] > 0.5 and np.abs(final[:-1]).max() < 1e-6
    assert head["moved_best"] > head["moved_best_random_init"] + 0.3
    assert head["moved_best/resid"] > head["moved_best_random_init/resid"] + 0.3
    assert np.shape(result.trained.moved["head"]) == (2, 4, 10) and np.shape(result.random_init.moved["attn_out"]) == (2, 10)
    assert head["moved_best"] == pytest.approx(max(head[f"moved_best/{k}"] for k in result.trained.moved))
    assert result.trained.best.name.startswith(result.trained.best.hook)
    assert np.asarray(result.steering.moved)[:, 0] == pytest.approx(0.0, abs=1e-9)  # α = 0 is no edit
    assert {"steer_moved_best_random", "steer_moved_best_random_init", "steer_success_best_no_edit"} <= set(head)
    paths = write_result(result, tmp_path / "analysis")
    data = json.loads((tmp_path / "analysis" / "patching.json").read_text())
    assert data["trained"]["best"]["name"] == result.trained.best.name and data["headline"]["moved_best"] == pytest.approx(head["moved_best"])
    assert [p.name for p in paths] == ["patching.json"] + [f"patching_{f}.{s}" for f in ("sites", "heads", "steering") for s in ("png", "svg")]
    again = read_result(paths[0])
    assert again.trained.best == result.trained.best and again.steering.hooks == result.steering.hooks
    assert [p.name for p in ANALYSES["patching"].draw(again, tmp_path / "again")] == [p.name for p in paths[1:]]
    assert ANALYSES["patching"].applies(trained) is None


def test_a_model_trained_for_one_step_sits_at_its_control(tmp_path):
    """One step teaches no rule: patching moves the prediction as much as on the initialization."""
    run = load_run(_train(tmp_path / "one", steps=1))
    result = compute(run, "patching", n_sequences=24, steer=False)
    head = result.headline
    for name in ("moved_best", "moved_best/resid", "moved_best/head", "moved_best_before_last"):
        base, _, kind = name.partition("/")
        assert head[name] == pytest.approx(head[f"{base}_random_init" + (f"/{kind}" if kind else "")], abs=0.05), name
    assert head["kl_clean"] == pytest.approx(head["kl_clean_random_init"], rel=0.05)
    assert result.steering is None and not any(name.startswith("steer_") for name in head)


def test_at_step_zero_every_figure_equals_its_control(tmp_path):
    run = load_run(_train(tmp_path / "zero", steps=1, log_checkpoints=1), step=0)
    result = compute(run, "patching", n_sequences=8, steer=False)
    assert result.trained == result.random_init


def test_the_scan_is_the_batched_patching_averaged_over_pairs(untrained, pairs):
    found = scan(untrained, pairs, max_rows=64)
    target = torch.as_tensor(pairs.observer_source)
    clean = _log_probs(untrained, pairs.destination.tokens)
    for kind, hooks in site_hooks(untrained).items():
        for row, hook in enumerate(hooks):
            moved = moved_toward(target, clean, patch_positions(untrained, pairs.destination.tokens, pairs.source.tokens, hook)).mean(0)
            expected = moved.T if kind == "head" else moved  # heads: [head, pos]
            np.testing.assert_allclose(found.moved[kind][row], expected.numpy(), atol=1e-6, err_msg=hook)
    assert found.best.moved == pytest.approx(max(cell.moved for cell in found.best_by_kind.values()))
    assert found.best_before_last.position < pairs.destination.tokens.shape[1] - 1


@pytest.mark.parametrize("n_layers, d_mlp, norm", [(1, 0, "rmsnorm"), (3, 16, "layernorm")])
def test_batched_patching_equals_one_forward_per_cell_on_other_shapes(pairs, n_layers, d_mlp, norm):
    torch.manual_seed(1)
    config = GPTConfig(vocab_size=4, n_ctx=10, d_model=12, n_layers=n_layers, n_heads=3, d_head=4, d_mlp=d_mlp, norm=norm, init_std=0.4)
    model = GPT(config).eval()
    destination, source = pairs.destination.tokens, pairs.source.tokens
    for hooks in site_hooks(model).values():
        for hook in hooks:
            batched = patch_positions(model, destination, source, hook, max_rows=50)
            for position in (2, 9):
                for head in (None,) if batched.dim() == 3 else (0, 2):
                    got = batched[:, position] if head is None else batched[:, position, head]
                    torch.testing.assert_close(got, patch_cell(model, destination, source, hook, position, head), atol=1e-5, rtol=0)
