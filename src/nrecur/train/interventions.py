"""Interventions during training: ablate a head, or clamp its attention pattern, for a range of steps.

An :class:`Intervention` is part of the run's config (``TrainConfig.interventions``,
so ``config.json`` reproduces it). While it is active — for the optimizer steps
``start <= step < end`` and for the evaluations made at those steps — the
trainer runs every forward pass inside ``model.hooks(intervention_hooks(...))``:

* ``ablate``: head ``layer.head``'s output ``z`` is replaced by zeros, so the head
  writes nothing to the residual stream and its weights get no gradient through it.
* ``clamp_pattern``: the head's attention pattern is replaced by a fixed one; the
  model then computes ``z = pattern @ v`` from it (the hook on ``hook_pattern``
  also switches the layer off the fused kernel). The queries and keys of the
  head get no gradient; its values and output projection still learn.

Fixed patterns (``PATTERNS``), ``[query_pos, key_pos]``, every row summing to 1:

* ``previous``: query ``i`` attends to key ``i - 1`` (query 0 to itself).
* ``period`` with period ``n``: query ``i`` spreads its mass uniformly over the keys
  ``j <= i`` with ``j ≡ i + 1 (mod n)`` — the earlier positions in the phase of the
  next token, where an n-recurrence with period ``n`` repeats it. Queries ``i < n - 1``
  have no such key and attend to themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import field_validator, model_validator

from nrecur._config import Config

if TYPE_CHECKING:  # torch is imported where a pattern is made: reading a config needs no torch
    from torch import Tensor

    from nrecur.hooks import HookPoint, HookSpec

__all__ = [
    "PATTERNS",
    "Intervention",
    "intervention_hooks",
    "period_pattern",
    "previous_token_pattern",
]


def previous_token_pattern(pos: int, period: int | None = None) -> Tensor:
    """``[query_pos, key_pos]``: query i on key i - 1; query 0 on itself."""
    import torch

    pattern = torch.zeros(pos, pos)
    rows = torch.arange(pos)
    pattern[rows, (rows - 1).clamp(min=0)] = 1.0
    return pattern


def period_pattern(pos: int, period: int | None) -> Tensor:
    """``[query_pos, key_pos]``: query i uniform over keys j <= i with j ≡ i + 1 (mod period); itself when none."""
    import torch

    if period is None or period < 1:
        raise ValueError(f"the period pattern needs a period >= 1, got {period}")
    queries = torch.arange(pos)[:, None]  # [query_pos, 1]
    keys = torch.arange(pos)[None, :]  # [1, key_pos]
    mask = (keys <= queries) & (
        (keys - queries - 1) % period == 0
    )  # [query_pos, key_pos]
    mask |= ~mask.any(dim=-1, keepdim=True) & (
        keys == queries
    )  # no key in the phase yet: attend to itself
    return mask.double().div(mask.sum(dim=-1, keepdim=True)).float()


PATTERNS: dict[str, Callable[[int, int | None], Tensor]] = {
    "previous": previous_token_pattern,
    "period": period_pattern,
}
"""``Intervention.pattern`` → ``fn(pos, period) -> pattern [query_pos, key_pos]``."""


class Intervention(Config):
    """One head ablated or its attention pattern clamped, for the training steps ``start <= step < end``."""

    kind: Literal["ablate", "clamp_pattern"]
    """ablate: zero the head's output z; clamp_pattern: replace the head's attention pattern by `pattern`."""
    layer: int
    """Block of the head, 0 … n_layers-1."""
    head: int
    """Head within the block, 0 … n_heads-1."""
    pattern: Literal["previous", "period"] | None = None
    """clamp_pattern: previous (each query on the previous token) or period (uniform over the earlier keys in the next token's phase mod `period`)."""
    period: int | None = None
    """The period of the period pattern: one of the task's periods."""
    start: int = 0
    """First step (optimizer step index, 0-based) at which the intervention is active."""
    end: int | None = None
    """Step at which it stops (exclusive); None: until the end of training."""

    @field_validator("layer", "head", "start")
    @classmethod
    def _non_negative(cls, value: int, info) -> int:
        if value < 0:
            raise ValueError(f"{info.field_name} must be an integer >= 0, got {value}")
        return value

    @model_validator(mode="after")
    def _check(self) -> Intervention:
        if self.end is not None and self.end <= self.start:
            raise ValueError(
                f"an intervention's start must be < end, got start {self.start}, end {self.end}"
            )
        if self.kind == "ablate" and (
            self.pattern is not None or self.period is not None
        ):
            raise ValueError(
                "an ablation takes no pattern or period (those are for clamp_pattern)"
            )
        if self.kind == "clamp_pattern" and self.pattern is None:
            raise ValueError(f"clamp_pattern needs a pattern, one of {list(PATTERNS)}")
        if self.pattern == "period" and self.period is None:
            raise ValueError(
                "the period pattern needs a period (one of the task's periods)"
            )
        if self.pattern == "previous" and self.period is not None:
            raise ValueError("the previous pattern takes no period")
        return self

    def active(self, step: int) -> bool:
        """Whether the intervention applies to the forward passes made at ``step``."""
        return self.start <= step and (self.end is None or step < self.end)

    def describe(self) -> str:
        """The CLI form: ``ablate 0.3@0:500``, ``clamp 1.2=period:3@100:``, ``ablate 0.1`` (all steps)."""
        whole = self.start == 0 and self.end is None
        steps = "" if whole else f"@{self.start}:{'' if self.end is None else self.end}"
        if self.kind == "ablate":
            return f"ablate {self.layer}.{self.head}{steps}"
        target = self.pattern if self.pattern == "previous" else f"period:{self.period}"
        return f"clamp {self.layer}.{self.head}={target}{steps}"

    def hook(self) -> HookSpec:
        """``(hook name, fn)`` applying this intervention."""
        head = self.head
        if self.kind == "ablate":

            def ablate(
                z: Tensor, hook: HookPoint
            ) -> Tensor:  # z: [batch, pos, head, d_head]
                z = z.clone()  # edit a copy: autograd may still need the original
                z[:, :, head] = 0.0
                return z

            return f"blocks.{self.layer}.attn.hook_z", ablate
        make, period = PATTERNS[self.pattern], self.period

        def clamp(
            pattern: Tensor, hook: HookPoint
        ) -> Tensor:  # pattern: [batch, head, query_pos, key_pos]
            fixed = make(pattern.shape[-1], period).to(pattern)  # [query_pos, key_pos]
            pattern = pattern.clone()
            pattern[:, head] = fixed
            return pattern

        return f"blocks.{self.layer}.attn.hook_pattern", clamp


def intervention_hooks(
    interventions: Sequence[Intervention], step: int
) -> list[HookSpec]:
    """The hooks of the interventions active at ``step``, for ``model.hooks(...)`` (empty when none is)."""
    return [
        intervention.hook()
        for intervention in interventions
        if intervention.active(step)
    ]
