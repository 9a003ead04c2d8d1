"""Brute-force references for the tests: every hidden path enumerated, straight from SPEC §2.3.

Nothing here is shared with the package: the emission and transition
probabilities are written out state by state, the conditional transition prior
is normalized by summing over the allowed rules, and the posterior comes from
summing path weights (paths are never merged by state, so this is not a
forward filter). Exponential in the length: tiny configurations only.
"""

from __future__ import annotations

import numpy as np

#: ``transition_changes`` → may a change keep the period (``same_n``) and the target (``same_t``) as given?
#: Written out from SPEC §2.3; a test of a new kind adds its own entry.
ALLOWED = {
    "either": lambda same_n, same_t: not (same_n and same_t),
    "both": lambda same_n, same_t: not same_n and not same_t,
    "period": lambda same_n, same_t: not same_n and same_t,
    "target": lambda same_n, same_t: same_n and not same_t,
}
#: ``fake_source`` → fakes come from the last ``FAKE_WINDOW * n`` tokens; 0: none, uniform over V minus t.
FAKE_WINDOW = {"uniform": 0, "recent": 3}


def _priors(task):
    V, periods = task.vocab_size, list(task.periods)
    pi = np.ones(len(periods)) / len(periods) if task.period_prior is None else np.array(task.period_prior, float)
    tau = np.ones(V) / V if task.target_prior is None else np.array(task.target_prior, float)
    return pi / pi.sum(), tau / tau.sum()


def rule_weights(task):
    """``{(n, t): prior probability}`` over every rule: ``rule_prior`` as the config holds it (triples),
    normalized, absent rules 0; else ``period_prior × target_prior``."""
    rules = [(n, t) for n in task.periods for t in range(task.vocab_size)]
    if task.rule_prior is None:
        pi, tau = _priors(task)
        return {(n, t): pi[list(task.periods).index(n)] * tau[t] for n, t in rules}
    given = {(n, t): w for n, t, w in task.rule_prior}
    total = sum(given.values())
    return {rule: given.get(rule, 0.0) / total for rule in rules}


def _per_period(value, n):
    if isinstance(value, dict):
        return value[n]
    if isinstance(value, str):
        return float(value[:-2]) / n
    return float(value)


def states_of(task):
    return [(n, t, c) for n in task.periods for t in range(task.vocab_size) for c in range(n)]


def emission(task, state, history, v):
    """P(x_i = v | state at i, x_0..x_{i-1} = history)."""
    n, t, c = state
    V = task.vocab_size
    if c != 0:
        if task.target_outside:
            return 1.0 / V
        return 0.0 if v == t else 1.0 / (V - 1)
    noise = _per_period(task.p_noise, n)
    if v == t:
        return 1.0 - noise
    pool = _fake_pool(task, history, n, t)
    return noise * (1.0 / len(pool) if v in pool else 0.0)


def _fake_pool(task, history, n, t):
    """The tokens a fake is uniform over: the window's distinct tokens other than t, else all but t."""
    i, window = len(history), FAKE_WINDOW[task.fake_source] * n
    recent = set(map(int, history[max(0, i - window) : i])) if window else set()
    return sorted(recent - {t}) or [u for u in range(task.vocab_size) if u != t]


def transition_matrix(task):
    """``[state, state]`` P(next state | state) by explicit conditioning on the allowed rules."""
    prior = rule_weights(task)
    states = states_of(task)
    index = {s: k for k, s in enumerate(states)}
    M = np.zeros((len(states), len(states)))
    for s in states:
        n, t, c = s
        p_tr = _per_period(task.p_transition, n)
        M[index[s], index[(n, t, (c - 1) % n)]] += 1.0 - p_tr
        if p_tr == 0:
            continue
        allowed = []
        for n2 in task.periods:
            for t2 in range(task.vocab_size):
                if ALLOWED[task.transition_changes](n2 == n, t2 == t):
                    allowed.append((n2, t2, prior[(n2, t2)]))
        total = sum(w for _, _, w in allowed)
        if total == 0:  # a rule the prior never reaches
            continue
        for n2, t2, w in allowed:
            for c2 in range(n2):
                M[index[s], index[(n2, t2, c2)]] += p_tr * w / total / n2
    return M


