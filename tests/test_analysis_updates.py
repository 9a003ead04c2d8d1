"""Event-aligned updates and failure modes (analysis/updates.py, analysis/failure.py), checked against the truth."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

import nrecur
from nrecur.analysis import ANALYSES, OptionError, compute, read_result, write_result
from nrecur.analysis.base import residual_hooks
from nrecur.analysis.contract import json_ready
from nrecur.analysis.decoded import aligned_beliefs
from nrecur.analysis.failure import (
    FailureComparison,
    FailureResult,
    compare_failure,
    overreaction,
    perseveration,
    scores_of,
    scoring_task,
    summary,
)
from nrecur.analysis.figures.failure import draw_comparison
from nrecur.analysis.updates import (
    UpdatesResult,
    default_settle,
    default_window,
    discreteness,
    event_updates,
    find_events,
    learning_rate,
    shortest_context,
)
from nrecur.tasks import NRecurrence
from nrecur.tasks.sampler import Batch
from nrecur.train.presets import get_preset

nan = np.nan


def _hand_batch() -> Batch:
    """Three sequences of 12 tokens with known rules, transitions and noise (tokens are irrelevant here)."""
    length = 12
    period = np.zeros((3, length), np.int64)
    target = np.zeros((3, length), np.int64)
    countdown = np.zeros((3, length), np.int64)
    is_fake = np.zeros((3, length), bool)
    transition_after = np.zeros((3, length), bool)

    def rule(row, start, stop, n, t, offset):
        period[row, start:stop] = n
        target[row, start:stop] = t
        countdown[row, start:stop] = (offset - np.arange(stop - start)) % n

    # Row 0: (2, 1) on 0..5, a transition after 5, (3, 2) on 6..11; a noise token too late for a window.
    rule(0, 0, 6, 2, 1, 0)
    rule(0, 6, 12, 3, 2, 1)
    transition_after[0, 5] = True
    is_fake[0, 9] = True
    # Row 1: (2, 0) throughout, noise tokens at 4 (kept) and 10 (no full window).
    rule(1, 0, 12, 2, 0, 0)
    is_fake[1, [4, 10]] = True
    # Row 2: transitions after 3 and 5: the event at 4 has another inside its window; the one at 6
    # follows a rule that held only 2 positions (< settle).
    rule(2, 0, 4, 2, 3, 0)
    rule(2, 4, 6, 3, 1, 0)
    rule(2, 6, 12, 2, 2, 0)
    transition_after[2, [3, 5]] = True
    return Batch(
        tokens=np.zeros((3, length), np.int64),
        period=period,
        target=target,
        countdown=countdown,
        is_target_position=countdown == 0,
        is_fake=is_fake,
        transition_after=transition_after,
    )


def test_event_detection_on_a_hand_made_batch():
    batch = _hand_batch()
    transitions = find_events(batch, "transition", window=4, settle=3)
    assert transitions.sequence.tolist() == [0] and transitions.position.tolist() == [6]
    assert transitions.old_target.tolist() == [1] and transitions.new_target.tolist() == [2]
    assert transitions.period.tolist() == [3]
    assert transitions.horizon.tolist() == [6] and not transitions.cut_by_transition.any()  # (3, 2) holds to the end
    noise = find_events(batch, "noise", window=4, settle=3)
    assert noise.sequence.tolist() == [1] and noise.position.tolist() == [4]
    assert noise.old_target.tolist() == noise.new_target.tolist() == [0]
    # Without the settle requirement the event at row 2, position 6 is kept too.
    loose = find_events(batch, "transition", window=4, settle=0)
    assert sorted(zip(loose.sequence.tolist(), loose.position.tolist())) == [(0, 6), (2, 6)]
    assert noise.horizon.tolist() == [8]  # the noise token's rule holds from 4 to the end
    # A window reaching past the end drops the events near it.
    assert len(find_events(batch, "transition", window=7, settle=0)) == 0


@pytest.mark.parametrize("periods", [(2, 3), (2, 3, 4, 5), (3, 7), (2, 8)])
def test_shortest_context_is_the_first_length_with_room_for_an_event(periods):
    """The closed form against a search over lengths: settle + window <= length first holds there."""
    task = NRecurrence(vocab_size=8, periods=periods)
    room = [n for n in range(2, 200) if default_settle(task) + default_window(task, n) <= n]
    assert shortest_context(task) == room[0]
    assert room == list(range(room[0], 200))  # and at every longer length


def test_aligned_curves_read_target_positions_of_the_new_rule():
    batch = _hand_batch()
    vocab = 4
    probs = np.full((3, 12, vocab), 1 / vocab)
    probs[0, :, 2] = np.linspace(0, 1, 12)  # P(new target 2) grows along row 0
    probs[0, :, :2] = (1 - probs[0, :, 2:3]) / 3
    probs[0, :, 3] = probs[0, :, 0]
    by_kind = event_updates(probs, probs, batch, window=4, settle=3)
    curves = by_kind["transition"].model
    # Row 0 after the event at 6: countdown 1, 0, 2, 1 → the only target position is offset 1 (position 7),
    # predicted at index 6.
    assert np.isnan(curves.p_new[0, [0, 2, 3]]).all()
    assert curves.p_new[0, 1] == probs[0, 6, 2]
    assert curves.p_old[0, 1] == probs[0, 6, 1]


def test_aligned_beliefs_read_the_belief_before_each_position_of_the_window():
    batch = _hand_batch()
    events = find_events(batch, "transition", window=4, settle=3)
    belief = np.random.default_rng(0).dirichlet(np.ones(5), size=(3, 12))  # [batch, pos, value]
    index = np.arange(len(events)) % 5
    aligned = aligned_beliefs(belief, events, index)
    for e, (row, position) in enumerate(zip(events.sequence, events.position)):
        np.testing.assert_array_equal(aligned[e], belief[row, position - 1 : position + 3, index[e]])


def test_learning_rate_and_discreteness_on_hand_made_curves():
    jump = np.array([[nan, 0.1, nan, 0.9, nan, 0.9]])
    ramp = np.array([[0.0, 0.2, 0.4, 0.6, 0.8]])
    never = np.array([[0.1, nan, 0.2, nan, 0.3]])
    flat = np.array([[0.6, 0.62, 0.61]])
    assert learning_rate(jump).tolist() == [3.0]
    assert discreteness(jump).tolist() == [1.0]
    assert learning_rate(ramp).tolist() == [3.0]
    assert discreteness(ramp)[0] == pytest.approx(0.25)
    assert np.isnan(learning_rate(never)).all()
    assert discreteness(never)[0] == pytest.approx(0.5)
    assert learning_rate(flat).tolist() == [0.0]
    assert np.isnan(discreteness(flat)).all()  # total change below min_change: nothing to measure
    # A noise event's series starts after the noise token: offset 0 does not count.
    recovery = np.array([[0.9, nan, 0.2, nan, 0.7]])
    assert learning_rate(recovery, first_offset=1).tolist() == [4.0]
    assert discreteness(recovery, first_offset=1).tolist() == [1.0]
    # An overshoot gives more than 1.
    assert discreteness(np.array([[0.0, 0.9, 0.5]]))[0] == pytest.approx(0.9 / 0.5)



def _long_rule_batch() -> Batch:
    """Two sequences of 20 tokens: (2, 1) on 0..7, a transition after 7, then (2, 2) to the end (row 0) or
    only to 13, where a transition to (3, 0) ends it (row 1). Target positions of (2, 2): 8, 10, 12, …"""
    length = 20
    period = np.full((2, length), 2)
    target = np.ones((2, length), np.int64)
    target[:, 8:] = 2
    countdown = np.tile(np.arange(length) % 2, (2, 1))
    transition_after = np.zeros((2, length), bool)
    transition_after[:, 7] = True
    transition_after[1, 13] = True
    period[1, 14:], target[1, 14:], countdown[1, 14:] = 3, 0, (np.arange(6) * 2) % 3
    return Batch(
        tokens=np.zeros((2, length), np.int64), period=period, target=target, countdown=countdown,
        is_target_position=countdown == 0, is_fake=np.zeros((2, length), bool), transition_after=transition_after,
    )  # fmt: skip


def test_a_crossing_after_the_window_is_the_learning_rate_not_never():
    """The window is for drawing: P(new target) first passes 0.5 at position 18 (offset 10, past a 4-token
    window); it counts as 10 while the rule holds there, and as never where a transition ended it first."""
    batch = _long_rule_batch()
    probs = np.full((2, 20, 4), 0.8 / 3)
    probs[:, :, 2] = 0.2  # not the most likely token either
    probs[:, 17] = [0.2 / 3, 0.2 / 3, 0.8, 0.2 / 3]  # index 17 predicts position 18
    result = event_updates(probs, probs, batch, window=4, settle=8)["transition"]  # not row 1's second transition
    assert result.events.position.tolist() == [8, 8]
    assert result.events.horizon.tolist() == [12, 6] and result.events.cut_by_transition.tolist() == [False, True]
    assert (result.model.p_new[~np.isnan(result.model.p_new)] < 0.5).all()  # never within the window
    assert result.model.learning_rate[0] == 10.0 and np.isnan(result.model.learning_rate[1])
    assert perseveration(result.model.top_is_new_to_end).tolist()[0] == 10.0
    assert np.isnan(perseveration(result.model.top_is_new_to_end)[1])
    assert result.model.p_new.shape == (2, 4) and result.model.p_new_to_end.shape == (2, 12)


def test_perseveration_and_overreaction_on_hand_made_values():
    top = np.array([[False, False, True, True], [False] * 4])
    values = perseveration(top)
    assert values[0] == 2 and np.isnan(values[1])
    p_true = np.array([[0.9, nan, 0.4, nan], [0.8, nan, nan, nan]])
    moved = overreaction(p_true)
    assert moved[0] == pytest.approx(0.5) and np.isnan(moved[1])


@pytest.fixture(scope="module")
def stochastic_sample():
    task = NRecurrence(vocab_size=4, periods=(2, 3), p_noise=0.1, p_transition=0.1)
    batch = task.sample(256, 24, seed=3)
    return task, batch, np.asarray(task.posterior(batch.tokens).predictive)


def test_the_observer_as_model_reproduces_the_observer_exactly(stochastic_sample):
    _, batch, observer = stochastic_sample
    by_kind = event_updates(observer.copy(), observer, batch, window=8, settle=3)
    for kind, result in by_kind.items():
        assert len(result.events) > 5, kind
        for name in ("p_old", "p_new", "top_is_new", "p_new_to_end", "top_is_new_to_end", "learning_rate", "discreteness"):
            assert np.array_equal(getattr(result.model, name), getattr(result.observer, name), equal_nan=True), (kind, name)
        assert np.all(result.kl == 0.0)
        assert np.any(~np.isnan(result.observer.learning_rate)) and np.any(~np.isnan(result.observer.discreteness))
    model, ceiling = scores_of(by_kind, "model"), scores_of(by_kind, "observer")
    assert same(model, ceiling) and summary(model, ceiling).overreaction_gap == 0.0
    # The observer does learn the new target after most transitions.
    assert np.mean(np.isnan(by_kind["transition"].observer.learning_rate)) < 0.5


def test_a_uniform_model_never_learns(stochastic_sample):
    _, batch, observer = stochastic_sample
    uniform = np.full_like(observer, 1 / observer.shape[-1])
    result = event_updates(uniform, observer, batch, window=8, settle=3)["transition"]
    assert np.isnan(result.model.learning_rate).all()
    assert (result.kl > 0).any()


def _trained(tmp_path_factory, name: str, steps: int):
    config = get_preset("tiny").stochastic
    config = config.model_copy(update={"train": config.train.model_copy(update={"steps": steps, "eval_every": steps, "checkpoint_every": steps})})
    folder = tmp_path_factory.mktemp("runs") / name
    nrecur.train(config, folder, progress=False)
    return nrecur.load_run(folder)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return _trained(tmp_path_factory, "tiny-stoch", 150)


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory):
    return _trained(tmp_path_factory, "tiny-stoch-1", 1)


class ObserverModel(nn.Module):
    """A 'model' whose logits are the exact observer's log predictive."""

    def __init__(self, task: NRecurrence) -> None:
        super().__init__()
        self.task = task
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the analyses a device

    def forward(self, tokens):
        return torch.as_tensor(np.asarray(self.task.posterior(tokens.cpu().numpy()).predictive)).clamp_min(1e-300).log()


