"""Progress measures over checkpoints: mean ablation through the hooks, and the analysis end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nrecur import NRecurrence, load_run, train
from nrecur.analysis import ANALYSES, compute, read_result
from nrecur.analysis.progress import ProgressResult, ablation_hooks, cross_entropy
from nrecur.cli import main
from nrecur.model import GPT, GPTConfig
from nrecur.train import RunConfig, TrainConfig

TINY_RUN = ["--vocab-size", "4", "--periods", "2", "3", "--n-ctx", "12", "--n-layers", "1", "--d-model", "32", "--n-heads", "4",
            "--d-head", "8", "--d-mlp", "64", "--batch-size", "64", "--eval-size", "128", "--no-progress"]  # fmt: skip


def test_mean_ablation_replaces_exactly_the_chosen_heads_by_their_mean():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=4, n_ctx=8, d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=32)).eval()
    tokens = np.random.default_rng(0).integers(0, 4, size=(32, 8))
    names = ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]
    _, clean = model.run_with_cache(torch.as_tensor(tokens), names_filter=lambda n: n in names)
    with model.hooks(ablation_hooks(model, tokens, [(0, 1)])):
        _, ablated = model.run_with_cache(torch.as_tensor(tokens), names_filter=lambda n: n in names)
    z0, z0_clean = ablated[names[0]], clean[names[0]]  # [batch, pos, head, d_head]
    torch.testing.assert_close(z0[:, :, 1], z0_clean[:, :, 1].mean(0).expand_as(z0[:, :, 1]))
    torch.testing.assert_close(z0[:, :, 0], z0_clean[:, :, 0])
    assert not torch.allclose(ablated[names[1]], clean[names[1]])  # layer 1 sees the ablated layer 0
    assert ablation_hooks(model, tokens, []) == []
    clean_ce = cross_entropy(model, tokens)
    with model.hooks(ablation_hooks(model, tokens, [(0, 0), (0, 1), (1, 0), (1, 1)])):
        assert cross_entropy(model, tokens) != clean_ce  # every head mean-ablated: a different model


def tiny_run(folder, steps: int, log_checkpoints: int):
    task = NRecurrence(vocab_size=4, periods=(2, 3))
    model = GPTConfig(vocab_size=4, n_ctx=12, d_model=32, n_layers=1, n_heads=4, d_head=8, d_mlp=64)
    settings = TrainConfig(steps=steps, batch_size=64, eval_every=steps, eval_size=128, device="cpu", log_checkpoints=log_checkpoints)
    train(RunConfig(task=task, model=model, train=settings), folder, progress=False)
    return folder


def test_a_model_trained_for_one_step_sits_at_its_control_and_step_zero_is_it(tmp_path):
    """Checkpoints at steps 0 and 1: the headline of the 1-step model is its initialization's, and the measures at
    step 0 are the control's exactly (the same model, the same heads ablated)."""
    run = load_run(tiny_run(tmp_path / "one", steps=1, log_checkpoints=1))
    assert run.checkpoint_steps == [0, 1]
    result = compute(run, "progress", n_sequences=64, head_sequences=32)
    head = result.headline
    for name in ("loss", "loss_restricted", "loss_excluded"):
        assert head[name] == pytest.approx(head[f"{name}_random_init"], abs=0.02), name
        assert head[name] > head["loss_bayes"] + 0.1  # far from the observer: it learned nothing
    # What the period heads carry: nothing yet, the ablations cost (almost) nothing beside the full model.
    assert head["loss_excluded"] - head["loss_excluded_unablated"] == pytest.approx(head["loss_excluded_random_init"] - head["loss_random_init"], abs=0.02)
    for quantity in ("period", "target"):
        assert head[f"probe_r2/{quantity}"] == pytest.approx(head[f"probe_r2_random_init/{quantity}"], abs=0.05)
    assert result.steps == [0, 1] and result.checkpoints[0] == result.random_init
    assert 1 <= len(result.period_heads) <= 2  # each period's best head, nobody beyond the margin
    again = ProgressResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result


