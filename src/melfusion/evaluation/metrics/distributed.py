"""Cross-process reduction for metric states: torch.distributed when initialised, else local."""

from __future__ import annotations

from typing import Any


def distributed_world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when torch.distributed is absent or not initialised."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_distributed() -> bool:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return False
    return dist.is_available() and dist.is_initialized()


def gather_objects(obj: Any) -> list[Any]:
    """Every process's `obj`, in rank order (`all_gather_object`); `[obj]` when not distributed."""
    if not is_distributed():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