def brute_force_posterior(task, x):
    """For one sequence ``x``: predictive ``[pos, vocab]``, next-state posterior ``[pos, state]``,
    and log P(x[0..k]) ``[pos]``, by enumerating hidden paths."""
    x = [int(v) for v in x]
    V, L = task.vocab_size, len(x)
    states = states_of(task)
    S = len(states)
    prior = rule_weights(task)
    init = np.array([prior[(n, t)] / n for n, t, c in states])
    M = transition_matrix(task)

    def emit_vector(i, v):
        return np.array([emission(task, s, x[:i], v) for s in states])

    weight = init * emit_vector(0, x[0])  # one path per start state
    last = np.arange(S)
    keep = weight > 0
    weight, last = weight[keep], last[keep]
    predictive = np.zeros((L, V))
    next_state = np.zeros((L, S))
    log_prefix = np.zeros(L)
    for k in range(L):
        total = weight.sum()
        log_prefix[k] = np.log(total)
        extended = weight[:, None] * M[last]  # [path, next state]: paths of length k+2
        for s in range(S):
            next_state[k, s] = extended[:, s].sum() / total
        for v in range(V):  # P(x_0..x_k, v) / P(x_0..x_k)
            predictive[k, v] = (extended * emit_vector(k + 1, v)[None, :]).sum() / total
        if k + 1 < L:
            w = extended * emit_vector(k + 1, x[k + 1])[None, :]
            paths, nxt = np.nonzero(w > 0)
            weight, last = w[paths, nxt], nxt
    return predictive, next_state, log_prefix


def loop_sample(task, batch_size, length, seed):
    """Straightforward per-sequence, per-position sampler of SPEC §2.3 (Python's ``random``).

    The speed reference of ``benchmarks/bench_sampler.py`` and a second
    implementation for the statistical comparison in the tests. Returns tokens
    ``[batch, pos]`` and the rule ``(n, t)`` in force at each position.
    """
    import random

    rng = random.Random(seed)
    V, periods = task.vocab_size, list(task.periods)
    pi, tau = _priors(task)
    rules = [(n, t) for n in periods for t in range(V)]
    prior = rule_weights(task)

    def draw(items, weights):
        return rng.choices(items, weights=weights)[0]

    tokens = np.empty((batch_size, length), dtype=np.int64)
    period = np.empty((batch_size, length), dtype=np.int64)
    target = np.empty((batch_size, length), dtype=np.int64)
    for b in range(batch_size):
        if task.rule_prior is None:
            n, t = draw(periods, pi), draw(range(V), tau)
        else:
            n, t = draw(rules, [prior[rule] for rule in rules])
        c = rng.randrange(n)
        for i in range(length):
            others = [u for u in range(V) if u != t]
            if c == 0:
                if rng.random() < _per_period(task.p_noise, n):
                    x = rng.choice(_fake_pool(task, tokens[b, :i], n, t))
                else:
                    x = t
            else:
                x = rng.randrange(V) if task.target_outside else rng.choice(others)
            tokens[b, i], period[b, i], target[b, i] = x, n, t
            if rng.random() < _per_period(task.p_transition, n):
                allowed = [(n2, t2) for n2, t2 in rules if ALLOWED[task.transition_changes](n2 == n, t2 == t)]
                weights = [prior[rule] for rule in allowed]
                n, t = draw(allowed, weights)
                c = rng.randrange(n)
            else:
                c = (c - 1) % n
    return tokens, period, target


# ---------------------------------------------------------------------------- in-context modular arithmetic


