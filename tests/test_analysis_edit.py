"""Editing a belief (SPEC §5): the problems follow their rules, edits equal their exact references, success, hold and
moved are what the definitions say, a model that has learned nothing holds as much with an edit as without, and the
analysis writes its result and redraws it from the JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nrecur import NRecurrence, load_run, train
from nrecur.analysis import ANALYSES, OptionError, compute, read_result, write_result
from nrecur.analysis.edit import CEILING, EditedPredictions, EditOptions, edit_belief, edit_hooks, edit_problems, hold_rate, hits, method_candidates, reads_tokens, score, steering_vectors
from nrecur.analysis.figures.edit import draw
from nrecur.analysis.steering import ProbeDirections
from nrecur.analysis.weight_edit import RankOneEdit, key_second_moment, rank_one_edits, specificity
from nrecur.cli import main
from nrecur.model import GPT, GPTConfig
from nrecur.train import RunConfig, TrainConfig

TASK = NRecurrence(vocab_size=4, periods=(2, 3))
LENGTH, POSITION = 12, 5


@pytest.fixture(scope="module")
def problems():
    return edit_problems(TASK, 3, LENGTH, POSITION, seed=2)


@pytest.fixture(scope="module")
def untrained() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=4, n_ctx=LENGTH, d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=32, init_std=0.4)
    return GPT(config).eval()


def _log_probs(model: GPT, tokens) -> torch.Tensor:
    with torch.no_grad():
        return F.log_softmax(model(torch.as_tensor(tokens)).double(), -1)


def test_problems_splice_a_destination_of_another_target_with_a_donor_of_the_rule(problems):
    assert len(problems.tokens) == 3 * len(TASK.rules())
    assert sorted({(int(n), int(t)) for n, t in zip(problems.period, problems.target)}) == sorted(TASK.rules())
    assert (problems.destination_target != problems.target).all()
    np.testing.assert_array_equal(problems.tokens[:, POSITION + 1 :], problems.donor[:, POSITION + 1 :])
    for row, (n, t) in enumerate(zip(problems.period, problems.target)):
        targets = np.arange(POSITION + 1, -1, -n)  # the donor's target positions up to p + 1
        assert (problems.donor[row, targets[targets >= 0]] == t).all()
        assert (problems.donor[row, POSITION + 1 :: n] == t).all()  # and on after it
    reads = problems.reads
    assert (reads[:, 0] == POSITION).all()
    np.testing.assert_array_equal(reads[:, 1], np.where(POSITION + problems.period < LENGTH, POSITION + problems.period, -1))
    np.testing.assert_allclose(problems.desired, np.asarray(TASK.posterior(problems.donor).predictive))
    for t, tokens in zip(problems.target, problems.random_donor):  # each random donor follows a rule of another target
        assert any(len(set(tokens[phase::n].tolist())) == 1 and tokens[phase] != t for n in TASK.periods for phase in range(n))

def test_the_hold_counts_the_reads_after_p_that_the_tokens_since_p_do_not_reveal(problems):
    """A read counts when it lies after p and the observer of the tokens since p alone (a sequence of its own)
    does not predict t* there; worked out row by row, one observer call per row."""
    counted = problems.counted
    assert not counted[:, 0].any() and counted.any() and (problems.revealed & (problems.reads >= 0))[:, 1:].any()
    for row in range(len(problems.tokens)):
        since = problems.donor[row : row + 1, POSITION + 1 :]
        predictive = np.asarray(TASK.posterior(since).predictive)[0]  # [pos - p - 1, vocab]
        for k, read in enumerate(problems.reads[row]):
            if k == 0 or read < 0:
                assert not counted[row, k]
                continue
            revealed = predictive[read - POSITION - 1].argmax() == problems.target[row]
            assert counted[row, k] == (not revealed), (row, k)


def test_the_hold_rate_of_the_observer_on_the_donor_is_one_and_of_a_constant_model_its_guess(problems):
    """The ideal model reading the donor (the ceiling, for the observer) holds at every counted read; a model that
    always says token 0 holds exactly where t* is 0."""
    observer = torch.as_tensor(problems.desired).clamp_min(1e-30).log()
    assert hold_rate(problems, observer) == 1.0
    constant = torch.full((len(problems.tokens), LENGTH, TASK.vocab_size), -5.0, dtype=torch.float64)
    constant[..., 0] = 0.0
    expected = np.broadcast_to(problems.target[:, None] == 0, problems.counted.shape)[problems.counted].mean()
    assert hold_rate(problems, constant) == pytest.approx(expected)
    np.testing.assert_array_equal(hits(problems, constant)[problems.reads < 0], np.nan)


def test_patching_the_embeddings_of_the_context_is_the_model_on_the_donor(untrained, problems):
    edited = edit_belief(untrained, problems.tokens, problems.period, problems.target, position=POSITION, hook=CEILING.hook, donor=problems.donor)
    torch.testing.assert_close(edited.log_probs, _log_probs(untrained, problems.donor), atol=1e-5, rtol=0)
    torch.testing.assert_close(edited.clean, _log_probs(untrained, problems.tokens), atol=1e-5, rtol=0)


def test_a_context_patch_anywhere_gives_the_donors_predictions_up_to_the_edit(untrained, problems):
    donor = _log_probs(untrained, problems.donor)
    for hook in edit_hooks(untrained):
        edited = edit_belief(untrained, problems.tokens, problems.period, problems.target, position=POSITION, hook=hook, donor=problems.donor)
        torch.testing.assert_close(edited.log_probs[:, : POSITION + 1], donor[:, : POSITION + 1], atol=1e-5, rtol=0, msg=hook)


def test_a_position_patch_of_the_final_residual_stream_changes_that_position_only(untrained, problems):
    hook = edit_hooks(untrained)[-1]
    edited = edit_belief(untrained, problems.tokens, problems.period, problems.target, position=POSITION, span="position", hook=hook, donor=problems.donor)
    clean = _log_probs(untrained, problems.tokens)
    torch.testing.assert_close(edited.log_probs[:, POSITION], _log_probs(untrained, problems.donor)[:, POSITION], atol=1e-5, rtol=0)
    others = [i for i in range(LENGTH) if i != POSITION]
    torch.testing.assert_close(edited.log_probs[:, others], clean[:, others], atol=1e-6, rtol=0)


def test_steering_adds_the_target_and_countdown_directions(untrained, problems):
    rng = np.random.default_rng(0)
    directions = ProbeDirections("blocks.1.hook_resid_pre", rng.normal(size=(4, 16)), rng.normal(size=(2, 3, 16)), 0.5, 0.5)
    vectors = steering_vectors(directions, TASK.periods, problems.period, problems.target, POSITION).numpy()
    row = 0
    n, t = int(problems.period[row]), int(problems.target[row])
    for i in range(POSITION + 1):
        expected = directions.target[t] + directions.countdown[TASK.periods.index(n), (POSITION - i) % n]
        np.testing.assert_allclose(vectors[row, i], expected)
    # α = 0 is no edit; otherwise the hook sees exactly the sum added at positions 0..p.
    kwargs = dict(position=POSITION, method="steer", hook=directions.hook, directions=directions, periods=TASK.periods)
    none = edit_belief(untrained, problems.tokens, problems.period, problems.target, alpha=0.0, **kwargs)
    torch.testing.assert_close(none.log_probs, none.clean)
    edited = edit_belief(untrained, problems.tokens, problems.period, problems.target, alpha=2.0, **kwargs)
    assert not torch.allclose(edited.log_probs[:, POSITION], edited.clean[:, POSITION])
    one = edit_belief(untrained, problems.tokens, problems.period, problems.target, alpha=2.0, span="position", **kwargs)
    torch.testing.assert_close(one.log_probs[:, :POSITION], one.clean[:, :POSITION])  # before p: untouched


def test_the_rank_one_edit_is_a_weight_edit_that_gives_the_donors_prediction_at_the_key(untrained, problems):
    moment = key_second_moment(untrained, TASK.sample(64, LENGTH, 9).tokens)
    edits = rank_one_edits(untrained, problems.tokens, problems.donor, POSITION, moment)
    with untrained.hooks(edits.hooks()):
        hooked = _log_probs(untrained, problems.tokens)
    for row in (0, 5):  # the hooks are the literal weight change, row by row
        torch.testing.assert_close(hooked[row], _log_probs(edits.edited_model(untrained, row), problems.tokens[row : row + 1])[0], atol=1e-5, rtol=0)
    # At the key's position the final residual stream is the donor's, so is the prediction.
    torch.testing.assert_close(hooked[:, POSITION], _log_probs(untrained, problems.donor)[:, POSITION], atol=1e-4, rtol=0)
    edited = edit_belief(untrained, problems.tokens, problems.period, problems.target, position=POSITION, method="rank_one", donor=problems.donor, second_moment=moment)
    torch.testing.assert_close(edited.log_probs, hooked)
    # Specificity: an edit with no change costs nothing; a real one costs something on unrelated sequences.
    reference = TASK.sample(8, LENGTH, 10).tokens
    none = RankOneEdit(edits.layer, torch.zeros_like(edits.delta), edits.direction)
    assert specificity(untrained, none, np.arange(3), reference) == pytest.approx(np.zeros(3), abs=1e-12)
    assert (specificity(untrained, edits, np.arange(3), reference) > 0).all()
    attention_only = GPT(GPTConfig(vocab_size=4, n_ctx=LENGTH, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=0))
    with pytest.raises(ValueError, match="attention-only"):
        key_second_moment(attention_only, problems.tokens)


def test_success_and_moved_follow_their_definitions(problems):
    batch, vocab = len(problems.tokens), TASK.vocab_size
    desired = torch.as_tensor(problems.desired)
    clean = torch.full((batch, LENGTH, vocab), -np.log(vocab), dtype=torch.float64)  # uniform
    edited = desired.clamp_min(1e-12).log()  # exactly O*: moved 1
    edited[0, POSITION] = torch.log(torch.tensor([0.97, 0.01, 0.01, 0.01], dtype=torch.float64))  # row 0: token 0 most likely
    result = score(problems, EditedPredictions(log_probs=edited, clean=clean, position=POSITION))
    assert result.success[0, 0] == float(problems.target[0] == 0)
    assert (result.success[1:, 0] == 1).all()  # O* at p puts its mass on t* (next is a target position)
    np.testing.assert_array_equal(result.success_clean[:, 0], problems.target == 0)  # uniform: argmax is token 0
    np.testing.assert_allclose(result.moved[1:], 1.0, atol=1e-9)
    assert result.hold == 1.0  # the change of row 0 is at p, which the hold never counts
    assert result.hold_clean == pytest.approx(np.broadcast_to(problems.target[:, None] == 0, problems.counted.shape)[problems.counted].mean())
    # moved = 1 - KL(O* ‖ edited) / KL(O* ‖ clean), written out by hand for a mixture half-way to O* and for no edit.
    mixture = (0.5 * desired + 0.5 / vocab).log()
    mixed = score(problems, EditedPredictions(log_probs=mixture, clean=clean, position=POSITION))
    o = desired[:, POSITION:]
    kl = lambda q: (o * (torch.where(o > 0, o.log(), torch.zeros_like(o)) - q)).where(o > 0, torch.zeros_like(o)).sum(-1)  # noqa: E731
    expected = 1 - kl(mixture[:, POSITION:]) / kl(clean[:, POSITION:])
    np.testing.assert_allclose(mixed.moved, expected.numpy(), rtol=1e-9)
    assert ((mixed.moved > 0) & (mixed.moved < 1)).all()  # strictly between: the direction of the KL matters here
    none = score(problems, EditedPredictions(log_probs=clean, clean=clean, position=POSITION))
    np.testing.assert_allclose(none.moved, 0.0, atol=1e-12)
    assert np.isnan(result.success[problems.reads < 0]).all()


def tiny_run(folder, steps: int):
    model = GPTConfig(vocab_size=4, n_ctx=LENGTH, d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=64)
    config = RunConfig(task=TASK, model=model, train=TrainConfig(steps=steps, batch_size=64, eval_every=steps, eval_size=128, device="cpu"))
    train(config, folder, progress=False)
    return load_run(folder)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("edit") / "run", steps=400)


def test_a_model_trained_for_one_step_holds_as_much_with_an_edit_as_without(tmp_path):
    """The headline a model that has learned nothing reaches is its controls': no edit, a random edit and the
    ceiling hold alike (the edits are chosen on other problems than they are scored on)."""
    result = compute(tiny_run(tmp_path / "one", steps=1), "edit", n_sequences=96, alphas=(2.0, 16.0), probe_sequences=128)
    head = result.headline
    assert head["hold_positions"] >= 25
    for control in ("hold_rate_no_edit", "hold_rate_random", "hold_rate_ceiling", "hold_rate_random_init"):
        assert head["hold_rate"] == pytest.approx(head[control], abs=0.1), control
    for method in ("patch", "steer", "rank_one", "subspace"):
        assert head[f"hold_rate/{method}"] == pytest.approx(head["hold_rate_no_edit"], abs=0.1), method


@pytest.mark.slow
def test_the_edit_analysis_on_a_trained_model(trained, tmp_path, capsys):
    """Every kind of edit, its budget and its figures on a trained model; the steering probes and the subspace
    bases fitted on less than the defaults' data and steps (what the checks below need: which edit wins is not
    one of them)."""
    result = compute(trained, "edit", n_sequences=64, seed=1, probe_sequences=256, subspace_steps=40)
    head = result.headline
    assert all(isinstance(v, float) for v in head.values()) and list(head)[:5] == ["hold_rate", "hold_rate_no_edit", "hold_rate_ceiling", "hold_rate_random", "hold_rate_random_init"]
    # The model has learned the rules: reading a context that followed (n*, t*), it holds far more than without.
    assert head["hold_rate_ceiling"] > head["hold_rate_no_edit"] + 0.3
    names = {m.name for m in result.methods}
    assert CEILING.name not in names and {m.method for m in result.methods} == {"patch", "steer", "rank_one", "subspace"}
    assert set(result.best_by_method) == {"patch", "steer", "rank_one", "subspace", "subspace_tokens"} and result.chosen in result.best_by_method.values()
    assert ".hook_resid_" in result.method(result.best_by_method["subspace"]).hook
    assert result.method(result.best_by_method["subspace_tokens"]).hook == "blocks.0.attn.hook_v"
    # The headline's edit is a belief edit: never one that rewrites what the first attention reads of the tokens.
    assert not reads_tokens(result.method(result.chosen).hook) and result.chosen != result.best_by_method["subspace_tokens"]
    subspace = result.method(result.best_by_method["subspace"])
    assert subspace.budget.rank == subspace.rank <= 16 and head["rank/subspace"] == subspace.rank
    assert head["hold_rate"] == result.method(result.chosen).hold_rate and head["hold_rate_random"] == result.method(result.chosen).hold_rate_random
    rank_one = result.method(result.best_by_method["rank_one"])
    assert rank_one.specificity_kl > 0 and head["specificity_kl/rank_one"] == rank_one.specificity_kl and rank_one.budget.rank == 1
    # Every context patch, and any patch of the final residual stream, is the model on the donor at p: its success
    # there is the ceiling's, and labelled automatic; a steer's is not.
    for m in result.methods:
        assert m.budget.hooks == (m.hook,) and m.budget.positions in ("0..p", "p", "every position of every sequence")
        if m.method == "patch" and m.span == "context":
            assert m.success_at_p_automatic and m.success[0] == pytest.approx(result.ceiling.success[0])
        if m.method == "steer":
            assert not m.success_at_p_automatic
    assert np.asarray(result.by_rule).shape == (2, 4) and np.isfinite(np.asarray(result.by_rule)).any()
    paths = write_result(result, tmp_path / "analysis")
    assert {p.suffix for p in paths} == {".json", ".png", ".svg"}
    again = read_result(tmp_path / "analysis" / "edit.json")  # the result again from its file alone, and its figures
    assert again.to_json() == result.to_json() and again.methods[0].budget == result.methods[0].budget
    assert [p.name for p in draw(again, tmp_path / "redrawn")] == [p.name for p in paths[1:]]
    assert ANALYSES["edit"].applies(trained) is None
    capsys.readouterr()
    small = ["--set", "probe_sequences=32", "--set", "subspace_steps=5"]
    assert main(["analyze", str(trained.path), "--what", "edit", "--no-progress", "--sequences", "16", *small]) == 0
    data = json.loads((trained.path / "analysis" / "edit.json").read_text())
    assert data["options"]["n_sequences"] == 16 and data["held_out_problems"] == 16 and "hold_rate" in capsys.readouterr().out
    assert main(["analyze", str(trained.path), "--what", "edit", "--set", "per_rule=4"]) == 2
    assert "edit takes no option per_rule" in capsys.readouterr().err
    assert main(["analyze", str(trained.path), "--what", "edit", "--set", f"position={LENGTH - 1}"]) == 2
    assert "edit option position: must be in [0, 10]" in capsys.readouterr().err


def test_bad_edit_input(untrained, problems):
    with pytest.raises(ValueError, match="edit position must be in"):
        edit_problems(TASK, 2, LENGTH, LENGTH - 1)
    with pytest.raises(ValueError, match="needs donor sequences"):
        edit_belief(untrained, problems.tokens, 2, 1, method="patch")
    with pytest.raises(ValueError, match="unknown hook"):
        edit_belief(untrained, problems.tokens, 2, 1, hook="blocks.9.hook_resid_pre", donor=problems.donor)
    with pytest.raises(ValueError, match="unknown edit method 'rome'; choose one of patch, steer, rank_one"):
        edit_belief(untrained, problems.tokens, 2, 1, method="rome", donor=problems.donor)
    with pytest.raises(ValueError, match="unknown span"):
        edit_belief(untrained, problems.tokens, 2, 1, span="everywhere", donor=problems.donor)
    with pytest.raises(OptionError, match="edit takes no option per_rule; it takes seed, n_sequences"):
        ANALYSES["edit"].make_options({"per_rule": 4})
    with pytest.raises(OptionError, match="alphas"):
        ANALYSES["edit"].make_options({"alphas": (0.0,)})
    assert EditOptions(n_sequences=8).n_sequences == 8
    # Patching the embeddings rewrites tokens: the ceiling, never a method.
    assert all(c.hook != CEILING.hook or c.method != "patch" for c in method_candidates(untrained))


def test_an_edit_before_the_first_attention_counts_as_rewriting_the_tokens():
    for hook in ("hook_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_v", "blocks.0.attn.hook_k"):
        assert reads_tokens(hook), hook
    for hook in ("blocks.0.hook_resid_mid", "blocks.1.hook_resid_pre", "blocks.1.attn.hook_v", "blocks.0.attn.hook_z"):
        assert not reads_tokens(hook), hook
