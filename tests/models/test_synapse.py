from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0

from melfusion.models.attention_processor import VISUAL_FEATURES, KVHookAttnProcessor
from melfusion.models.synapse import (
    SynapseAttnProcessor,
    SynapseMismatchError,
    SynapseNotInstalledError,
    VisualSynapse,
    decoder_attention_names,
    decoder_layer_widths,
    pool_tokens_to_mask,
)


def _unet(channels=(16, 32, 32), cross=24, seed=0, sample=(16, 8), in_ch=8):
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample,
        in_channels=in_ch,
        out_channels=in_ch,
        block_out_channels=channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=4,
        cross_attention_dim=cross,
    ).eval()


def _features(widths, n_tokens=(20, 20, 7, 7), batch_img=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch_img, n, w, generator=g), torch.randn(batch_img, n, w, generator=g))
        for n, w in zip(n_tokens, widths)
    ]


@pytest.fixture
def pair():
    music = _unet(seed=0)
    image = _unet(seed=1, cross=12, sample=8, in_ch=4)
    return music, image


def _inputs(batch=2, seq=6, cross=24):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(batch, 8, 16, 8, generator=g)
    ctx = torch.randn(batch, seq, cross, generator=g)
    mask = torch.ones(batch, seq, dtype=torch.bool)
    mask[0, 4:] = False
    return x, ctx, mask


def test_layer_discovery(pair):
    music, image = pair
    names = decoder_attention_names(music, "attn2")
    assert len(names) == 4 and all(n.startswith("up_blocks.") and ".attn2." in n for n in names)
    assert decoder_layer_widths(music, "attn2") == decoder_layer_widths(image, "attn1") == [32, 32, 32, 32]


def test_alpha_zero_is_exactly_stock_attention(pair):
    music, image = pair
    x, ctx, mask = _inputs()
    stock = music(x, 500, encoder_hidden_states=ctx, encoder_attention_mask=mask).sample
    syn = VisualSynapse.from_unets(music, image)
    assert torch.all(syn.alphas() == 0)
    syn.install(music)
    kw = syn.attention_kwargs(_features(syn.config.layer_widths), torch.tensor([0, 0]))
    fused = music(
        x, 500, encoder_hidden_states=ctx, encoder_attention_mask=mask, cross_attention_kwargs=kw
    ).sample
    assert torch.equal(stock, fused)


def test_nonzero_alpha_changes_only_rows_with_an_image(pair):
    music, image = pair
    x, ctx, mask = _inputs()
    stock = music(x, 500, encoder_hidden_states=ctx, encoder_attention_mask=mask).sample
    syn = VisualSynapse.from_unets(music, image)
    syn.set_alphas(0.15)
    assert torch.allclose(syn.alphas(), torch.full((4,), 0.15))
    syn.install(music)
    kw = syn.attention_kwargs(_features(syn.config.layer_widths), torch.tensor([-1, 0]))
    fused = music(
        x, 500, encoder_hidden_states=ctx, encoder_attention_mask=mask, cross_attention_kwargs=kw
    ).sample
    assert torch.equal(fused[0], stock[0])  # row without an image: untouched
    assert (fused[1] - stock[1]).abs().max() > 1e-4
    again = music(
        x, 500, encoder_hidden_states=ctx, encoder_attention_mask=mask
    ).sample  # no features → stock
    assert torch.equal(again, stock)


def test_install_remove_roundtrip(pair):
    music, image = pair
    syn = VisualSynapse.from_unets(music, image)
    syn.install(music)
    assert VisualSynapse.is_installed(music)
    procs = music.attn_processors
    assert sum(isinstance(p, SynapseAttnProcessor) for p in procs.values()) == 4
    # every other layer runs the stock computation through a processor that takes the synapse's kwarg
    others = [procs[n] for n in procs if not (n.startswith("up_blocks.") and ".attn2." in n)]
    assert len(others) == len(procs) - 4 and all(isinstance(p, KVHookAttnProcessor) for p in others)
    VisualSynapse.remove(music)
    assert not VisualSynapse.is_installed(music)
    assert all(isinstance(p, AttnProcessor2_0) for p in music.attn_processors.values())