def same(a, b) -> bool:
    """Equal results, NaN equal to NaN (as their JSON says)."""
    return json_ready(a) == json_ready(b)


SMALL = {"n_sequences": 256, "seed": 1, "window": 4, "settle": 2}


@pytest.mark.slow
def test_updates_and_failure_end_to_end(trained_run, tmp_path):
    run = trained_run
    assert ANALYSES["updates"].applies(run) is None and ANALYSES["failure"].applies(run) is None
    result = compute(run, "updates", **SMALL, decode_sequences=128)
    assert isinstance(result, UpdatesResult) and result.step == run.step and result.window == 4
    for kind in ("transition", "noise"):
        for stem in ("learning_rate", "never", "discreteness"):
            assert {f"{stem}/{kind}", f"{stem}_ceiling/{kind}", f"{stem}_random_init/{kind}"} <= set(result.headline)
        assert {f"kl/{kind}", f"kl_random_init/{kind}", f"decoded_error/{kind}", f"decoded_error_random_init/{kind}"} <= set(result.headline)
        assert result.headline[f"n_events/{kind}"] == result.kind(kind).n_events > 0
    # Trained for 150 steps, the model is nearer the observer than its initialization is.
    assert result.headline["kl/transition"] < result.headline["kl_random_init/transition"]
    assert len(result.transition.model.p_new.mean) == 4 and len(result.transition.model.learning_rate) == result.transition.n_events
    # The beliefs decoded by probes sit beside the observer's marginals, from the model and from its initialization.
    decoded = result.transition.decoded
    assert len(decoded.observer.period_new.mean) == 4 and decoded.observer.error_target_new == 0.0
    assert 0 < result.headline["decoded_r2/target"] <= 1 and set(result.decoders) == set(result.decoders_random_init) == {"period", "target"}
    assert result.decoders["target"].hook in [*residual_hooks(run.model), "concat"]

    written = write_result(result, tmp_path / "analysis", step=run.step)
    names = {path.name for path in written}
    assert {"updates.json", "updates_curves.png", "updates_curves.svg", "updates_histograms.png", "updates_decoded.png"} <= names
    data = json.loads((tmp_path / "analysis" / "updates.json").read_text())
    assert data["headline"]["n_events/transition"] == result.headline["n_events/transition"]
    assert data["options"]["decode_sequences"] == 128 and data["transition"]["model"]["learning_rate"]
    again = read_result(tmp_path / "analysis" / "updates.json")  # the JSON alone gives the result back, and its figures
    assert again.transition.events == result.transition.events and again.decoders == result.decoders
    np.testing.assert_array_equal(again.transition.model.learning_rate, result.transition.model.learning_rate)
    assert {p.name for p in ANALYSES["updates"].draw(again, tmp_path / "redrawn")} == names - {"updates.json"}

    # The same model as if it had been trained on the deterministic task: failure scores it on the
    # stochastic version; updates refuses it with one line.
    deterministic = run.task.model_copy(update={"p_noise": 0.0, "p_transition": 0.0})
    det_run = dataclasses.replace(run, config=run.config.model_copy(update={"task": deterministic}))
    reason = ANALYSES["updates"].applies(det_run)
    assert reason and "deterministic" in reason and "\n" not in reason
    with pytest.raises(ValueError, match="deterministic"):
        ANALYSES["updates"].compute(det_run, ANALYSES["updates"].make_options({}))
    assert not scoring_task(deterministic).is_deterministic
    scored = compute(det_run, "failure", **SMALL)
    assert isinstance(scored, FailureResult) and scored.scoring_task == scoring_task(deterministic)
    for stem in ("perseveration", "perseveration_never", "overreaction"):
        assert {stem, f"{stem}_ceiling", f"{stem}_random_init"} <= set(scored.headline)
    assert {"overreaction_gap", "overreaction_gap_random_init", "kl/noise", "kl_random_init/noise"} <= set(scored.headline)
    written = write_result(scored, tmp_path / "analysis", step=run.step)
    assert {"failure.json", "failure.png", "failure.svg"} <= {path.name for path in written}
    again = read_result(tmp_path / "analysis" / "failure.json")
    assert same(again.model, scored.model) and again.scoring_task == scored.scoring_task and again.options == scored.options
    assert ANALYSES["failure"].draw(again, tmp_path / "redrawn-failure")

    # Side by side on the same events: the same model under two names scores the same, and the observer once.
    both = compare_failure({"a": run, "b": det_run}, **SMALL)
    assert both.headline["perseveration/a"] == both.headline["perseveration/b"] == scored.headline["perseveration"]
    assert both.headline["perseveration_random_init/a"] == scored.headline["perseveration_random_init"]
    assert both.headline["overreaction_ceiling"] == scored.headline["overreaction_ceiling"]
    assert same(FailureComparison.from_json(json.loads(json.dumps(both.to_json()))).models, both.models)
    # The figures it draws read typed fields: each run's summary is its headline's figures, and the model's differ
    # from its initialization's (so a bar drawn from the wrong one would show).
    for name in ("a", "b"):
        assert both.summaries[name].perseveration_never == both.headline[f"perseveration_never/{name}"]
        assert both.summaries_random_init[name].overreaction_gap == both.headline[f"overreaction_gap_random_init/{name}"]
        assert both.summaries[name].named(run=name) == {k: v for k, v in both.headline.items() if k.endswith(f"/{name}") and "_random_init" not in k}
    assert both.summaries["a"] != both.summaries_random_init["a"]
    assert both.summary_ceiling.perseveration_never == both.headline["perseveration_never_ceiling"] == scored.headline["perseveration_never_ceiling"]
    listed = compare_failure([run], **SMALL)  # a list: runs named by their folders
    assert listed.headline[f"perseveration/{run.path.name}"] == scored.headline["perseveration"]
    assert {p.name for p in draw_comparison(listed, str(tmp_path / "as-str"))} == {"failure_comparison.png", "failure_comparison.svg"}
    with pytest.raises(OptionError, match="takes no option windw"):
        compare_failure([run], windw=3)


