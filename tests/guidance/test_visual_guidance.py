from __future__ import annotations

import pytest
import torch
from melfusion_testing import tiny_image_unet

from melfusion.guidance.capture import capture_decoder_self_attention
from melfusion.guidance.visual_guidance import GuidanceCache, VisualGuidance, stack_guidance
from melfusion.models.synapse import decoder_attention_names


def _guidance(timesteps, n_tokens=16, width=8, fill=None):
    kv = [
        [(torch.full((1, n_tokens, width), float(fill if fill is not None else t)),) * 2] for t in timesteps
    ]
    return VisualGuidance(timesteps=list(timesteps), kv=kv)


def test_capture_records_every_decoder_self_attention_and_changes_nothing():
    unet = tiny_image_unet()
    z, null = torch.randn(1, 4, 8, 8), torch.zeros(1, 3, 12)
    stock = unet(z, 100, encoder_hidden_states=null).sample
    before = dict(unet.attn_processors)
    with capture_decoder_self_attention(unet) as store:
        out = unet(z, 100, encoder_hidden_states=null).sample
    assert torch.equal(out, stock)
    assert len(store) == len(decoder_attention_names(unet, "attn1")) == 4
    # up_blocks[0] runs at 2×2 tokens, up_blocks[1] at 4×4; width 32
    assert [tuple(k.shape) for k, _ in store] == [(1, 4, 32), (1, 4, 32), (1, 16, 32), (1, 16, 32)]
    attn = unet.get_submodule(decoder_attention_names(unet, "attn1")[0].removesuffix(".processor"))
    assert store[0][0].shape[-1] == attn.to_k.out_features
    assert {type(p) for p in unet.attn_processors.values()} == {type(p) for p in before.values()}


def test_nearest_timestep_lookup():
    g = _guidance([751, 501, 251, 1])
    assert g.index_for(751) == 0 and g.index_for(740) == 0 and g.index_for(0) == 3
    assert g.index_for(torch.tensor(380)) == 1 and g.index_for(370) == 2
    assert g.at(501) is g.kv[1]


def test_stack_guidance_puts_images_on_the_batch_axis():
    a, b = _guidance([10, 5], fill=1.0), _guidance([10, 5], fill=2.0)
    ((k, v),) = stack_guidance([a, b], 10)
    assert k.shape == (2, 16, 8) and torch.equal(k[:, 0, 0], torch.tensor([1.0, 2.0]))


def test_cache_is_bounded_in_bytes_and_evicts_least_recently_used():
    one = _guidance([3, 2, 1]).nbytes()  # 3 steps × K, V × 16 × 8 float32
    assert one == 3 * 2 * 16 * 8 * 4
    cache = GuidanceCache(max_bytes=2 * one)
    cache.put(("a",), _guidance([3, 2, 1]))
    cache.put(("b",), _guidance([3, 2, 1]))
    assert cache.get(("a",)) is not None
    cache.put(("c",), _guidance([3, 2, 1]))  # over budget: evicts b (least recently used)
    assert cache.get(("b",)) is None and cache.get(("c",)) is not None
    assert cache.hits == 2 and cache.misses == 1 and len(cache) == 2 and cache.nbytes == 2 * one
    cache.put(("big",), _guidance(range(10)))  # larger than the whole budget: not kept, nothing evicted
    assert cache.get(("big",)) is None and len(cache) == 2
    GuidanceCache(max_bytes=0).put(("a",), _guidance([1]))  # disabled: no error
    with pytest.raises(ValueError, match="max_bytes"):
        GuidanceCache(max_bytes=-1)


def test_cache_keeps_entries_on_the_cpu_by_default():
    g = _guidance([2, 1])
    cache = GuidanceCache()
    cache.put(("a",), g)
    assert cache.get(("a",)).kv[0][0][0].device.type == "cpu"
    keep = GuidanceCache(device=None)
    keep.put(("a",), g)
    assert keep.get(("a",)) is g  # kept as computed