def test_mixing_follows_eq5_eq6(pair):
    music, image = pair
    syn = VisualSynapse.from_unets(music, image)
    syn.set_alphas([0.1, -0.05, 0.19, 0.0])
    proc = SynapseAttnProcessor(syn, 2)
    kv = _features(syn.config.layer_widths, batch_img=1)
    kw = syn.attention_kwargs(kv, torch.tensor([0]), torch.ones(1, 5, dtype=torch.bool))
    key, value = torch.randn(1, 5, 32), torch.randn(1, 5, 32)
    k2, v2 = proc._mix(kw[VISUAL_FEATURES], key, value, None)
    k_img = F.adaptive_avg_pool1d(kv[2][0].transpose(1, 2), 5).transpose(1, 2)
    a = syn.alpha(2)
    assert torch.allclose(k2, a * k_img + (1 - a) * key, atol=1e-6)
    v_img = F.adaptive_avg_pool1d(kv[2][1].transpose(1, 2), 5).transpose(1, 2)
    assert torch.allclose(v2, a * v_img + (1 - a) * value, atol=1e-6)


def test_pooling_fills_only_valid_tokens():
    tokens = torch.arange(2 * 12 * 3, dtype=torch.float32).reshape(2, 12, 3)
    valid = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    index = torch.tensor([1, 0, -1])
    out = pool_tokens_to_mask(tokens, index, valid)
    assert out.shape == (3, 6, 3)
    expect0 = F.adaptive_avg_pool1d(tokens[1].T[None], 4)[0].T
    assert torch.allclose(out[0, :4], expect0) and torch.all(out[0, 4:] == 0)
    expect1 = tokens[0].reshape(6, 2, 3).mean(1)  # 12 → 6 tokens: pairs
    assert torch.allclose(out[1], expect1)
    assert torch.all(out[2] == 0)  # no image


def test_mask_read_from_unet_attention_bias(pair):
    """Without an explicit text mask the processor uses the UNet's additive bias (0 valid, -1e4 masked)."""
    music, image = pair
    x, ctx, mask = _inputs()
    syn = VisualSynapse.from_unets(music, image)
    syn.set_alphas(0.1)
    syn.install(music)
    feats = _features(syn.config.layer_widths)
    kw = syn.attention_kwargs(feats, torch.tensor([0, 0]), mask)
    explicit = music(
        x, 10, encoder_hidden_states=ctx, encoder_attention_mask=mask, cross_attention_kwargs=kw
    ).sample
    kw = syn.attention_kwargs(feats, torch.tensor([0, 0]))
    implicit = music(
        x, 10, encoder_hidden_states=ctx, encoder_attention_mask=mask, cross_attention_kwargs=kw
    ).sample
    assert torch.equal(explicit, implicit)


def test_width_mismatch_is_a_clear_error():
    music = _unet(channels=(16, 32, 32))
    image = _unet(channels=(16, 32, 48), cross=12, sample=8, in_ch=4)
    with pytest.raises(SynapseMismatchError, match="decoder layer 0: music cross-attention is 32 wide"):
        VisualSynapse.from_unets(music, image)
    other = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=4,
        cross_attention_dim=12,
    )
    with pytest.raises(
        SynapseMismatchError, match="4 decoder cross-attention layers but the image UNet has 2"
    ):
        VisualSynapse.from_unets(music, other)


def test_alpha_sharing_and_safetensors_roundtrip(pair, tmp_path):
    music, image = pair
    assert VisualSynapse.from_unets(music, image).alpha_logits.numel() == 4
    assert VisualSynapse.from_unets(music, image, alpha_sharing="block").alpha_logits.numel() == 2
    glob = VisualSynapse.from_unets(music, image, alpha_sharing="global")
    assert glob.alpha_logits.numel() == 1
    syn = VisualSynapse.from_unets(music, image, rho=4.0)
    syn.set_alphas([0.2, -0.1, 0.05, 0.24])
    syn.save_pretrained(tmp_path / "synapse")
    assert (tmp_path / "synapse" / "diffusion_pytorch_model.safetensors").exists()
    loaded = VisualSynapse.from_pretrained(tmp_path / "synapse")
    assert loaded.config.rho == 4.0
    assert torch.equal(loaded.alphas(), syn.alphas())
    with pytest.raises(ValueError, match="< 1/rho"):
        syn.set_alphas(0.3)


def test_gradients_reach_alpha(pair):
    music, image = pair
    x, ctx, mask = _inputs()
    syn = VisualSynapse.from_unets(music, image)
    syn.install(music)
    kw = syn.attention_kwargs(_features(syn.config.layer_widths), torch.tensor([0, 0]), mask)
    music(
        x, 10, encoder_hidden_states=ctx, encoder_attention_mask=mask, cross_attention_kwargs=kw
    ).sample.square().mean().backward()
    assert syn.alpha_logits.grad is not None and torch.all(syn.alpha_logits.grad != 0)


