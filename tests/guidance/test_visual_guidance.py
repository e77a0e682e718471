from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from melfusion.guidance.capture import capture_decoder_self_attention
from melfusion.guidance.visual_guidance import (
    GuidanceCache,
    compute_visual_guidance,
    ddim_reconstruct,
    make_image_schedulers,
)
from melfusion.models.synapse import decoder_attention_names

SCHED = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)


def _image_unet(seed=0):
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=4,
        cross_attention_dim=12,
    ).eval()


def _smooth_unet(seed=0, damp=0.1):
    """A random UNet with its output layer damped: closer to the smooth ε_ψ of a trained model."""
    unet = _image_unet(seed)
    with torch.no_grad():
        unet.conv_out.weight.mul_(damp)
        unet.conv_out.bias.mul_(damp)
    return unet


def _latent(seed=2):
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_capture_records_every_decoder_self_attention_and_changes_nothing():
    unet = _image_unet()
    z, null = _latent(), torch.zeros(1, 3, 12)
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


@pytest.mark.parametrize(("prediction_type", "tol"), [("epsilon", 0.04), ("v_prediction", 0.08)])
def test_inversion_then_ddim_sampling_reconstructs_latent(prediction_type, tol):
    """DDIM inversion is exact up to the ε(z_{t_prev}, t) ≈ ε(z_t, t) approximation, so its error shrinks
    with the step count and with the smoothness of ε_ψ. A random UNet is far rougher than a trained one,
    so its output layer is damped ×0.1 here (measured: 2.5% ε / 5.2% v relative L2 at 50 steps)."""
    unet = _smooth_unet()
    z0, null = _latent(), torch.zeros(1, 3, 12)
    errors = {}
    for steps in (10, 50):
        forward, inverse = make_image_schedulers({**SCHED, "prediction_type": prediction_type})
        g = compute_visual_guidance(
            z0,
            unet=unet,
            scheduler=forward,
            inverse_scheduler=inverse,
            null_prompt_embeds=null,
            num_inference_steps=steps,
            capture="reverse",
            progress=False,
        )
        errors[steps] = ((g.reconstruction - z0).norm() / z0.norm()).item()
    assert errors[50] < tol, errors
    assert errors[50] < 0.6 * errors[10], errors  # converges with more steps
    zT = g.latents[-1]
    assert len(g.latents) == 51 and (zT - z0).norm() / z0.norm() > 0.02  # it did move
    again = ddim_reconstruct(
        zT, unet=unet, scheduler=forward, null_prompt_embeds=null, num_inference_steps=50
    )
    assert torch.allclose(again, g.reconstruction, atol=1e-5)


def test_capture_modes_cover_the_same_timesteps_and_agree_roughly():
    unet = _smooth_unet()
    forward, inverse = make_image_schedulers({**SCHED, "prediction_type": "epsilon"})
    z0, null = _latent(), torch.zeros(1, 3, 12)
    kw = dict(
        unet=unet,
        scheduler=forward,
        inverse_scheduler=inverse,
        null_prompt_embeds=null,
        num_inference_steps=10,
        progress=False,
    )
    rev = compute_visual_guidance(z0, capture="reverse", **kw)
    inv = compute_visual_guidance(z0, capture="inversion", **kw)
    forward.set_timesteps(10)
    assert rev.timesteps == inv.timesteps == [int(t) for t in forward.timesteps]
    assert len(rev.kv) == 10 and rev.num_layers == 4
    for step in (0, 5, 9):
        for layer in range(4):
            k_rev, k_inv = rev.kv[step][layer][0].flatten(), inv.kv[step][layer][0].flatten()
            assert torch.nn.functional.cosine_similarity(k_rev, k_inv, dim=0) > 0.95
    assert inv.reconstruction is None and rev.nbytes() > 0


def test_nearest_timestep_lookup():
    unet = _image_unet()
    forward, inverse = make_image_schedulers({**SCHED, "prediction_type": "epsilon"})
    g = compute_visual_guidance(
        _latent(),
        unet=unet,
        scheduler=forward,
        inverse_scheduler=inverse,
        null_prompt_embeds=torch.zeros(1, 3, 12),
        num_inference_steps=4,
        progress=False,
    )
    assert g.timesteps == [751, 501, 251, 1]
    assert g.index_for(751) == 0 and g.index_for(740) == 0 and g.index_for(0) == 3
    assert g.index_for(torch.tensor(380)) == 1 and g.index_for(370) == 2
    assert g.at(501) is g.kv[1]


def test_music_spacing_is_followed():
    fwd, inv = make_image_schedulers(
        {**SCHED, "prediction_type": "epsilon"}, {"timestep_spacing": "trailing"}
    )
    fwd.set_timesteps(4)
    inv.set_timesteps(4)
    assert [int(t) for t in fwd.timesteps] == [999, 749, 499, 249]
    assert sorted(int(t) for t in inv.timesteps) == [249, 499, 749, 999]


def test_lru_cache():
    cache = GuidanceCache(max_items=2)
    cache.put(("a",), 1)
    cache.put(("b",), 2)
    assert cache.get(("a",)) == 1
    cache.put(("c",), 3)  # evicts b (least recently used)
    assert cache.get(("b",)) is None and cache.get(("c",)) == 3
    assert cache.hits == 2 and cache.misses == 1 and len(cache) == 2


def test_batched_inversion_equals_one_image_at_a_time():
    from melfusion.guidance.visual_guidance import ddim_invert, ddim_invert_batch

    unet = _smooth_unet()
    z = torch.cat([_latent(), -_latent(), 0.5 * _latent()])
    null = torch.zeros(1, 3, 12)
    _, inverse = make_image_schedulers(SCHED)
    batch = ddim_invert_batch(
        z, unet=unet, inverse_scheduler=inverse, null_prompt_embeds=null, num_inference_steps=6
    )
    assert len(batch) == 3
    for i, traj in enumerate(batch):
        one = ddim_invert(
            z[i : i + 1], unet=unet, inverse_scheduler=inverse, null_prompt_embeds=null, num_inference_steps=6
        )
        assert torch.equal(traj.timesteps, one.timesteps)
        assert traj.latents.shape == one.latents.shape == (7, *z.shape[1:])
        assert torch.allclose(traj.latents, one.latents, atol=1e-5)
    with pytest.raises(ValueError, match="ddim_invert_batch"):
        ddim_invert(z, unet=unet, inverse_scheduler=inverse, null_prompt_embeds=null, num_inference_steps=6)
