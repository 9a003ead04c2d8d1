"""Named hook points: read or replace any activation by name, with no global state.

A :class:`HookPoint` is an identity module placed on an activation; its name is
its module path (``blocks.0.attn.hook_pattern``), so ``model.get_submodule(name)``
finds it. Hook functions follow TransformerLens: ``fn(activation, hook)``
returns ``None`` to leave the activation alone or a tensor to replace it.

Hooks are attached only inside :meth:`HookedModule.hooks` (or through
:meth:`~HookedModule.run_with_cache` / :meth:`~HookedModule.run_with_hooks`,
which use it) and removed when the block ends, even when it raises. Under the
hood they are ordinary PyTorch forward hooks, so other tools that use forward
hooks see the same points.

Example::

    def zero_head_2(z, hook):  # z: [batch, pos, head, d_head]
        z = z.clone()  # edit a copy: autograd may still need the original
        z[:, :, 2] = 0.0
        return z

    with model.hooks([("blocks.0.attn.hook_z", zero_head_2)]):
        ablated = model(tokens)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple, Union

import torch
from torch import Tensor, nn

HookFn = Callable[[Tensor, "HookPoint"], Union[Tensor, None]]
"""``fn(activation, hook) -> replacement or None``; ``hook.name`` says where it runs."""

NameFilter = Union[None, str, Sequence[str], Callable[[str], bool]]
"""Which hook points: ``None`` = all, a name, a list of names, or a predicate on names."""

HookSpec = tuple[Union[str, Callable[[str], bool]], HookFn]
"""``(name or predicate on names, fn)``: where to attach a hook function."""

__all__ = ["ActivationCache", "HookFn", "HookPoint", "HookSpec", "HookedModule", "LogitsAndCache", "NameFilter"]


class HookPoint(nn.Module):
    """Identity on one activation; the place where hook functions attach.

    ``name`` is set by the root :class:`HookedModule` to this module's path.
    """

    def __init__(self) -> None:
        super().__init__()
        self.name = ""

    def forward(self, activation: Tensor) -> Tensor:
        return activation

    def add_hook(self, fn: HookFn) -> torch.utils.hooks.RemovableHandle:
        """Attach ``fn``; prefer :meth:`HookedModule.hooks`, which also removes it."""

        def forward_hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor | None:
            return fn(output, self)

        return self.register_forward_hook(forward_hook)

    @property
    def is_active(self) -> bool:
        """Whether anything may read or replace this activation.

        True with a forward hook attached, or with ``forward`` replaced on the
        instance (how nnsight intercepts modules). Modules use it to pick a
        fused kernel that never materializes the activation when it is False.
        """
        return bool(self._forward_hooks or self._forward_pre_hooks) or "forward" in self.__dict__


class ActivationCache(Mapping[str, Tensor]):
    """Read-only mapping from hook-point name to the (detached) activation it saw."""

    def __init__(self, activations: Mapping[str, Tensor]) -> None:
        self._activations = dict(activations)

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self._activations[name]
        except KeyError:
            raise KeyError(_unknown_name_message(name, list(self._activations), "cached")) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._activations)

    def __len__(self) -> int:
        return len(self._activations)

    def stack(self, suffix: str) -> Tensor:
        """Stack ``blocks.{l}.<suffix>`` over layers, in layer order: ``[layer, ...]``.

        ``cache.stack("hook_resid_post")`` → ``[layer, batch, pos, d_model]``.
        """
        names = [name for name in self._activations if name.startswith("blocks.") and name.endswith(f".{suffix}")]
        if not names:
            raise KeyError(f"no cached activation ends with {suffix!r}")
        names.sort(key=lambda name: int(name.split(".")[1]))
        return torch.stack([self._activations[name] for name in names])

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}: {list(t.shape)}" for name, t in self._activations.items())
        return f"ActivationCache({shapes})"


class LogitsAndCache(NamedTuple):
    logits: Tensor
    """``[batch, pos, vocab]``"""
    cache: ActivationCache


class HookedModule(nn.Module):
    """Base for a model whose activations sit behind :class:`HookPoint` s.

    Call :meth:`setup_hooks` at the end of ``__init__``: it names every hook
    point after its module path.
    """

    def setup_hooks(self) -> None:
        self.hook_dict: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module

    @property
    def hook_names(self) -> list[str]:
        """Every hook point's name, in the order the forward pass reaches them."""
        return list(self.hook_dict)

    def select_hooks(self, names: NameFilter = None) -> list[str]:
        """The hook names a filter selects; an unknown name is a KeyError."""
        if names is None:
            return self.hook_names
        if callable(names):
            return [name for name in self.hook_dict if names(name)]
        requested = [names] if isinstance(names, str) else list(names)
        for name in requested:
            if name not in self.hook_dict:
                raise KeyError(_unknown_name_message(name, self.hook_names, "hook point"))
        wanted = set(requested)
        return [name for name in self.hook_dict if name in wanted]

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Iterable[HookSpec]) -> Iterator[None]:
        """Attach ``(name or predicate on names, fn)`` pairs for the duration of the block.

        Exactly the hooks added here are removed on exit, also when the block raises.
        """
        handles = []
        try:
            for names, fn in fwd_hooks:
                for name in self.select_hooks(names):
                    handles.append(self.hook_dict[name].add_hook(fn))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def run_with_hooks(self, *args, fwd_hooks: Iterable[HookSpec] = (), **kwargs):
        """``self(*args, **kwargs)`` with ``fwd_hooks`` attached for this one call."""
        with self.hooks(fwd_hooks):
            return self(*args, **kwargs)

    def run_with_cache(self, *args, names_filter: NameFilter = None, **kwargs) -> LogitsAndCache:
        """Run forward and record the selected activations (detached, as the forward saw them).

        Returns ``(logits, cache)`` with ``cache`` holding exactly the selected names.
        Hooks attached by an enclosing :meth:`hooks` block run first, so the cache
        holds the activations after their edits.
        """
        store: dict[str, Tensor] = {}

        def save(activation: Tensor, hook: HookPoint) -> None:
            store[hook.name] = activation.detach()

        names = self.select_hooks(names_filter)
        with self.hooks([(name, save) for name in names]):
            logits = self(*args, **kwargs)
        # Keep the forward pass's order, not the filter's.
        return LogitsAndCache(logits, ActivationCache({name: store[name] for name in names if name in store}))


def _unknown_name_message(name: str, known: list[str], what: str) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"no {what} named {name!r}{hint}"