def modular_prior(task, prior):
    """The prior over task vectors ``(a, b)`` as a dict, straight from SPEC §2.6 (uniform over a set)."""
    p = task.p
    if prior == "universal":
        vectors = [(a, b) for a in range(p) for b in range(p)]
    else:
        vectors = [(int(a), int(b)) for a, b in task.train_tasks]
    return {v: 1.0 / len(vectors) for v in vectors}


def modular_likelihood(p, vector, tokens):
    """P(tokens | task vector): 1/p for each x and y, 1 or 0 for each z."""
    a, b = vector
    likelihood = 1.0
    for i, token in enumerate(tokens):
        if i % 3 < 2:
            likelihood /= p
        elif token != (a * tokens[i - 2] + b * tokens[i - 1]) % p:
            return 0.0
    return likelihood


def modular_brute_force(task, x, prior):
    """For one sequence ``x``: predictive ``[pos, vocab]``, marginals of a and b ``[pos, p]``, the number
    of vectors with positive posterior ``[pos]`` and log P(x[0..i]) ``[pos]``, each from the joint
    probability summed over all p² task vectors (no filtering; NaN where the prefix is impossible)."""
    x = [int(v) for v in x]
    p, L = task.p, len(x)
    pi = modular_prior(task, prior)
    vectors = [(a, b) for a in range(p) for b in range(p)]

    def joint(tokens):
        return {v: pi.get(v, 0.0) * modular_likelihood(p, v, tokens) for v in vectors}

    predictive = np.full((L, p), np.nan)
    marginal_a = np.full((L, p), np.nan)
    marginal_b = np.full((L, p), np.nan)
    n_consistent = np.zeros(L, dtype=np.int64)
    log_prefix = np.zeros(L)
    for i in range(L):
        weights = joint(x[: i + 1])
        total = sum(weights.values())
        log_prefix[i] = np.log(total) if total > 0 else -np.inf
        n_consistent[i] = sum(w > 0 for w in weights.values())
        if total == 0:
            continue
        for (a, b), w in weights.items():
            marginal_a[i, a] = np.nan_to_num(marginal_a[i, a]) + w / total
            marginal_b[i, b] = np.nan_to_num(marginal_b[i, b]) + w / total
        for t in range(p):  # P(x_0..x_i, t) / P(x_0..x_i)
            predictive[i, t] = sum(joint(x[: i + 1] + [t]).values()) / total
    return predictive, marginal_a, marginal_b, n_consistent, log_prefix


def modular_loop_posterior(task, tokens, prior):
    """The observer written plainly: for each sequence and each example, loop over the consistent
    vectors. Returns predictive, marginals of a and b (``[batch, pos, p]`` each) and ``n_consistent
    [batch, pos]``. The speed reference of ``benchmarks/bench_modular_observer.py``."""
    p = task.p
    tokens = np.asarray(tokens)
    B, L = tokens.shape
    start = list(modular_prior(task, prior))
    predictive = np.zeros((B, L, p))
    marginal_a = np.zeros((B, L, p))
    marginal_b = np.zeros((B, L, p))
    n_consistent = np.zeros((B, L), dtype=np.int64)
    for s, x in enumerate(tokens.tolist()):
        consistent = start
        for i in range(L):
            if i % 3 == 2:
                consistent = [(a, b) for a, b in consistent if (a * x[i - 2] + b * x[i - 1]) % p == x[i]]
            n = len(consistent)
            n_consistent[s, i] = n
            if i == 0 or i % 3 == 2:  # the posterior changed (or starts): count the marginals
                for a, b in consistent:
                    marginal_a[s, i, a] += 1 / n
                    marginal_b[s, i, b] += 1 / n
            else:
                marginal_a[s, i], marginal_b[s, i] = marginal_a[s, i - 1], marginal_b[s, i - 1]
            if i % 3 == 1:
                for a, b in consistent:
                    predictive[s, i, (a * x[i - 1] + b * x[i]) % p] += 1 / n
            else:
                predictive[s, i] = 1 / p
    return predictive, marginal_a, marginal_b, n_consistent
