"""The fast n-recurrence observer equals the dense-HMM forward filter; HMM processes behave."""

import os

import numpy as np
import pytest
import torch

from nrecur import HMMProcess, ImpossibleSequenceError, NRecurrence, mess3, rrxor
from nrecur.tasks.dense import state_list

CONFIGS = [
    dict(),
    dict(vocab_size=5, periods=(2, 3, 4), p_noise=0.1, p_transition=0.05),
    dict(vocab_size=4, periods=(3, 2, 5), p_noise="0.2/n", p_transition="0.2/n", target_outside=True),
    dict(vocab_size=4, periods=(2, 3), period_prior=(0.2, 0.8), target_prior=(0.1, 0.2, 0.3, 0.4),
         p_noise={2: 0.3, 3: 0.0}, p_transition={2: 0.1, 3: 0.2}, transition_changes="both"),
    dict(vocab_size=3, periods=(2, 4), p_transition=0.2, transition_changes="period"),
    dict(vocab_size=3, periods=(2, 4), p_noise=0.2, p_transition=0.2, transition_changes="target"),
]


def marginals_from_belief(task, belief):
    B, L, _ = belief.shape
    period = np.zeros((B, L, task.n_periods))
    target = np.zeros((B, L, task.vocab_size))
    phase = np.zeros((B, L, task.n_periods, task.max_period))
    for s, (k, t, c) in enumerate(state_list(task)):
        period[..., k] += belief[..., s]
        target[..., t] += belief[..., s]
        phase[..., k, c] += belief[..., s]
    return period, target, phase


@pytest.mark.parametrize("backend", ["kernel", "torch"])
@pytest.mark.parametrize("kwargs", CONFIGS)
def test_fast_observer_equals_dense_hmm(kwargs, backend):
    task = NRecurrence(**kwargs)
    tokens = task.sample(64, 40, seed=5).tokens
    fast = task.posterior(tokens, backend=backend)
    dense = task.to_hmm().posterior(tokens)
    np.testing.assert_allclose(fast.predictive, dense.predictive, atol=1e-10, rtol=0)
    np.testing.assert_allclose(fast.log_loss, dense.log_loss, atol=1e-10, rtol=0)
    np.testing.assert_allclose(fast.log_likelihood, dense.log_likelihood, atol=1e-9, rtol=0)
    period, target, phase = marginals_from_belief(task, dense.belief)
    np.testing.assert_allclose(fast.period, period, atol=1e-10, rtol=0)
    np.testing.assert_allclose(fast.target, target, atol=1e-10, rtol=0)
    np.testing.assert_allclose(fast.phase, phase, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kwargs", [
    dict(p_noise=0.1, p_transition=0.1, fake_source="recent"),
    dict(vocab_size=5, periods=(2, 6, 3), p_noise="0.3/n", p_transition={2: 0.2, 3: 0.0, 6: 0.1}, transition_changes="period",
         fake_source="recent", target_outside=True),
    dict(vocab_size=3, periods=(4, 2), target_prior=(0.2, 0.0, 0.8), p_noise=0.2, p_transition=0.1, transition_changes="both"),
    dict(vocab_size=6, periods=(2, 3, 5), p_noise=0.3, fake_source="recent"),  # no transitions at all
])
def test_compiled_kernel_equals_tensor_filter(kwargs):
    """The two implementations of the fast filter agree on every output (including "recent" fakes)."""
    task = NRecurrence(**kwargs)
    tokens = task.sample(200, 50, seed=21).tokens
    kernel, tensor = task.posterior(tokens, backend="kernel"), task.posterior(tokens, backend="torch")
    for name in ("predictive", "period", "target", "phase", "log_loss", "log_likelihood"):
        np.testing.assert_allclose(getattr(kernel, name), getattr(tensor, name), atol=1e-11, rtol=0, err_msg=name)


