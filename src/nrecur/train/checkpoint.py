"""Checkpoints: model, optimizer, Grokfast and RNG state in one safetensors file, written atomically.

Where checkpoints live in a run folder is :class:`~nrecur.train.folder.RunFolder`'s
business; this module is the file format. Its tensors are named ``model.<param>``, ``optim.<index>.<key>``,
``grokfast.<param>`` and ``rng.<generator>``; its metadata holds the step, a
JSON blob with the trainer's own state (elapsed time, callback state) and a
SHA-256 checksum of each group of tensors and of the metadata. Nothing is ever
unpickled: safetensors stores raw tensors and strings only.

Files are written to a temporary name, flushed to disk and renamed, so a
checkpoint on disk is always complete, even if the process is killed while
writing; the new file is read back and checked before :func:`save_checkpoint`
returns, so a caller can delete the previous checkpoint only once the new one is
known to be good. Every load verifies the checksums: a damaged file (truncated,
bit-flipped, not a checkpoint at all) raises :class:`CheckpointError`, never
loads wrong numbers. The model checksum doubles as the fingerprint of a
checkpoint's weights (a fine-tune records its source's). A reader racing a
training never mistakes a checkpoint replaced while it read for a damaged one
(the file is read again), and :func:`load_newest` passes over one deleted
under it (a periodic checkpoint replaced by the next).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from nrecur._io import atomic_write_bytes

FORMAT = "nrecur-checkpoint-2"
"""Checkpoints with checksums. Files of the first format (no checksums) still load, unverified."""
_UNCHECKED_FORMATS = ("nrecur-checkpoint-1",)
_GROUPS = ("model", "optim", "grokfast", "rng")

T = TypeVar("T")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: not a checkpoint, truncated, damaged, or not fitting the model.

    The message is ``f"{path} {problem}"`` (only ``problem`` without a path).
    """

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = Path(path) if path is not None else None
        self.problem = problem
        super().__init__(problem if path is None else f"{path} {problem}")


def tensor_digest(tensors: dict[str, Tensor]) -> str:
    """``"sha256:<hex>"`` of the tensors' names, dtypes, shapes and bytes, in name order."""
    hasher = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        hasher.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return "sha256:" + hasher.hexdigest()


def _metadata_digest(step: str, state: str) -> str:
    return "sha256:" + hashlib.sha256(f"{step}\0{state}".encode()).hexdigest()


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
    checksums = {group: tensor_digest(_split(tensors, group)) for group in _GROUPS}
    checksums["metadata"] = _metadata_digest(metadata["step"], metadata["state"])
    metadata["checksums"] = json.dumps(checksums)
    path = Path(path)
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata=metadata))
    # Read it back before anyone relies on it (the caller deletes the previous checkpoint next).
    try:
        load_checkpoint(path)
    except CheckpointError as error:
        raise CheckpointError(path, f"did not read back intact just after it was written: {error.problem}") from None
    return path


def _split(tensors: dict[str, Tensor], group: str) -> dict[str, Tensor]:
    prefix = group + "."
    return {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}


def _safetensors(path: str | os.PathLike, action: Callable[[], T]) -> T:
    """Run a safetensors read; a file it cannot parse becomes a one-line :class:`CheckpointError`."""
    try:
        return action()
    except OSError:
        raise
    except Exception as error:  # safetensors raises its own SafetensorError (and others on odd input)
        if not os.path.exists(path):  # deleted while it was opened (a training replaced it): gone, not damaged
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path)) from None
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(path, f"is not a readable nrecur checkpoint (safetensors: {reason})") from None


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The checkpoint's metadata (format, step, state, checksums), checked for form (not yet against the tensors)."""
    if Path(path).is_dir():
        raise CheckpointError(path, "is a folder, not a checkpoint file")

    def read() -> dict[str, str]:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}

    metadata = _safetensors(path, read)
    form = metadata.get("format")
    if form != FORMAT and form not in _UNCHECKED_FORMATS:
        raise CheckpointError(path, f"is not an nrecur checkpoint (format {form!r}, expected {FORMAT!r})")
    try:
        int(metadata["step"])
        json.loads(metadata.get("state", "{}"))
        checksums = json.loads(metadata["checksums"]) if form == FORMAT else {}
        expected = checksums.get("metadata") if form == FORMAT else None
    except (KeyError, ValueError, AttributeError):
        raise CheckpointError(path, "is damaged: its metadata is incomplete or unreadable") from None
    if form == FORMAT and expected != _metadata_digest(metadata["step"], metadata["state"]):
        raise CheckpointError(path, "is damaged: its step or trainer state does not match the checksum stored with it")
    return metadata


