"""Torch device names: one resolver for the commands, the pipelines' loaders and the embedders."""

from __future__ import annotations

from melfusion.errors import MelfusionInputError

DEVICE_CHOICES = "cpu, cuda, cuda:N, mps or auto"


def resolve_device(name: str | None = "auto") -> str:
    """``auto`` (or None) → cuda when available, else mps, else cpu; other names are checked, never guessed."""
    import torch

    name = "auto" if name is None else str(name)
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MelfusionInputError(f"device {name}: CUDA is not available on this machine (use cpu)")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise MelfusionInputError(f"device must be {DEVICE_CHOICES}, got {name!r}")
    return name
