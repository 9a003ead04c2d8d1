"""The prior over the rules ``(n, t)`` of n-recurrence (SPEC §2.3): a product or a joint table.

A fresh rule — at the start of a sequence and after every transition — is
drawn from the *rule prior*, restricted to the rules the transition kind
allows (``transition_changes``) and renormalized. It comes in two forms, one
class each; the sampler, the observers and the dense form ask the task's prior
(``NRecurrence.rule_distribution``) and never which form it is:

* :class:`ProductPrior` ``π(n)·τ(t)``, from ``period_prior`` and
  ``target_prior``. Its draws and closed forms are the transition kinds' own
  (``TransitionKind.draw``, ``leave_rate``, ``arrival``).
* :class:`JointPrior` ``ρ(n, t)``, from ``rule_prior``: any weights over the
  ``[period, vocab]`` table, normalized; rules absent have prior 0. The
  observer's closed form is the kind's ``spread`` on the four sums
  ``(W, W_n, W_t, w)`` as for the product, with ``arrival = ρ`` and the
  alternative mass ``Z(n, t)`` = the sum of ``ρ`` over the rules a change from
  ``(n, t)`` may reach — the same four sums taken of ``ρ`` itself
  (``TransitionKind.reachable``), because the allowed-move relation is
  symmetric. A draw inverts the CDF of ``ρ`` masked to the allowed rules.

A joint prior that puts weight on a rule with ``p_transition(n) > 0`` must
give some rule that rule may change to a positive weight; the check names the
first rule that has none. Also here: the reader of ``rule_prior`` as written
in configs (:func:`parse_rule_prior`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from nrecur.tasks.variants import MIN_ALTERNATIVE_MASS, TransitionKind, categorical

__all__ = ["JointPrior", "ProductPrior", "RULE_PRIOR_FORMS", "RulePrior", "parse_rule_prior", "rule_table"]

RuleWeights = tuple[tuple[int, int, float], ...]
"""``rule_prior`` as a config stores it: ``(period, target, weight)`` per rule, in the order given."""

RULE_PRIOR_FORMS = "a list of [n, t, weight] triples, or of [n, t] pairs for a uniform prior over those rules"


class RulePrior:
    """A prior over rules as the sampler and the observers use it. Subclasses set ``table`` and the draws."""

    table: np.ndarray
    """``[period, vocab]`` prior probability of each rule ``(periods[k], t)`` (float64, sums to 1)."""

    def draw_initial(self, u_period: np.ndarray, u_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(period index, target)`` per sequence ``[batch]`` of a fresh rule, from two uniforms per sequence."""
        raise NotImplementedError

    def draw_change(
        self, kind: TransitionKind, old_period_index: np.ndarray, old_target: np.ndarray, u_period: np.ndarray,
        u_target: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """``(period index, target)`` ``[rows]`` after a change from the old rules, from two uniforms per row."""
        raise NotImplementedError

    def leave_rate(self, kind: TransitionKind, p_transition: np.ndarray) -> np.ndarray:
        """``[period, vocab]`` ``p_transition(n) / Z(n, t)``: a rule's mass times this is its ``w``
        (0 where nothing leaves or nothing can be reached)."""
        raise NotImplementedError

    def arrival(self, kind: TransitionKind) -> np.ndarray:
        """``[period, vocab]`` prior factor of an arriving rule."""
        raise NotImplementedError

    def transition_problem(self, kind: TransitionKind, p_transition: np.ndarray) -> str | None:
        """One line saying why a change cannot happen as ``kind`` says under this prior (``p_transition``
        ``[period]``), or None."""
        raise NotImplementedError


class ProductPrior(RulePrior):
    """``π(n)·τ(t)``: the transition kinds' own draws and closed forms."""

    def __init__(self, period_probs: np.ndarray, target_probs: np.ndarray, periods: tuple[int, ...]) -> None:
        self.period_probs, self.target_probs, self.periods = period_probs, target_probs, periods
        self.table = np.outer(period_probs, target_probs)

    def draw_initial(self, u_period, u_target):
        return categorical(self.period_probs, u_period), categorical(self.target_probs, u_target)

    def draw_change(self, kind, old_period_index, old_target, u_period, u_target):
        return kind.draw(self.period_probs, self.target_probs, old_period_index, old_target, u_period, u_target)

    def leave_rate(self, kind, p_transition):
        return kind.leave_rate(self.period_probs, self.target_probs, p_transition)

    def arrival(self, kind):
        return kind.arrival(self.period_probs, self.target_probs)

    def transition_problem(self, kind, p_transition):
        why = kind.impossible_because(self.period_probs, self.target_probs, p_transition)
        if why is None:
            return None
        return (
            f"transition_changes={kind.name!r} cannot happen with this prior: {why} "
            f"(p_transition > 0 for periods {[n for n, p in zip(self.periods, p_transition) if p > 0]})"
        )


class JointPrior(RulePrior):
    """``ρ(n, t)`` over the ``[period, vocab]`` table (see the module docstring)."""

    def __init__(self, table: np.ndarray, periods: tuple[int, ...]) -> None:
        self.table, self.periods = table, periods

    def draw_initial(self, u_period, u_target):
        index = categorical(self.table.ravel(), u_period)
        return index // self.table.shape[1], index % self.table.shape[1]

    def draw_change(self, kind, old_period_index, old_target, u_period, u_target):
        return kind.draw_from_table(self.table, old_period_index, old_target, u_period)

    def leave_rate(self, kind, p_transition):
        z = kind.reachable(self.table)
        reachable = kind.reachable((self.table > 0).astype(np.float64)) > 0.5  # counts of support rules
        rate = np.broadcast_to(p_transition[:, None], z.shape)
        ok = (rate > 0) & reachable & (z > 0)
        return np.where(ok, rate / np.where(ok, z, 1.0), 0.0)

    def arrival(self, kind):
        return self.table

    def transition_problem(self, kind, p_transition):
        live = (self.table > 0) & (p_transition[:, None] > 0)  # [period, vocab]: rules that may change
        stuck = live & (kind.reachable((self.table > 0).astype(np.float64)) < 0.5)
        thin = live & ~stuck & (kind.reachable(self.table) < MIN_ALTERNATIVE_MASS)
        for problem, cells in (("stuck", stuck), ("thin", thin)):
            if not cells.any():
                continue
            k, t = (int(i) for i in np.argwhere(cells)[0])
            n = self.periods[k]
            if problem == "stuck":
                return (
                    f"rule_prior: rule ({n}, {t}) has p_transition {p_transition[k]:g} > 0 but no rule of positive "
                    f"weight it may change to under transition_changes={kind.name!r}, which needs "
                    f"{kind.successors_in_words(n, t)}; give such a rule a weight or set p_transition to 0 for period {n}"
                )
            return (
                f"rule_prior: the rules that rule ({n}, {t}) may change to under transition_changes={kind.name!r} "
                f"have prior mass {kind.reachable(self.table)[k, t]:.3g}, below {MIN_ALTERNATIVE_MASS:g}; "
                "give them more weight"
            )
        return None


# ---------------------------------------------------------------------------------------------- reading configs


def parse_rule_prior(value: Any) -> RuleWeights:
    """``rule_prior`` as written → ``((period, target, weight), ...)`` in the order given.

    Accepts a list of ``[n, t, weight]`` triples, a list of ``[n, t]`` pairs (weight 1 each: uniform over
    them) or a mapping ``{(n, t): weight}``. Raises ``ValueError`` (one line, starting ``rule_prior``) on
    anything else, on a negative or non-finite weight, a rule given twice, no rule at all, or weights that
    are all 0. Whether the periods and tokens are the task's is :func:`rule_table`'s check.
    """
    if isinstance(value, Mapping):
        items = [(*_rule_key(key), weight) for key, weight in value.items()]
    elif isinstance(value, (list, tuple)):
        lengths = {len(item) if isinstance(item, (list, tuple)) else -1 for item in value}
        if -1 in lengths or not lengths <= {2, 3} or len(lengths) > 1:
            raise ValueError(f"rule_prior must be {RULE_PRIOR_FORMS} (all alike), got {_show(value)}")
        items = [tuple(item) if len(item) == 3 else (*item, 1.0) for item in value]
    else:
        raise ValueError(f"rule_prior must be {RULE_PRIOR_FORMS}, got {_show(value)}")
    if not items:
        raise ValueError(f"rule_prior must name at least one rule: {RULE_PRIOR_FORMS}")
    rules: dict[tuple[int, int], float] = {}
    for n, t, weight in items:
        rule = (_whole(n, "period"), _whole(t, "target"))
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"rule_prior: the weight of rule {rule} must be a finite number >= 0, got {weight!r}")
        if rule in rules:
            raise ValueError(f"rule_prior: rule {rule} is given twice; give each (n, t) once")
        rules[rule] = float(weight)
    if sum(rules.values()) <= 0:
        raise ValueError("rule_prior: every weight is 0; give at least one rule a weight > 0")
    return tuple((n, t, weight) for (n, t), weight in rules.items())


