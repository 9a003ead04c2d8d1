"""Moving token batches between NumPy and torch for the observers."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from nrecur.observer.results import ImpossibleSequenceError


def as_token_tensor(tokens, vocab_size: int) -> tuple[torch.Tensor, Callable[[torch.Tensor], object]]:
    """``tokens`` ``[batch, pos]`` (NumPy, torch, or nested lists) → a long tensor, and a function
    that turns result tensors back into the input's kind (NumPy arrays for NumPy input)."""
    if isinstance(tokens, torch.Tensor):
        x = tokens
        back = lambda t: t  # noqa: E731
    else:
        array = np.asarray(tokens)
        if array.size and (array.dtype == object or not np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"tokens must be integers, got dtype {array.dtype}")
        if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
            raise ValueError(f"tokens must lie in 0..{vocab_size - 1} (vocab_size={vocab_size}), got {array.max()}")
        if array.size == 0:
            array = array.astype(np.int64)
        x = torch.from_numpy(np.ascontiguousarray(array))
        back = lambda t: t.cpu().numpy()  # noqa: E731
    if x.dim() == 1:
        raise ValueError("tokens must be a batch [batch, pos]; wrap a single sequence as tokens[None]")
    if x.dim() != 2 or x.shape[1] == 0:
        raise ValueError(f"tokens must have shape [batch, pos] with pos >= 1, got {tuple(x.shape)}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"tokens must be integers, got dtype {x.dtype}")
    x = x.long()
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= vocab_size):
        raise ValueError(
            f"tokens must lie in 0..{vocab_size - 1} (vocab_size={vocab_size}), "
            f"got values from {int(x.min())} to {int(x.max())}"
        )
    return x, back


def check_impossible(log_p: torch.Tensor, impossible: str) -> torch.Tensor:
    """``log_p`` ``[batch, pos]`` of each observed token → first impossible position per sequence (or -1).

    Raises :class:`ImpossibleSequenceError` when ``impossible == "raise"`` and any exists; otherwise
    sets ``log_p`` to ``-inf`` from that position on (in place), so log-losses read ``inf``.
    """
    bad = ~(log_p > -torch.inf)  # -inf or NaN (NaN follows a zero normalizer)
    first = torch.where(bad.any(1), bad.float().argmax(1), torch.full_like(bad[:, 0], -1, dtype=torch.long))
    if impossible == "raise" and bool(bad.any()):
        rows = torch.nonzero(first >= 0).flatten()
        b = int(rows[0])
        raise ImpossibleSequenceError(
            f"sequence {b} is impossible under this process: its token at position {int(first[b])} has "
            f"probability 0 given the tokens before it ({len(rows)} impossible sequence(s) in the batch; "
            "pass impossible='inf' to get log-loss inf and a flag instead)"
        )
    positions = torch.arange(log_p.shape[1], device=log_p.device)
    log_p.masked_fill_((first[:, None] >= 0) & (positions[None, :] >= first[:, None]), -torch.inf)
    return first
