"""The image branch's results: per-timestep decoder self-attention K/V of the image LDM for one image
(:class:`VisualGuidance`, computed by :class:`melfusion.guidance.conditioner.ImageConditioner`).

The image branch never sees the music latent, so its features depend only on (image, timesteps): they are
computed once and reused across CFG branches, samples and calls (:class:`GuidanceCache`)."""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class VisualGuidance:
    """Per-timestep decoder self-attention K/V of the image LDM for one image.

    kv[i][l] = (K, V), each (1, N_l, C_l), captured at ``timesteps[i]`` (descending, the sampling order).
    ``latents`` holds the inverted trajectory z^I_{t} (ascending noise, first = clean latent)."""

    timesteps: list[int]
    kv: list[list[tuple[torch.Tensor, torch.Tensor]]] = field(repr=False)
    latents: list[torch.Tensor] = field(default_factory=list, repr=False)
    reconstruction: torch.Tensor | None = field(
        default=None, repr=False
    )  # z^I_0 after re-sampling (capture="reverse" only)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._sorted = sorted(range(len(self.timesteps)), key=lambda i: self.timesteps[i])
        self._sorted_t = [self.timesteps[i] for i in self._sorted]

    @property
    def num_layers(self) -> int:
        return len(self.kv[0]) if self.kv else 0

    def index_for(self, timestep: int | float | torch.Tensor) -> int:
        """Index of the captured timestep nearest to ``timestep`` (exact when the schedules agree)."""
        t = float(timestep.item() if isinstance(timestep, torch.Tensor) else timestep)
        pos = bisect.bisect_left(self._sorted_t, t)
        cands = [p for p in (pos - 1, pos) if 0 <= p < len(self._sorted_t)]
        best = min(cands, key=lambda p: abs(self._sorted_t[p] - t))
        return self._sorted[best]

    def at(self, timestep: int | float | torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.kv[self.index_for(timestep)]

    def nbytes(self) -> int:
        n = sum(
            k.numel() * k.element_size() + v.numel() * v.element_size() for step in self.kv for k, v in step
        )
        extra = [*self.latents, *([self.reconstruction] if self.reconstruction is not None else [])]
        return n + sum(z.numel() * z.element_size() for z in extra)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> VisualGuidance:
        kv = [
            [(k.to(device=device, dtype=dtype), v.to(device=device, dtype=dtype)) for k, v in s]
            for s in self.kv
        ]
        rec = self.reconstruction.to(device=device) if self.reconstruction is not None else None
        return VisualGuidance(self.timesteps, kv, self.latents, rec, dict(self.meta))


def stack_guidance(
    guidances: list[VisualGuidance],
    timestep: int | float | torch.Tensor,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (K, V) of one timestep with the images stacked on the batch axis: (B_img, N_l, C_l), on
    ``device`` / ``dtype`` (guidances may live on different devices, e.g. one from the CPU cache)."""
    steps = [[(k.to(device, dtype), v.to(device, dtype)) for k, v in g.at(timestep)] for g in guidances]
    if len(steps) == 1:
        return steps[0]
    return [
        (torch.cat([s[layer][0] for s in steps]), torch.cat([s[layer][1] for s in steps]))
        for layer in range(len(steps[0]))
    ]


class GuidanceCache:
    """LRU of :class:`VisualGuidance` keyed by (image hash, grid, capture, model), bounded in bytes.

    ``max_bytes``: the total size kept (an entry larger than it is not kept; 0 disables the cache).
    ``device``: where entries are kept ("cpu" by default, so a cached capture holds no accelerator memory;
    None keeps them where they were computed). A 50-step SD-2.1 capture in fp16 is about 3 GB."""

    def __init__(self, max_bytes: int = 4 * 2**30, device: torch.device | str | None = "cpu"):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.device = device
        self._items: OrderedDict[tuple, VisualGuidance] = OrderedDict()
        self._sizes: dict[tuple, int] = {}
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(self._sizes.values())

    def get(self, key: tuple) -> VisualGuidance | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key: tuple, value: VisualGuidance) -> None:
        size = value.nbytes()
        if size > self.max_bytes:
            return
        if self.device is not None:
            value = value.to(self.device)
        self.pop(key)
        self._items[key] = value
        self._sizes[key] = size
        while self.nbytes > self.max_bytes:
            old, _ = self._items.popitem(last=False)
            del self._sizes[old]

    def pop(self, key: tuple) -> None:
        if self._items.pop(key, None) is not None:
            del self._sizes[key]

    def clear(self) -> None:
        self._items.clear()
        self._sizes.clear()

    def __len__(self) -> int:
        return len(self._items)
