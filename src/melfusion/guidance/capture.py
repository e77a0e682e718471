"""Capture of the image UNet's decoder self-attention K/V through attention processors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from melfusion.models.attention_processor import attention_with_kv_hook
from melfusion.models.synapse import decoder_attention_names


class KVCaptureProcessor:
    """Stock attention that also records the projected K, V (B, N, C) into ``store[layer]``."""

    def __init__(self, store: list, layer: int, dtype: torch.dtype | None = None):
        self.store = store
        self.layer = layer
        self.dtype = dtype

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        def record(key: torch.Tensor, value: torch.Tensor, _mask) -> tuple[torch.Tensor, torch.Tensor]:
            dt = self.dtype or key.dtype
            self.store[self.layer] = (key.detach().to(dt), value.detach().to(dt))
            return key, value

        return attention_with_kv_hook(
            attn, hidden_states, encoder_hidden_states, attention_mask, temb, record
        )


@contextmanager
def capture_decoder_self_attention(
    unet: UNet2DConditionModel, dtype: torch.dtype | None = None
) -> Iterator[list[tuple[torch.Tensor, torch.Tensor] | None]]:
    """Within the block, every forward of ``unet`` fills the yielded list with one (K, V) per decoder
    self-attention layer (overwritten by each forward; copy it out between calls). The previous
    processors are restored on exit."""
    names = decoder_attention_names(unet, "attn1")
    previous = dict(unet.attn_processors)
    store: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(names)
    procs = dict(previous)
    for i, name in enumerate(names):
        procs[name] = KVCaptureProcessor(store, i, dtype)
    unet.set_attn_processor(procs)
    try:
        yield store
    finally:
        unet.set_attn_processor(previous)