def test_the_observer_as_the_model_sits_at_the_ceiling(trained_run):
    """With the exact observer standing in for the model, every figure equals its ceiling (SPEC §5)."""
    run = dataclasses.replace(trained_run, model=ObserverModel(trained_run.task))
    result = compute(run, "updates", **SMALL, decode=False)
    assert not result.decoders and result.transition.decoded is None
    for kind in ("transition", "noise"):
        model, observer = result.kind(kind).model, result.kind(kind).observer  # equal up to the float64 log-softmax
        for name in ("p_old", "p_new"):
            np.testing.assert_allclose(getattr(model, name).mean, getattr(observer, name).mean, rtol=1e-12)
        assert same(model.learning_rate, observer.learning_rate)
        np.testing.assert_allclose(model.discreteness, observer.discreteness, rtol=1e-9)
        assert np.isfinite(observer.learning_rate).any()
        for stem in ("learning_rate", "never", "discreteness"):
            assert result.headline[f"{stem}/{kind}"] == pytest.approx(result.headline[f"{stem}_ceiling/{kind}"], rel=1e-9, nan_ok=True)
        assert result.headline[f"kl/{kind}"] == pytest.approx(0.0, abs=1e-9)
    scored = compute(run, "failure", **SMALL)
    for stem in ("perseveration", "perseveration_never", "overreaction"):
        assert scored.headline[stem] == scored.headline[f"{stem}_ceiling"]
    assert scored.headline["overreaction_gap"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow
def test_a_one_step_model_sits_at_its_initialization(one_step_run, trained_run):
    """Trained for one step, the model learns no rule: its figures are its initialization's, not the observer's."""
    result = compute(one_step_run, "updates", **SMALL, decode_sequences=128)
    for kind in ("transition", "noise"):
        head = result.headline
        assert head[f"never/{kind}"] > 0.9 and abs(head[f"never/{kind}"] - head[f"never_random_init/{kind}"]) < 0.05
        assert head[f"never_ceiling/{kind}"] < head[f"never/{kind}"] - 0.2  # the observer does follow the new rule
        assert head[f"kl/{kind}"] == pytest.approx(head[f"kl_random_init/{kind}"], rel=0.05)
        assert head[f"decoded_error/{kind}"] == pytest.approx(head[f"decoded_error_random_init/{kind}"], abs=0.05)
    # The trained model's figures move away from the control.
    trained = compute(trained_run, "updates", **SMALL, decode=False)
    assert trained.headline["kl/transition"] < 0.8 * trained.headline["kl_random_init/transition"]
    scored = compute(one_step_run, "failure", **SMALL)
    assert scored.headline["perseveration_never"] == pytest.approx(scored.headline["perseveration_never_random_init"], abs=0.05)
    assert scored.headline["overreaction_gap"] == pytest.approx(scored.headline["overreaction_gap_random_init"], abs=0.05)
    assert scored.headline["overreaction"] == pytest.approx(scored.headline["overreaction_random_init"], abs=0.05)


@pytest.mark.slow
def test_updates_fits_its_decoding_mlp_probes_on_at_most_mlp_rows_positions(trained_run, monkeypatch):
    from nrecur.analysis.probes import MLPProbe

    rows = []
    fit = MLPProbe.fit.__func__

    def recording(cls, x, y, *args, **kwargs):
        rows.append(len(x))
        return fit(cls, x, y, *args, **kwargs)

    monkeypatch.setattr(MLPProbe, "fit", classmethod(recording))
    result = compute(trained_run, "updates", n_sequences=64, seed=1, window=4, settle=2, decode_sequences=64, mlp_rows=100)
    assert rows == [100] * 4  # period and target, on the model and on its initialization: 100 of 64 × 0.64 × length positions
    assert result.options.mlp_rows == 100 and result.options.decode_sequences == 64


def test_an_option_updates_does_not_take_is_one_line(trained_run):
    with pytest.raises(OptionError, match="updates takes no option show_progress; it takes seed, n_sequences"):
        compute(trained_run, "updates", show_progress=False)
    with pytest.raises(OptionError, match="window"):
        compute(trained_run, "updates", window=0)