# ---------------------------------------------------------------- image projection (option, not in the paper)
def test_image_projection_starts_as_eq5_eq6_and_learns(pair):
    music, image = pair
    x, ctx, mask = _inputs()
    kv = _features(decoder_layer_widths(music, "attn2"))
    plain = VisualSynapse.from_unets(music, image, rho=2.0)
    plain.set_alphas(0.3)
    plain.install(music)
    kw = plain.attention_kwargs(kv, torch.tensor([0, 0]), mask)
    want = music(
        x, 10, encoder_hidden_states=ctx, encoder_attention_mask=mask, cross_attention_kwargs=kw
    ).sample
    assert plain.projection_parameters() == []

    proj = VisualSynapse.from_config(plain.config, image_projection=True)
    proj.set_alphas(0.3)
    assert len(proj.image_k_proj) == len(proj.image_v_proj) == 4
    assert len(proj.projection_parameters()) == 16  # weight + bias, K and V, 4 layers
    proj.install(music)
    kw = proj.attention_kwargs(kv, torch.tensor([0, 0]), mask)
    got = music(
        x, 10, encoder_hidden_states=ctx, encoder_attention_mask=mask, cross_attention_kwargs=kw
    ).sample
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)  # identity at init

    got.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in proj.projection_parameters())
    with torch.no_grad():
        proj.image_v_proj[0].weight.mul_(3.0)
    moved = music(
        x, 10, encoder_hidden_states=ctx, encoder_attention_mask=mask, cross_attention_kwargs=kw
    ).sample
    assert (moved - want).abs().max() > 1e-4


def test_image_projection_after_pooling_equals_projecting_every_token(pair):
    """The processor maps the S pooled tokens; that must equal mapping all N tokens and then pooling."""
    music, image = pair
    syn = VisualSynapse.from_unets(music, image, rho=2.0)
    syn = VisualSynapse.from_config(syn.config, image_projection=True)
    syn.set_alphas(0.3)
    torch.manual_seed(3)
    with torch.no_grad():
        for lin in [*syn.image_k_proj, *syn.image_v_proj]:
            lin.weight.normal_(std=0.3)
            lin.bias.normal_()
    layer = 1
    kv = _features(syn.config.layer_widths, batch_img=2)
    index = torch.tensor([1, -1, 0, 1])
    valid = torch.tensor([[1] * 5 + [0] * 2, [1] * 7, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2], dtype=torch.bool)
    kw = syn.attention_kwargs(kv, index, valid)
    width = syn.config.layer_widths[layer]
    key, value = torch.randn(4, 7, width), torch.randn(4, 7, width)
    k2, v2 = SynapseAttnProcessor(syn, layer)._mix(kw[VISUAL_FEATURES], key, value, None)
    k_all, v_all = (proj(t) for proj, t in zip((syn.image_k_proj[layer], syn.image_v_proj[layer]), kv[layer]))
    a = syn.alpha(layer)
    for got, mapped, text in ((k2, k_all, key), (v2, v_all, value)):
        want = pool_tokens_to_mask(mapped, index, valid)
        want = torch.where((index >= 0).view(4, 1, 1), a * want + (1 - a) * text, text)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_pooling_shared_rows_match_single_rows():
    """Rows with the same image and length (CFG branches, samples) are pooled once, identically."""
    tokens = torch.randn(2, 40, 6)
    valid = torch.tensor([[1] * 9 + [0], [1] * 9 + [0], [1] * 2 + [0] * 8, [1] * 9 + [0]], dtype=torch.bool)
    index = torch.tensor([0, 0, 0, 1])
    out = pool_tokens_to_mask(tokens, index, valid)
    for row in range(4):
        single = pool_tokens_to_mask(tokens, index[row : row + 1], valid[row : row + 1])
        assert torch.equal(out[row : row + 1], single)
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], out[3])


def test_image_projection_is_inert_at_alpha_zero_and_roundtrips(pair, tmp_path):
    music, image = pair
    x, ctx, mask = _inputs()
    stock = music(x, 500, encoder_hidden_states=ctx, encoder_attention_mask=mask).sample
    syn = VisualSynapse.from_unets(music, image)
    syn = VisualSynapse.from_config(syn.config, image_projection=True)
    with torch.no_grad():
        for lin in [*syn.image_k_proj, *syn.image_v_proj]:
            lin.weight.normal_()
    syn.install(music)
    kw = syn.attention_kwargs(_features(syn.config.layer_widths), torch.tensor([0, 0]))
    assert torch.equal(
        music(
            x, 500, encoder_hidden_states=ctx, encoder_attention_mask=mask, cross_attention_kwargs=kw
        ).sample,
        stock,
    )

    syn.save_pretrained(tmp_path / "synapse")
    loaded = VisualSynapse.from_pretrained(tmp_path / "synapse")
    assert loaded.config.image_projection is True
    for a, b in zip(loaded.projection_parameters(), syn.projection_parameters()):
        assert torch.equal(a, b)


