"""Checkpoints: model, optimizer, Grokfast and RNG state in one safetensors file, written atomically.

Where checkpoints live in a run folder is :class:`~nrecur.train.folder.RunFolder`'s
business; this module is the file format. Its tensors are named ``model.<param>``, ``optim.<index>.<key>``,
``grokfast.<param>`` and ``rng.<generator>``; its metadata holds the step and a
JSON blob with the trainer's own state (elapsed time, callback state). Nothing
is ever unpickled: safetensors stores raw tensors and strings only.

Files are written to a temporary name, flushed to disk and renamed, so a
checkpoint on disk is always complete, even if the process is killed while
writing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from nrecur._io import atomic_write_bytes

FORMAT = "nrecur-checkpoint-1"


# --- what goes in ---


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    """``{f"{param_index}.{key}": tensor}`` of the optimizer's per-parameter state (AdamW: step, exp_avg, exp_avg_sq)."""
    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if not isinstance(value, Tensor):
                value = torch.tensor(value)
            tensors[f"{index}.{key}"] = value
    return tensors


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor]) -> None:
    """Inverse of :func:`optimizer_tensors` (hyperparameters come from the live optimizer)."""
    state: dict[int, dict[str, Tensor]] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    current = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


def rng_tensors() -> dict[str, Tensor]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{index}"] = state
    return tensors


def restore_rng(tensors: dict[str, Tensor]) -> None:
    if "torch" in tensors:
        torch.set_rng_state(tensors["torch"])
    cuda = sorted((int(name.split(".")[1]), t) for name, t in tensors.items() if name.startswith("cuda."))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t for _, t in cuda])


@dataclass(frozen=True)
class Checkpoint:
    """The contents of one checkpoint file (all tensors on the CPU)."""

    path: Path
    step: int
    model: dict[str, Tensor]
    optimizer: dict[str, Tensor] = field(default_factory=dict)
    grokfast: dict[str, Tensor] = field(default_factory=dict)
    rng: dict[str, Tensor] = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    """Trainer state (JSON): elapsed seconds, callback state, …"""


def save_checkpoint(
    path: str | os.PathLike,
    *,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    grokfast: dict[str, Tensor] | None = None,
    state: dict | None = None,
) -> Path:
    """Write a checkpoint atomically; returns its path."""
    groups = {
        "model": model.state_dict(),
        "optim": optimizer_tensors(optimizer) if optimizer is not None else {},
        "grokfast": grokfast or {},
        "rng": rng_tensors(),
    }
    tensors = {
        f"{group}.{name}": tensor.detach().to("cpu").clone().contiguous()
        for group, members in groups.items()
        for name, tensor in members.items()
    }
    metadata = {"format": FORMAT, "step": str(step), "state": json.dumps(state or {})}
    path = Path(path)
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata=metadata))
    return path


def _split(tensors: dict[str, Tensor], group: str) -> dict[str, Tensor]:
    prefix = group + "."
    return {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not an nrecur checkpoint (format {metadata.get('format')!r}, expected {FORMAT!r})")
    return metadata


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a whole checkpoint (no pickle involved)."""
    metadata = read_metadata(path)
    tensors = load_file(str(path))
    return Checkpoint(
        path=Path(path),
        step=int(metadata["step"]),
        model=_split(tensors, "model"),
        optimizer=_split(tensors, "optim"),
        grokfast=_split(tensors, "grokfast"),
        rng=_split(tensors, "rng"),
        state=json.loads(metadata.get("state", "{}")),
    )


def load_model_tensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """Only the model weights of a checkpoint, ``{param name: tensor}``."""
    read_metadata(path)
    tensors = {}
    with safe_open(str(path), framework="pt") as handle:
        for name in handle.keys():
            if name.startswith("model."):
                tensors[name[len("model.") :]] = handle.get_tensor(name)
    return tensors


def load_weights_into(model: nn.Module, tensors: dict[str, Tensor], source: str) -> None:
    """Copy ``tensors`` into ``model``; a clear error listing every name or shape that does not fit."""
    own = model.state_dict()
    problems = []
    for name in sorted(set(own) | set(tensors), key=lambda n: (n.startswith("blocks."), n)):
        if name not in tensors:
            problems.append(f"{name} missing there (here {tuple(own[name].shape)})")
        elif name not in own:
            problems.append(f"{name} {tuple(tensors[name].shape)} there has no counterpart here")
        elif own[name].shape != tensors[name].shape:
            problems.append(f"{name} is {tuple(tensors[name].shape)} there but {tuple(own[name].shape)} here")
    if problems:
        shown = "; ".join(problems[:6]) + (f"; … ({len(problems) - 6} more)" if len(problems) > 6 else "")
        raise ValueError(f"cannot initialize from {source}: the architectures differ: {shown}")
    model.load_state_dict(tensors)
