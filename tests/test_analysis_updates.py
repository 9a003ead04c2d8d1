"""Event-aligned updates and failure modes (analysis/updates.py, analysis/failure.py), checked against the truth."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import nrecur
from nrecur.analysis.base import ANALYSES, residual_hooks, write_analysis
from nrecur.analysis.failure import compare_failure, failure, failure_from_probs, overreaction, perseveration, scoring_task
from nrecur.analysis.decoded import aligned_beliefs
from nrecur.analysis.probes import MLP_ROWS
from nrecur.analysis.updates import (
    default_settle,
    default_window,
    discreteness,
    event_updates,
    find_events,
    learning_rate,
    shortest_context,
    updates,
    updates_across_runs,
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
    noise = find_events(batch, "noise", window=4, settle=3)
    assert noise.sequence.tolist() == [1] and noise.position.tolist() == [4]
    assert noise.old_target.tolist() == noise.new_target.tolist() == [0]
    # Without the settle requirement the event at row 2, position 6 is kept too.
    loose = find_events(batch, "transition", window=4, settle=0)
    assert sorted(zip(loose.sequence.tolist(), loose.position.tolist())) == [(0, 6), (2, 6)]
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
        for name in ("p_old", "p_new", "top_is_new", "learning_rate", "discreteness"):
            assert np.array_equal(getattr(result.model, name), getattr(result.observer, name), equal_nan=True), (kind, name)
        assert np.all(result.kl == 0.0)
        assert np.any(~np.isnan(result.observer.learning_rate)) and np.any(~np.isnan(result.observer.discreteness))
    headline, data = failure_from_probs(observer.copy(), observer, batch, window=8, settle=3)
    for name in ("perseveration", "overreaction"):
        assert np.array_equal(data[f"{name}_model"], data[f"{name}_observer"], equal_nan=True)
        assert headline[f"{name}_model"] == headline[f"{name}_observer"]
    # The observer does learn the new target within the window after most transitions.
    assert np.mean(np.isnan(by_kind["transition"].observer.learning_rate)) < 0.5


def test_a_uniform_model_never_learns(stochastic_sample):
    _, batch, observer = stochastic_sample
    uniform = np.full_like(observer, 1 / observer.shape[-1])
    result = event_updates(uniform, observer, batch, window=8, settle=3)["transition"]
    assert np.isnan(result.model.learning_rate).all()
    assert (result.kl > 0).any()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    config = get_preset("tiny").stochastic
    config = config.model_copy(update={"train": config.train.model_copy(update={"steps": 150, "eval_every": 150, "checkpoint_every": 150})})
    folder = tmp_path_factory.mktemp("runs") / "tiny-stoch"
    nrecur.train(config, folder, progress=False)
    return nrecur.load_run(folder)


def test_updates_and_failure_end_to_end(trained_run, tmp_path):
    run = trained_run
    assert ANALYSES["updates"].applies(run) is None and ANALYSES["failure"].applies(run) is None
    result = updates(run, n_sequences=256, seed=1, window=4, settle=2)
    for name in ("learning_rate_model/transition", "learning_rate_observer/transition", "discreteness_model/transition",
                 "discreteness_observer/transition", "learning_rate_model/noise", "discreteness_observer/noise"):  # fmt: skip
        assert name in result.headline
    assert result.headline["n_events/transition"] > 0 and result.headline["n_events/noise"] > 0
    written = write_analysis(result, tmp_path / "analysis")
    names = {path.name for path in written}
    assert {"updates.json", "updates_curves.png", "updates_curves.svg", "updates_histograms.png"} <= names
    data = json.loads((tmp_path / "analysis" / "updates.json").read_text())
    assert data["headline"]["n_events/transition"] == result.headline["n_events/transition"]
    assert len(data["by_kind"]["transition"]["p_new_model"]["mean"]) == 4
    # The beliefs decoded by probes sit beside the observer's marginals around the same events.
    decoded = data["by_kind"]["transition"]["decoded"]
    assert {"target_new_probe", "target_new_observer", "target_old_observer", "period_new_probe"} <= set(decoded)
    assert len(decoded["period_new_observer"]["mean"]) == 4 and "updates_decoded.png" in names
    assert 0 < result.headline["decoded_r2/target"] <= 1 and set(data["options"]["decoders"]) == {"period", "target"}
    assert data["options"]["decoders"]["target"]["hook"] in [*residual_hooks(run.model), "concat"]

    assert data["options"]["decode_sequences"] == 1024 and data["options"]["mlp_rows"] == MLP_ROWS

    # The same model as if it had been trained on the deterministic task: failure scores it on the
    # stochastic version; updates refuses it with one line.
    deterministic = run.task.model_copy(update={"p_noise": 0.0, "p_transition": 0.0})
    det_run = dataclasses.replace(run, config=run.config.model_copy(update={"task": deterministic}))
    reason = ANALYSES["updates"].applies(det_run)
    assert reason and "deterministic" in reason and "\n" not in reason
    with pytest.raises(ValueError, match="deterministic"):
        updates(det_run)
    assert not scoring_task(deterministic).is_deterministic
    scored = failure(det_run, n_sequences=256, seed=1, window=4, settle=2)
    assert {"perseveration_model", "perseveration_observer", "overreaction_model", "overreaction_observer"} <= set(scored.headline)
    written = write_analysis(scored, tmp_path / "analysis")
    assert {"failure.json", "failure.png", "failure.svg"} <= {path.name for path in written}

    # Side by side on the same events: the same model under two names scores the same, and the observer once.
    both = compare_failure({"a": run, "b": det_run}, n_sequences=256, seed=1, window=4, settle=2)
    assert both.headline["perseveration/a"] == both.headline["perseveration/b"] == scored.headline["perseveration_model"]
    assert both.headline["overreaction/observer"] == scored.headline["overreaction_observer"]
    assert {"failure_comparison.json", "failure_comparison.png"} <= {p.name for p in write_analysis(both, tmp_path / "cmp")}
    listed = compare_failure([run], n_sequences=256, seed=1, window=4, settle=2)  # a list: runs named by their folders
    assert listed.headline[f"perseveration/{run.path.name}"] == scored.headline["perseveration_model"]
    assert all(path.exists() for path in listed.plot(str(tmp_path / "as-str")))  # a folder given as a str
    across = updates_across_runs({"a": run}, x="p_noise", n_sequences=256, seed=1, window=4, settle=2)
    assert across.runs["a"]["x"] == pytest.approx(float(np.mean(run.task.noise_by_period)))
    assert across.headline["learning_rate_observer/transition@a"] == result.headline["learning_rate_observer/transition"]
    assert {"updates_by_p_noise.json", "updates_by_p_noise.png"} <= {p.name for p in write_analysis(across, tmp_path / "x")}


def test_updates_fits_its_decoding_mlp_probes_on_at_most_mlp_rows_positions(trained_run, monkeypatch):
    from nrecur.analysis.probes import MLPProbe

    rows = []
    fit = MLPProbe.fit.__func__

    def recording(cls, x, y, *args, **kwargs):
        rows.append(len(x))
        return fit(cls, x, y, *args, **kwargs)

    monkeypatch.setattr(MLPProbe, "fit", classmethod(recording))
    result = updates(trained_run, n_sequences=64, seed=1, window=4, settle=2, decode_sequences=64, mlp_rows=100)
    assert rows == [100, 100]  # one MLP probe each for period and target, on 100 of 64 × 0.64 × length positions
    assert result.options["mlp_rows"] == 100 and result.options["decode_sequences"] == 64