def test_small_chunks_give_the_same_answer():
    from nrecur.observer.nrecurrence import nrecurrence_posterior

    task = NRecurrence(p_noise=0.1, p_transition=0.1, fake_source="recent")
    tokens = task.sample(50, 20, seed=1).tokens
    whole = nrecurrence_posterior(task, tokens, backend="torch")
    pieces = nrecurrence_posterior(task, tokens, backend="torch", chunk_size=7)
    for name in ("predictive", "period", "target", "phase", "log_loss"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(pieces, name))


def test_torch_input_gives_torch_output_and_the_same_numbers():
    task = NRecurrence(p_noise=0.1, p_transition=0.05)
    tokens = task.sample(8, 16, seed=2).tokens
    as_numpy = task.posterior(tokens)
    as_torch = task.posterior(torch.from_numpy(tokens).int())
    assert isinstance(as_torch.predictive, torch.Tensor) and as_torch.predictive.dtype == torch.float64
    assert isinstance(as_numpy.predictive, np.ndarray)
    np.testing.assert_array_equal(as_torch.predictive.numpy(), as_numpy.predictive)
    assert as_numpy.predictive.shape == (8, 16, 8)
    assert as_numpy.period.shape == (8, 16, 4)
    assert as_numpy.target.shape == (8, 16, 8)
    assert as_numpy.phase.shape == (8, 16, 4, 5)
    assert as_numpy.log_loss.shape == (8, 15)
    np.testing.assert_allclose(as_numpy.predictive.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(as_numpy.phase.sum((-1, -2)), 1.0, atol=1e-12)


@pytest.mark.gpu
def test_observer_on_cuda_matches_cpu():
    task = NRecurrence(p_noise=0.1, p_transition=0.1, fake_source="recent")
    tokens = torch.from_numpy(task.sample(32, 24, seed=3).tokens)
    cpu = task.posterior(tokens)
    gpu = task.posterior(tokens.cuda())
    assert gpu.predictive.device.type == "cuda"
    torch.testing.assert_close(gpu.predictive.cpu(), cpu.predictive, atol=1e-10, rtol=0)


@pytest.mark.parametrize("backend", ["kernel", "torch"])
def test_impossible_sequence_raises_with_position(backend):
    task = NRecurrence(vocab_size=4, periods=(2,))
    tokens = np.array([[0, 1, 0, 2, 0, 3], [1, 0, 1, 2, 3, 3]])
    with pytest.raises(ImpossibleSequenceError, match="sequence 1 .* position 4"):
        task.posterior(tokens, backend=backend)


@pytest.mark.parametrize("backend", ["kernel", "torch"])
def test_impossible_sequence_inf_mode_flags_it_without_touching_others(backend):
    task = NRecurrence(vocab_size=4, periods=(2,))
    tokens = np.array([[0, 1, 0, 2, 0, 3], [1, 0, 1, 2, 3, 3]])
    post = task.posterior(tokens, impossible="inf", backend=backend)
    assert post.impossible.tolist() == [-1, 4]
    assert post.log_loss[1, 3] == np.inf and post.log_likelihood[1] == -np.inf
    assert np.all(np.isfinite(post.predictive[0])) and np.all(np.isfinite(post.log_loss[0]))
    np.testing.assert_allclose(post.predictive[1, :3].sum(-1), 1.0)
    assert np.all(np.isnan(post.predictive[1, 4:]))  # undefined after the impossible token, and flagged


@pytest.mark.parametrize("bad, message", [
    (np.array([[0, 8]]), "0..7"),
    (np.array([[-1, 0]]), "0..7"),
    (np.array([0, 1, 2]), r"\[batch, pos\]"),
    (np.array([[0.5, 1.0]]), "integers"),
])
@pytest.mark.parametrize("backend", ["kernel", "torch"])
def test_bad_tokens_are_refused(bad, message, backend):
    with pytest.raises(ValueError, match=message):
        NRecurrence().posterior(bad, backend=backend)


def test_hmm_validation():
    with pytest.raises(ValueError, match="sum to 1"):
        HMMProcess(np.full((2, 2, 2), 0.3))
    with pytest.raises(ValueError, match="shape"):
        HMMProcess(np.ones((2, 3)))
    with pytest.raises(ValueError, match="stationary"):
        HMMProcess(np.stack([np.eye(2)]))  # two absorbing states
    with pytest.raises(ValueError, match="x must lie"):
        mess3(x=0.7)


def test_mess3_and_rrxor_definitions():
    m = mess3(0.05, 0.85)
    T = m.transitions
    assert T.shape == (3, 3, 3)
    assert T[0, 0, 0] == pytest.approx(0.9 * 0.85)  # stay in A (1 - 2x) and emit A (a)
    assert T[1, 0, 2] == pytest.approx(0.05 * 0.075)  # move A→C (x), C emits B ((1-a)/2)
    np.testing.assert_allclose(m.initial, 1 / 3)
    r = rrxor(0.5, 0.5)
    np.testing.assert_allclose(r.initial, [1 / 3, 1 / 6, 1 / 6, 1 / 6, 1 / 6])
    tokens = r.sample(200, 30, seed=0)
    # Every third token, counted from state S, is the XOR of the two before it.
    for row_tokens, row_states in zip(tokens.tokens, tokens.states):
        for i in np.flatnonzero(row_states == 3) :  # state T emits 1
            assert row_tokens[i] == 1
        s = np.flatnonzero(row_states == 0)
        for i in s[s + 2 < len(row_tokens)]:
            assert row_tokens[i + 2] == row_tokens[i] ^ row_tokens[i + 1]


def test_hmm_belief_against_brute_force_enumeration():
    proc = rrxor(0.3, 0.6)
    tokens = proc.sample(4, 6, seed=1).tokens
    post = proc.posterior(tokens)
    T, init = proc.transitions, proc.initial
    import itertools

    for b, x in enumerate(tokens):
        for k in range(len(x)):
            joint = np.zeros(proc.n_states)  # P(x_0..x_k, state_{k+1})
            for path in itertools.product(range(proc.n_states), repeat=k + 2):
                w = init[path[0]]
                for i in range(k + 1):
                    w *= T[x[i], path[i], path[i + 1]]
                joint[path[-1]] += w
            np.testing.assert_allclose(post.belief[b, k], joint / joint.sum(), atol=1e-12)
            emit = T.sum(2).T
            np.testing.assert_allclose(post.predictive[b, k], (joint / joint.sum()) @ emit, atol=1e-12)


def test_mess3_observer_is_calibrated_and_beats_the_marginal():
    m = mess3()
    data = m.sample(2000, 20, seed=4)
    post = m.posterior(data.tokens)
    loss = post.log_loss.mean()
    assert loss < np.log(3) - 0.05  # inference helps
    # The observer's expected loss equals its realized loss (calibration in the mean).
    pred = post.predictive[:, :-1]
    expected = -(pred * np.log(pred)).sum(-1).mean()
    assert abs(expected - loss) < 0.01


def test_the_kernel_leaves_torchs_thread_count():
    """numba's parallel kernel shares OpenMP with torch: the first one of a process (when numba's pool starts)
    must not change the threads torch uses after it. Run in a fresh process, where that first call happens."""
    import subprocess
    import sys

    code = (
        "import numba, torch; torch.set_num_threads(1)\n"
        "from nrecur import NRecurrence\n"
        "task = NRecurrence(p_noise=0.1, p_transition=0.05)\n"
        "task.posterior(task.sample(32, 20, seed=3).tokens, backend='kernel')\n"
        "print(torch.get_num_threads(), numba.get_num_threads())\n"
    )
    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}  # numba's own count above torch's, whatever the machine
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    # torch keeps its one thread; numba's count is back to its own (the kernel ran on torch's one)
    assert result.stdout.strip().splitlines()[-1] == "1 2"