def test_progress_at_an_earlier_checkpoint_follows_the_checkpoints_up_to_it_and_says_that_step(tmp_path):
    folder = tiny_run(tmp_path / "three", steps=3, log_checkpoints=2)
    steps = load_run(folder).checkpoint_steps
    assert len(steps) == 3
    earlier = load_run(folder, step=steps[1])
    result = compute(earlier, "progress", n_sequences=64, head_sequences=32)
    assert result.step == steps[1] and result.steps == steps[:2] and result.headline["checkpoints"] == 2
    assert result.checkpoints[-1].loss == pytest.approx(cross_entropy(earlier.model, earlier.task.sample(64, earlier.config.length, 0).tokens), abs=1e-6)
    assert "one checkpoint up to step 0" in ANALYSES["progress"].applies(load_run(folder, step=steps[0]))


@pytest.mark.slow
def test_progress_end_to_end_redrawn_from_its_json_and_refused_without_checkpoints_to_follow(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "run"
    finite = ["--mode", "finite", "--train-size", "256"]  # the grokking setting: a fixed training set
    assert main(["train", "--out", str(folder), *TINY_RUN, *finite, "--steps", "300", "--eval-every", "100", "--log-checkpoints", "3"]) == 0
    monkeypatch.setattr("nrecur.analysis.figures.heads.draw", lambda result, folder: [])  # heads are read for their JSON
    assert main(["analyze", str(folder), "--what", "heads", "progress", "--sequences", "128"]) == 0
    data = json.loads((folder / "analysis" / "progress.json").read_text())
    heads = json.loads((folder / "analysis" / "heads.json").read_text())
    steps = load_run(folder).checkpoint_steps
    assert [m["step"] for m in data["checkpoints"]] == steps
    assert sorted(data["period_heads"]) == sorted({h for found in heads["period_heads"] for h in found})  # one rule
    assert data["periods"] == [2, 3] and all(len(m["period_score"]) == 2 for m in data["checkpoints"])
    head = data["headline"]
    assert head["loss"] < head["loss_random_init"] - 0.1  # it learned something
    assert head["loss"] >= head["loss_bayes"] - 0.05  # nobody beats the observer (up to sampling)
    # The period heads carry what it learned: ablating them costs more than it did at initialization.
    assert head["loss_excluded"] - head["loss_excluded_unablated"] > head["loss_excluded_random_init"] - head["loss_random_init"] + 0.05
    assert {"eval/kl", "train/loss", "train/model_ce"} <= set(data["logged"])
    # The decayed norm, counted by name: every weight but the LayerNorm scales and the biases.
    final = load_run(folder).model
    undecayed = (".ln", "ln_", ".bias")
    decayed = sum(float(p.detach().double().pow(2).sum()) for name, p in final.named_parameters() if not any(part in name for part in undecayed))
    measures = data["checkpoints"]
    assert measures[-1]["decayed_norm_sq"] == pytest.approx(decayed, rel=1e-9)
    assert all(0 < m["decayed_norm_sq"] < m["weight_norm_sq"] for m in measures)
    assert data["logged"]["decayed_norm_sq"]["value"][-1] == pytest.approx(decayed, rel=1e-6)  # as training logged it
    assert "progress.png" in data["figures"]
    again = read_result(folder / "analysis" / "progress.json")
    assert isinstance(again, ProgressResult) and again.headline == pytest.approx(head) and again.steps == steps
    redrawn = ANALYSES["progress"].draw(again, tmp_path / "redrawn")
    assert sorted(p.name for p in redrawn) == sorted(data["figures"])

    single = tmp_path / "single"
    assert main(["train", "--out", str(single), *TINY_RUN, "--steps", "5", "--eval-every", "5"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(single), "--what", "progress"]) == 2
    err = capsys.readouterr().err
    assert "one checkpoint" in err and "--log-checkpoints" in err and err.count("\n") == 1
    assert not (single / "analysis").exists()


def test_ablating_a_hand_built_period_head_costs_loss_on_its_period_and_the_restricted_model_keeps_it():
    """d_model = positions + tokens, one-hot. Head 0 attends exactly to i - 2 and copies that token to the
    output: on period-3 sequences it predicts the target at target positions. Head 1 writes nothing."""
    from nrecur import NRecurrence

    length, vocab = 12, 4
    d = length + vocab
    config = GPTConfig(vocab_size=vocab, n_ctx=length, d_model=d, n_layers=1, n_heads=2, d_head=d, d_mlp=0, norm="none")
    model = GPT(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.pos_embed.weight[:, :length] = torch.eye(length)
        model.embed.weight[:, length:] = torch.eye(vocab)
        qkv = model.blocks[0].attn.qkv.weight.view(3, 2, d, d)  # [q/k/v, head, d_head, d_model]
        for p in range(2, length):
            qkv[0, 0, p - 2, p] = 1000.0  # query of position p looks for key position p - 2
        qkv[1, 0] = torch.eye(d)
        qkv[2, 0, length:, length:] = torch.eye(vocab)  # value: the key's token
        model.blocks[0].attn.out.weight.view(d, 2, d)[length:, 0, length:] = torch.eye(vocab)
        model.unembed.weight[:, length:] = 5 * torch.eye(vocab)
    model.eval()
    task = NRecurrence(vocab_size=vocab, periods=(3,))
    tokens = task.sample(256, length, seed=0).tokens
    clean = cross_entropy(model, tokens)
    with model.hooks(ablation_hooks(model, tokens, [(0, 1)])):  # restricted to head 0
        assert cross_entropy(model, tokens) == pytest.approx(clean, abs=1e-6)
    with model.hooks(ablation_hooks(model, tokens, [(0, 0)])):  # excluded: head 0 mean-ablated
        assert cross_entropy(model, tokens) > clean + 0.1


@pytest.mark.slow
def test_progress_sees_the_interventions_where_they_were_active_and_runs_side_by_side(tmp_path, capsys, monkeypatch):
    from nrecur.analysis.figures.progress import draw_side_by_side
    from nrecur.train.interventions import intervention_hooks

    folder = tmp_path / "ablated"
    # Head 0.1 ablated for the first 60 steps only: the checkpoints at steps < 60 are measured with it.
    assert main(["train", "--out", str(folder), *TINY_RUN, "--steps", "120", "--eval-every", "60", "--log-checkpoints", "4", "--ablate-head", "0.1@0:60"]) == 0
    run = load_run(folder)
    sample = run.task.sample(64, run.config.length, 0)
    bare = compute(run, "progress", n_sequences=64, head_sequences=32)
    seen = compute(run, "progress", n_sequences=64, head_sequences=32, with_interventions=True)
    assert bare.interventions == seen.interventions == ("ablate 0.1@0:60",)
    assert not bare.measured_with_interventions and seen.measured_with_interventions
    for index, step in enumerate(run.checkpoint_steps):
        model = load_run(folder, step=step).model
        with model.hooks(intervention_hooks(run.config.train.interventions, step)):
            expected = cross_entropy(model, sample.tokens)
        assert seen.checkpoints[index].loss == pytest.approx(expected, abs=1e-6), step
        assert (seen.checkpoints[index].loss == bare.checkpoints[index].loss) == (step >= 60), step
    paths = draw_side_by_side({"bare": bare, "ablated 0.1 until step 60": seen}, tmp_path / "figures")
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size > 0 for p in paths)

    capsys.readouterr()
    # The heads runs below are read for their note and JSON: their figures (drawn and redrawn in
    # test_analysis_heads.py; no intervention on them) are left out. The progress figure, which shades the
    # intervention, is drawn.
    monkeypatch.setattr("nrecur.analysis.figures.heads.draw", lambda result, folder: [])
    assert main(["analyze", str(folder), "--what", "heads", "--sequences", "64", "--no-progress"]) == 0
    assert "trained with interventions (ablate 0.1@0:60)" in capsys.readouterr().out
    assert main(["analyze", str(folder), "--what", "progress", "--sequences", "64", "--with-interventions", "--no-progress"]) == 0
    assert json.loads((folder / "analysis" / "progress.json").read_text())["measured_with_interventions"] is True
    early = [step for step in run.checkpoint_steps if step < 60][-1]  # the ablation was active at this checkpoint
    assert main(["analyze", str(folder), "--what", "heads", "--sequences", "64", "--step", str(early), "--with-interventions", "--no-progress"]) == 0
    written = json.loads((folder / "analysis" / f"step_{early:08d}" / "heads.json").read_text())
    assert written["analyzed_with_interventions"] == ["ablate 0.1@0:60"]
    plain = tmp_path / "plain"
    assert main(["train", "--out", str(plain), *TINY_RUN, "--steps", "5", "--eval-every", "5"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(plain), "--what", "heads", "--with-interventions"]) == 2
    assert "trained without interventions" in capsys.readouterr().err
