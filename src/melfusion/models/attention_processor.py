"""Attention with a key/value hook: the one attention computation the synapse and the image-feature capture
share. ``attention_with_kv_hook`` is diffusers' ``AttnProcessor2_0`` with one extension point; with no hook it
is the stock computation op for op (tested bit-exact).

``VISUAL_FEATURES`` names the ``cross_attention_kwargs`` entry that carries the visual synapse's features
(the route IP-Adapter's masks take in diffusers). diffusers hands every ``cross_attention_kwargs`` entry to
every attention layer and warns where a processor does not take it, so the layers that do not mix image
features run :class:`KVHookAttnProcessor`, which takes the entry and ignores it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

VISUAL_FEATURES = "visual_features"

KVHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


def attention_with_kv_hook(
    attn: Attention,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    temb: torch.Tensor | None = None,
    kv_hook: KVHook | None = None,
) -> torch.Tensor:
    """diffusers' ``AttnProcessor2_0`` with one extension point: ``kv_hook(key, value, mask_bias)`` sees
    (and may replace) the projected keys/values (B, S, inner_dim) before the head split. With
    ``kv_hook=None`` the computation is the stock one, op for op."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        batch_size, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

    batch_size, sequence_length, _ = (
        hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
    )
    mask_bias = attention_mask  # (B, 1, S) additive bias as built by UNet2DConditionModel, or None
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

    query = attn.to_q(hidden_states)
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    key = attn.to_k(encoder_hidden_states)  # (B, S, inner)
    value = attn.to_v(encoder_hidden_states)  # (B, S, inner)
    if kv_hook is not None:
        key, value = kv_hook(key, value, mask_bias)

    inner_dim = key.shape[-1]
    head_dim = inner_dim // attn.heads
    query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    hidden_states = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
    )  # (B, heads, N, head_dim)
    hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
    hidden_states = hidden_states.to(query.dtype)
    hidden_states = attn.to_out[0](hidden_states)
    hidden_states = attn.to_out[1](hidden_states)
    if input_ndim == 4:
        hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
    if attn.residual_connection:
        hidden_states = hidden_states + residual
    return hidden_states / attn.rescale_output_factor


class KVHookAttnProcessor:
    """Stock scaled-dot-product attention that accepts (and ignores) the synapse's ``visual_features``."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        visual_features: object | None = None,
    ) -> torch.Tensor:
        return attention_with_kv_hook(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def accepts_visual_features(processor: object) -> bool:
    """True when diffusers would pass ``visual_features`` to this processor (it filters by signature)."""
    return callable(processor) and VISUAL_FEATURES in inspect.signature(processor.__call__).parameters