def rule_table(weights: RuleWeights, periods: tuple[int, ...], vocab_size: int) -> np.ndarray:
    """``[period, vocab]`` normalized prior of ``weights`` (as :func:`parse_rule_prior` gives them) over the
    task's ``periods`` and tokens; a rule whose period or target the task does not have is an error."""
    table = np.zeros((len(periods), vocab_size))
    for n, t, weight in weights:
        if n not in periods:
            raise ValueError(f"rule_prior: rule ({n}, {t}) has period {n}, which is not one of periods {list(periods)}")
        if not 0 <= t < vocab_size:
            raise ValueError(
                f"rule_prior: rule ({n}, {t}) has target {t}, which is not a token 0..{vocab_size - 1} (vocab_size {vocab_size})"
            )
        table[periods.index(n), t] = weight
    return table / table.sum()


def _rule_key(key: Any) -> tuple[Any, Any]:
    if not isinstance(key, (tuple, list)) or len(key) != 2:
        raise ValueError(f"rule_prior as a mapping needs keys (n, t), got {key!r}; or give {RULE_PRIOR_FORMS}")
    return key[0], key[1]


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ValueError(f"rule_prior: a rule's {what} must be a whole number, got {value!r}; give {RULE_PRIOR_FORMS}")
    return int(value)


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