def _verify(path: str | os.PathLike, metadata: dict[str, str], group: str, tensors: dict[str, Tensor]) -> None:
    if metadata.get("format") != FORMAT:
        return  # written before checksums existed
    expected = json.loads(metadata["checksums"]).get(group)
    if expected != tensor_digest(tensors):
        raise CheckpointError(
            path, f"is damaged: its {group} tensors do not match the checksum stored with them (flipped bits or a broken copy)"
        )


def _identity(path: str | os.PathLike) -> tuple[int, int, int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _read_unchanged(path: str | os.PathLike, read: Callable[[], T], tries: int = 3) -> T:
    """``read()`` the file ``path``; when it fails its checks because the file was replaced while being read (a
    checkpoint written again under the same name), read the new file instead of calling it damaged."""
    for attempt in range(tries):
        before = _identity(path)
        try:
            return read()
        except CheckpointError:
            if attempt == tries - 1 or _identity(path) == before:
                raise
    raise AssertionError  # pragma: no cover - the loop returns or raises


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a whole checkpoint (no pickle involved) and verify every checksum."""
    return _read_unchanged(path, lambda: _load_checkpoint(path))


def _load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    metadata = read_metadata(path)
    tensors = _safetensors(path, lambda: load_file(str(path)))
    groups = {group: _split(tensors, group) for group in _GROUPS}
    for group, members in groups.items():
        _verify(path, metadata, group, members)
    return Checkpoint(
        path=Path(path),
        step=int(metadata["step"]),
        model=groups["model"],
        optimizer=groups["optim"],
        grokfast=groups["grokfast"],
        rng=groups["rng"],
        state=json.loads(metadata.get("state", "{}")),
    )


def load_model_tensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """Only the model weights of a checkpoint, ``{param name: tensor}``, checked against their checksum."""
    return _read_unchanged(path, lambda: _load_model_tensors(path))


def _load_model_tensors(path: str | os.PathLike) -> dict[str, Tensor]:
    metadata = read_metadata(path)

    def read() -> dict[str, Tensor]:
        with safe_open(str(path), framework="pt") as handle:
            return {name[len("model.") :]: handle.get_tensor(name) for name in handle.keys() if name.startswith("model.")}

    tensors = _safetensors(path, read)
    _verify(path, metadata, "model", tensors)
    return tensors


def checkpoint_step(path: str | os.PathLike) -> int:
    """The step a checkpoint was written at (from its metadata)."""
    return int(read_metadata(path)["step"])


def load_newest(paths: Sequence[Path], load: Callable[[Path], T], then: str = "") -> tuple[Path, T]:
    """``load`` the newest of ``paths`` (oldest first) that reads intact; returns ``(path, loaded)``.

    Each damaged file passed over gets a warning naming it (``then`` is added to it: what the caller
    does with the file); one that is gone (deleted since it was listed: a training replaced it) is passed
    over silently. When none reads, the error of the newest damaged one is raised, or FileNotFoundError
    when every one is gone (list them again).
    """
    if not paths:
        raise FileNotFoundError("no checkpoint")
    errors: list[CheckpointError] = []
    for path in reversed(paths):
        try:
            loaded = load(path)
        except CheckpointError as error:
            errors.append(error)
            continue
        except FileNotFoundError:
            continue
        for error in errors:
            warnings.warn(f"{error}{then}; using the previous checkpoint {path.name} instead", stacklevel=2)
        return path, loaded
    if errors:
        raise errors[0]
    raise FileNotFoundError(f"every checkpoint listed is gone ({paths[-1].parent}): they were replaced while being read")


def load_weights_into(model: nn.Module, tensors: dict[str, Tensor], problem: str) -> None:
    """Copy ``tensors`` into ``model``; a clear one-line error listing every name or shape that does not fit.

    ``problem`` opens that error, e.g. ``"cannot initialize from runs/det"``.
    """
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
        raise CheckpointError(None, f"{problem}: the architectures differ: {shown}")
    device = next(iter(own.values())).device if own else torch.device("cpu")
    model.load_state_dict({name: tensor.to(device) for name, tensor in tensors.items()})
