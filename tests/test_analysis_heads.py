"""Head scores (SPEC §5) on hand-made patterns and on a hand-built model whose heads attend exactly
where a score looks; and the analysis end to end on a trained run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nrecur import NRecurrence, load_run
from nrecur.analysis import ANALYSES, compute, read_result
from nrecur.analysis.figures.heads import offset_ticks
from nrecur.analysis.heads import (
    attention_patterns,
    HeadsResult,
    induction_baseline,
    induction_score,
    induction_tokens,
    period_baseline,
    period_heads,
    period_mask,
    period_score,
    previous_token_baseline,
    previous_token_score,
    score_heads,
)
from nrecur.cli import main
from nrecur.model import GPT, GPTConfig
from nrecur.train import RunConfig, TrainConfig, train


def causal_uniform(length: int) -> np.ndarray:
    """``[query, key]``: uniform attention over the keys ``0..i``."""
    return np.tril(np.ones((length, length))) / np.arange(1, length + 1)[:, None]


def shifted(length: int, shift: int) -> np.ndarray:
    """``[query, key]``: all mass on key ``i - shift`` (on key 0 while ``i < shift``)."""
    pattern = np.zeros((length, length))
    for i in range(length):
        pattern[i, max(i - shift, 0)] = 1.0
    return pattern


def test_scores_of_exact_and_uniform_patterns():
    length, n = 12, 3
    patterns = np.stack([shifted(length, 1), shifted(length, n - 1), causal_uniform(length)])[None]  # [1, head, q, k]
    assert previous_token_score(patterns)[0] == pytest.approx(1.0)
    np.testing.assert_allclose(period_score(patterns, n)[1:], [1.0, period_baseline(length, n)])
    # On r_1..r_k r_1..r_k an induction head attends from i to i - k + 1: a shift of k - 1.
    k = length // 2
    assert induction_score(shifted(length, k - 1)[None, None], k)[0] == pytest.approx(1.0)
    assert induction_score(causal_uniform(length)[None, None], k)[0] == pytest.approx(np.mean([1 / (i + 1) for i in range(k, 2 * k)]))
    # The uniform baselines are what uniform attention scores.
    assert previous_token_score(causal_uniform(length)[None, None])[0] == pytest.approx(previous_token_baseline(length))
    assert induction_score(causal_uniform(length)[None, None], k)[0] == pytest.approx(induction_baseline(k))


def test_induction_tokens_repeat_distinct_tokens_so_an_ideal_induction_head_scores_one():
    tokens, k = induction_tokens(vocab_size=4, length=12, n_sequences=50, seed=0)
    assert k == 4 and tokens.shape == (50, 8)
    assert all(len(set(row[:k])) == k for row in tokens) and (tokens[:, :k] == tokens[:, k:]).all()
    # The ideal head attends from i to every key j >= 1 whose previous token equals token i: here exactly one.
    for row in tokens:
        for i in range(k, 2 * k):
            keys = [j for j in range(1, i + 1) if row[j - 1] == row[i]]
            assert keys == [i - k + 1]


def test_period_mask_marks_the_keys_that_share_the_phase_of_the_next_position():
    mask = period_mask(8, 3)
    assert np.flatnonzero(mask[6]).tolist() == [1, 4]  # predicting position 7 ≡ 1 (mod 3)
    assert not mask[np.triu_indices(8, 1)].any()  # never a future key
    assert period_baseline(8, 3) == pytest.approx(np.mean([mask[i].sum() / (i + 1) for i in range(3, 8)]))


def hand_built(length: int, shifts: list[int | None]) -> GPT:
    """One attention-only layer, no norms; position p is the one-hot e_p and tokens add nothing. Head h's
    query for position p is 1000·e_(p - shifts[h]) against keys e_j, so it attends exactly to ``i - shift``;
    a ``None`` shift gives a zero query: uniform causal attention."""
    n_heads = len(shifts)
    config = GPTConfig(vocab_size=4, n_ctx=length, d_model=length, n_layers=1, n_heads=n_heads, d_head=length, d_mlp=0, norm="none")
    model = GPT(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.pos_embed.weight.copy_(torch.eye(length))
        qkv = model.blocks[0].attn.qkv.weight.view(3, n_heads, length, length)  # [q/k/v, head, d_head, d_model]
        for head, shift in enumerate(shifts):
            qkv[1, head] = torch.eye(length)
            if shift is not None:
                for p in range(shift, length):
                    qkv[0, head, p - shift, p] = 1000.0
    return model.eval()


def test_a_hand_built_model_scores_one_where_its_heads_attend_and_uniform_heads_score_the_baseline():
    length = 12
    task = NRecurrence(vocab_size=4, periods=(2, 3))
    model = hand_built(length, [1, 2, None])  # previous token; i - 2 (the period-3 keys); uniform
    patterns = attention_patterns(model, np.random.default_rng(0).integers(0, 4, size=(4, length)))
    np.testing.assert_allclose(patterns[0, 0, 0, 5], shifted(length, 1)[5], atol=1e-6)
    scores = score_heads(model, task, length, n_sequences=64, seed=0)
    np.testing.assert_allclose(scores.previous_token[0, 0], 1.0, atol=1e-5)
    np.testing.assert_allclose(scores.period[3][0, 1], 1.0, atol=1e-5)
    np.testing.assert_allclose(scores.period[3][0, 2], scores.baseline[3], atol=1e-5)
    np.testing.assert_allclose(scores.period[2][0, 2], scores.baseline[2], atol=1e-5)
    # The previous-token head is also the period-2 head (i - 1 ≡ i + 1 mod 2).
    np.testing.assert_allclose(scores.period[2][0, 0], 1.0, atol=1e-5)
    assert scores.offsets[3].shape == (1, 3, length)
    np.testing.assert_allclose(scores.offsets[3][0, 1, 2], 1.0, atol=1e-5)
    assert period_heads(scores.period, scores.baseline, margin=0.25) == {2: [(0, 0)], 3: [(0, 1)]}  # offset 2 from every query i ≥ 2
    assert scores.baseline[3] == pytest.approx(period_baseline(length, 3))


def test_period_heads_are_each_periods_best_head_and_every_other_head_beyond_the_margin():
    """Hand-built scores ``[layer, head]``: the best head counts whatever its score; others need the margin."""
    scores = {
        2: np.array([[0.30, 0.28, 0.10], [0.05, 0.29, 0.27]]),  # nobody beats 0.25 + 0.25: the best head alone
        3: np.array([[0.90, 0.20, 0.75], [0.44, 0.46, 0.10]]),  # three beat 0.2 + 0.25, best first
        4: np.array([[0.10, 0.10, 0.10], [0.10, 0.12, 0.10]]),  # below the baseline: still its best head
    }
    baseline = {2: 0.25, 3: 0.2, 4: 0.2}
    assert period_heads(scores, baseline, margin=0.25) == {2: [(0, 0)], 3: [(0, 0), (0, 2), (1, 1)], 4: [(1, 1)]}
    assert period_heads(scores, baseline, margin=0.0)[2] == [(0, 0), (1, 1), (0, 1), (1, 2)]  # at or above uniform
    assert period_heads(scores, baseline, margin=1.0) == {2: [(0, 0)], 3: [(0, 0)], 4: [(1, 1)]}


def test_offset_ticks_label_at_most_six_offsets_of_the_period():
    ticks, labelled = offset_ticks(3, 32)
    assert ticks == list(range(2, 32, 3)) and set(labelled) <= set(ticks) and 2 <= len(labelled) <= 6
    assert min(np.diff(labelled)) >= 2 * 3  # never two neighbouring offsets labelled: no colliding labels
    assert offset_ticks(5, 12) == ([4, 9], [4, 9])


def tiny_run(folder, steps: int, log_checkpoints: int = 0):
    task = NRecurrence(vocab_size=4, periods=(2, 3))
    model = GPTConfig(vocab_size=4, n_ctx=12, d_model=32, n_layers=1, n_heads=4, d_head=8, d_mlp=64)
    settings = TrainConfig(steps=steps, batch_size=64, eval_every=steps, eval_size=128, device="cpu", log_checkpoints=log_checkpoints)
    train(RunConfig(task=task, model=model, train=settings), folder, progress=False)
    return folder


def test_a_model_trained_for_one_step_sits_at_its_control_and_its_json_rebuilds_it(tmp_path):
    folder = tiny_run(tmp_path / "one", steps=1, log_checkpoints=1)  # checkpoints at steps 0 and 1
    result = compute(load_run(folder), "heads", n_sequences=64)
    head = result.headline
    for name in ("previous_token", "induction", "period_score", "period_score/n=2", "period_score/n=3", "heads_above_margin"):
        assert head[name] == pytest.approx(head[name.replace("/", "_random_init/", 1) if "/" in name else f"{name}_random_init"], abs=0.02), name
    assert head["heads_above_margin"] == 0  # no head of a near-uniform model beats uniform attention by 0.25
    assert head["period_score_baseline/n=3"] == pytest.approx(period_baseline(12, 3))
    assert result.periods == (2, 3) and all(len(heads) >= 1 for heads in result.period_heads)  # the best head always counts
    # At step 0 the model is its initialization: every score equals its control exactly.
    zero = compute(load_run(folder, step=0), "heads", n_sequences=32)
    assert zero.trained == zero.random_init
    assert HeadsResult.from_json(json.loads(json.dumps(result.to_json()))) == result


@pytest.mark.slow
def test_heads_of_a_trained_model_beat_its_initialization_redraw_from_json_and_run_over_training(tmp_path):
    folder = tmp_path / "run"
    args = ["train", "--out", str(folder), "--vocab-size", "4", "--periods", "2", "3", "--n-ctx", "12", "--steps", "300",
            "--n-layers", "1", "--d-model", "32", "--n-heads", "4", "--d-head", "8", "--d-mlp", "64", "--batch-size", "64",
            "--eval-every", "300", "--eval-size", "128", "--log-checkpoints", "3", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert main(["analyze", str(folder), "--what", "heads", "--checkpoints", "all", "--sequences", "128"]) == 0
    data = json.loads((folder / "analysis" / "heads.json").read_text())
    head = data["headline"]
    # The period-3 head is learned: far above both the initialization's best head and uniform attention
    # (for n=2 a previous-token head passes, and the initialization's best head already sits near uniform).
    assert head["period_score/n=3"] > head["period_score_random_init/n=3"] + 0.2
    assert head["period_score_random_init/n=3"] < head["period_score_baseline/n=3"] + 0.1
    assert head["heads_above_margin"] >= 1 and head["heads_above_margin_random_init"] == 0
    assert len(data["heads"]) == 4 and data["periods"] == [2, 3]
    assert {"heads_scores.png", "heads_offsets.png", "heads_patterns.png"} <= set(data["figures"])
    again = read_result(folder / "analysis" / "heads.json")  # the result again from its file alone, and redrawn
    assert isinstance(again, HeadsResult) and again.headline == pytest.approx(head) and list(again.periods) == data["periods"]
    redrawn = ANALYSES["heads"].draw(again, tmp_path / "redrawn")
    assert sorted(p.name for p in redrawn) == sorted(data["figures"])
    over = json.loads((folder / "analysis" / "heads_over_training.json").read_text())
    steps = load_run(folder).checkpoint_steps
    assert over["steps"] == list(steps) and len(over["series"]["period_score/n=3"]) == len(steps)
    series = over["series"]
    assert series["period_score/n=3"][0] == series["period_score_random_init/n=3"][0]  # step 0 is the initialization
    assert series["period_score/n=3"][-1] > series["period_score_random_init/n=3"][-1] + 0.2