def test_image_timestep_option(pair):
    music, image = pair
    syn = VisualSynapse.from_unets(music, image)
    t = torch.tensor([10, 500, 990])
    assert torch.equal(syn.image_timestep_for(t), t)  # paper: the music step's own timestep
    fixed = VisualSynapse.from_config(syn.config, image_timestep=200)
    assert torch.equal(fixed.image_timestep_for(t), torch.full_like(t, 200))
    assert int(fixed.image_timestep_for(torch.tensor(981))) == 200
    with pytest.raises(ValueError, match="image_timestep must be >= 0"):
        VisualSynapse.from_config(syn.config, image_timestep=-3)


def test_features_reach_only_the_synapse_and_diffusers_does_not_warn(pair, caplog):
    """diffusers hands cross_attention_kwargs to every layer and warns where a processor cannot take them."""
    music, image = pair
    x, ctx, mask = _inputs()
    syn = VisualSynapse.from_unets(music, image)
    syn.set_alphas(0.1)
    syn.install(music)
    kw = syn.attention_kwargs(_features(syn.config.layer_widths), torch.tensor([0, 0]), mask)
    with caplog.at_level("WARNING"):
        music(x, 10, encoder_hidden_states=ctx, encoder_attention_mask=mask, cross_attention_kwargs=kw)
    assert "are not expected" not in caplog.text
    assert syn.attention_kwargs(None) == {}


@pytest.mark.parametrize(
    ("remove", "names"),
    [
        (lambda unet: unet.set_attn_processor(AttnProcessor2_0()), "set_attn_processor()"),
        (lambda unet: unet.set_attention_slice(1), "enable_attention_slicing()"),
        (lambda unet: unet.fuse_qkv_projections(), "fuse_qkv_projections()"),
    ],
)
def test_removed_synapse_is_a_one_line_error_naming_the_call(pair, remove, names):
    music, image = pair
    syn = VisualSynapse.from_unets(music, image)
    syn.install(music)
    syn.check_installed(music)  # installed: no error
    remove(music)
    with pytest.raises(SynapseNotInstalledError) as err:
        syn.check_installed(music)
    message = str(err.value)
    assert "\n" not in message and names in message and "pipe.synapse.install(pipe.unet)" in message
    if names != "fuse_qkv_projections()":  # fused projections cannot be un-fused by a processor swap
        syn.install(music)
        syn.check_installed(music)


def test_set_default_attn_processor_refuses_and_the_synapse_survives(pair):
    music, image = pair
    syn = VisualSynapse.from_unets(music, image)
    syn.install(music)
    with pytest.raises(ValueError, match="set_default_attn_processor"):
        music.set_default_attn_processor()  # diffusers refuses processors it does not know
    syn.check_installed(music)


def test_another_synapse_installed_is_refused(pair):
    music, image = pair
    first, second = VisualSynapse.from_unets(music, image), VisualSynapse.from_unets(music, image)
    first.install(music)
    second.install(music)
    second.check_installed(music)
    with pytest.raises(SynapseNotInstalledError, match="another synapse"):
        first.check_installed(music)


def test_null_prompt_embedding_is_stored_with_the_weights(pair, tmp_path):
    music, image = pair
    syn = VisualSynapse.from_unets(music, image)
    assert syn.image_null_prompt_embeds is None
    syn.save_pretrained(tmp_path / "old")
    assert VisualSynapse.from_pretrained(tmp_path / "old").image_null_prompt_embeds is None  # old folders
    null = torch.randn(1, 7, 12)
    syn.store_image_null_prompt(null)
    assert syn.config.image_null_prompt_shape == [1, 7, 12]
    syn.save_pretrained(tmp_path / "new")
    loaded = VisualSynapse.from_pretrained(tmp_path / "new")
    assert torch.equal(loaded.image_null_prompt_embeds, null)
    with pytest.raises(ValueError, match=r"\(1, S, D\)"):
        syn.store_image_null_prompt(torch.zeros(2, 7, 12))
