"""TANGO checkpoint -> diffusers/transformers components, on a tiny checkpoint in TANGO's own layout."""

from __future__ import annotations

import json
import os

import pytest
import torch

from melfusion.convert.tango import (
    TANGO_UNET_CONFIGS,
    fuse_weight_norm,
    load_tango_music_components,
)
from melfusion.errors import MelfusionInputError

from ._convert_helpers import (
    SCALE_FACTOR,
    T5_WIDTH,
    TINY_UNET_CONFIG,
    build_t5_tokenizer,
    linked_copy,
    write_t5_folder,
)


def _sd(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_fixture_has_tangos_own_key_names(tango):
    """Guards the fixture itself: these are the names the original modules write."""
    path, _ = tango
    main, vae, stft = (_sd(path / f"pytorch_model_{p}.bin") for p in ("main", "vae", "stft"))
    for key in (
        "unet.conv_in.weight",
        "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        "text_encoder.shared.weight",
        "text_encoder.encoder.embed_tokens.weight",
        "text_encoder.encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    ):
        assert key in main
    for key in (
        "encoder.down.0.block.0.norm1.weight",
        "encoder.down.1.block.0.nin_shortcut.weight",
        "encoder.down.0.downsample.conv.weight",
        "encoder.mid.attn_1.q.weight",
        "decoder.up.2.block.1.conv2.weight",
        "decoder.up.1.upsample.conv.weight",
        "decoder.norm_out.weight",
        "quant_conv.weight",
        "vocoder.ups.0.weight",
        "vocoder.resblocks.14.convs2.2.bias",
        "vocoder.conv_post.weight",
    ):
        assert key in vae
    assert "decoder.up.0.upsample.conv.weight" not in vae  # up.0 is the full-resolution level
    assert vae["encoder.mid.attn_1.q.weight"].shape == (128, 128, 1, 1)
    assert set(stft) == {"mel_basis", "stft_fn.forward_basis", "stft_fn.inverse_basis"}


def test_components_and_configs(loaded_tango):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import SpeechT5HifiGan, T5EncoderModel

    c = loaded_tango
    assert set(c) == {"unet", "vae", "vocoder", "scheduler", "text_encoder", "tokenizer", "mel_config"}
    assert isinstance(c["unet"], UNet2DConditionModel)
    assert isinstance(c["vae"], AutoencoderKL)
    assert isinstance(c["vocoder"], SpeechT5HifiGan)
    assert isinstance(c["scheduler"], DDPMScheduler)
    assert isinstance(c["text_encoder"], T5EncoderModel)
    vae = c["vae"].config
    assert (vae.in_channels, vae.out_channels, vae.latent_channels) == (1, 1, 8)
    assert vae.scaling_factor == pytest.approx(SCALE_FACTOR)
    assert list(vae.block_out_channels) == [32, 64, 128]
    s = c["scheduler"].config
    assert (s.beta_schedule, s.beta_start, s.beta_end) == ("scaled_linear", 0.00085, 0.012)
    assert (s.num_train_timesteps, s.prediction_type) == (1000, "v_prediction")
    assert c["unet"].config.upcast_attention and c["unet"].config.use_linear_projection
    assert list(c["unet"].config.sample_size) == [256, 16]  # TANGO's latent, not the config's stale [32, 2]
    assert c["mel_config"] == {
        "sample_rate": 16000,
        "n_fft": 1024,
        "win_length": 1024,
        "hop_length": 160,
        "n_mels": 64,
        "fmin": 0.0,
        "fmax": 8000.0,
        "center": True,
    }
    v = c["vocoder"].config
    assert (v.model_in_dim, v.sampling_rate, v.upsample_initial_channel) == (64, 16000, 32)
    assert list(v.upsample_rates) == [5, 4, 2, 2, 2] and not v.normalize_before
    assert all(
        p.dtype == torch.float32 and not p.is_meta
        for k in ("unet", "vae", "vocoder")
        for p in c[k].parameters()
    )
    assert c["tokenizer"]("calm piano music").input_ids[-1] == 1  # T5 appends </s>


def test_weights_are_the_checkpoints(tango, loaded_tango):
    path, _ = tango
    main, vae = _sd(path / "pytorch_model_main.bin"), _sd(path / "pytorch_model_vae.bin")
    unet = loaded_tango["unet"].state_dict()
    assert len(unet) == sum(k.startswith("unet.") for k in main)  # every tensor loaded
    for key in unet:
        torch.testing.assert_close(unet[key], main["unet." + key], rtol=0, atol=0)
    text = loaded_tango["text_encoder"].state_dict()
    torch.testing.assert_close(text["shared.weight"], main["text_encoder.shared.weight"], rtol=0, atol=0)
    torch.testing.assert_close(
        text["encoder.block.1.layer.1.DenseReluDense.wo.weight"],
        main["text_encoder.encoder.block.1.layer.1.DenseReluDense.wo.weight"],
        rtol=0,
        atol=0,
    )
    d = loaded_tango["vae"].state_dict()
    pairs = {
        "encoder.conv_in.weight": "encoder.conv_in.weight",
        "encoder.down_blocks.1.resnets.0.conv_shortcut.weight": "encoder.down.1.block.0.nin_shortcut.weight",
        "encoder.down_blocks.0.downsamplers.0.conv.weight": "encoder.down.0.downsample.conv.weight",
        "decoder.up_blocks.0.resnets.1.conv2.weight": "decoder.up.2.block.1.conv2.weight",
        "decoder.up_blocks.0.upsamplers.0.conv.bias": "decoder.up.2.upsample.conv.bias",
        "decoder.conv_norm_out.weight": "decoder.norm_out.weight",
        "post_quant_conv.weight": "post_quant_conv.weight",
    }
    for new, old in pairs.items():
        torch.testing.assert_close(d[new], vae[old], rtol=0, atol=0)
    torch.testing.assert_close(
        d["encoder.mid_block.attentions.0.to_q.weight"], vae["encoder.mid.attn_1.q.weight"][:, :, 0, 0]
    )
    voc = loaded_tango["vocoder"].state_dict()
    torch.testing.assert_close(voc["conv_pre.weight"], vae["vocoder.conv_pre.weight"], rtol=0, atol=0)
    torch.testing.assert_close(voc["upsampler.3.weight"], vae["vocoder.ups.3.weight"], rtol=0, atol=0)
    torch.testing.assert_close(
        voc["resblocks.7.convs1.2.weight"], vae["vocoder.resblocks.7.convs1.2.weight"], rtol=0, atol=0
    )
    n_vocoder = sum(k.startswith("vocoder.") for k in vae)
    assert len(voc) == n_vocoder + 2  # + the unused mean/scale buffers
    assert len(d) == len(vae) - n_vocoder  # every VAE tensor mapped once


@torch.no_grad()
def test_outputs_match_the_original_modules(tango, loaded_tango):
    """Same numbers as TANGO's own modules: VAE decode/encode, vocoder, UNet, T5."""
    _, (ref_vae, _, ref_main) = tango
    c = loaded_tango
    g = torch.Generator().manual_seed(0)

    z = torch.randn(2, 8, 8, 16, generator=g)  # (B, C, T/4, M/4)
    mel = c["vae"].decode(z / c["vae"].config.scaling_factor).sample
    assert mel.shape == (2, 1, 32, 64)  # (B, 1, T, n_mels)
    torch.testing.assert_close(mel, ref_vae.decode_first_stage(z), atol=1e-4, rtol=1e-4)

    fbank = torch.randn(2, 1, 32, 64, generator=g)
    moments = c["vae"].quant_conv(c["vae"].encoder(fbank))
    torch.testing.assert_close(moments, ref_vae.encode_moments(fbank), atol=1e-4, rtol=1e-4)
    assert c["vae"].encode(fbank).latent_dist.mean.shape == (2, 8, 8, 16)

    wave = c["vocoder"](mel.squeeze(1))  # (B, T, n_mels) -> (B, ~T * hop)
    assert wave.shape == (2, 5152)  # AudioLDM's HiFi-GAN overshoots T * hop = 5120 by 32; callers trim
    torch.testing.assert_close(wave, ref_vae.decode_to_waveform(mel), atol=1e-5, rtol=1e-4)

    ids = torch.randint(0, 40, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    text = c["text_encoder"](input_ids=ids, attention_mask=mask).last_hidden_state
    assert text.shape == (2, 7, T5_WIDTH)
    torch.testing.assert_close(
        text, ref_main.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    )

    x = torch.randn(2, 8, 32, 4, generator=g)
    t = torch.tensor([10, 900])
    out = c["unet"](x, t, encoder_hidden_states=text, encoder_attention_mask=mask.bool()).sample
    assert out.shape == x.shape
    ref = ref_main.unet(x, t, encoder_hidden_states=text, encoder_attention_mask=mask.bool()).sample
    torch.testing.assert_close(out, ref)


def test_torch_dtype(tango, t5_dir):
    c = load_tango_music_components(tango[0], text_encoder=t5_dir, torch_dtype=torch.bfloat16)
    for key in ("unet", "vae", "vocoder", "text_encoder"):
        assert {p.dtype for p in c[key].parameters()} == {torch.bfloat16}


def test_safetensors_preferred_over_bin(tango, t5_dir, tmp_path):
    from safetensors.torch import save_file

    path = linked_copy(tango[0], tmp_path / "t")
    sd = _sd(tango[0] / "pytorch_model_vae.bin")
    sd["post_quant_conv.bias"] = torch.full_like(sd["post_quant_conv.bias"], 7.0)
    save_file({k: v.contiguous() for k, v in sd.items()}, path / "pytorch_model_vae.safetensors")
    c = load_tango_music_components(path, text_encoder=t5_dir)
    assert torch.all(c["vae"].post_quant_conv.bias == 7.0)


def test_text_encoder_weights_from_the_folder_when_not_in_main(tango, t5_dir, tmp_path):
    from transformers import T5EncoderModel

    path = linked_copy(tango[0], tmp_path / "t", skip=("pytorch_model_main.bin",))
    main = _sd(tango[0] / "pytorch_model_main.bin")
    torch.save({k: v for k, v in main.items() if k.startswith("unet.")}, path / "pytorch_model_main.bin")
    c = load_tango_music_components(path, text_encoder=t5_dir)
    folder = T5EncoderModel.from_pretrained(t5_dir)
    torch.testing.assert_close(c["text_encoder"].shared.weight, folder.shared.weight, rtol=0, atol=0)


@pytest.mark.parametrize(
    "missing",
    [
        "main_config.json",
        "vae_config.json",
        "stft_config.json",
        "pytorch_model_main.bin",
        "pytorch_model_vae.bin",
        "pytorch_model_stft.bin",
    ],
)
def test_missing_file_is_a_one_line_error(tango, tmp_path, missing):
    path = linked_copy(tango[0], tmp_path / "t", skip=(missing,))
    with pytest.raises(MelfusionInputError) as err:
        load_tango_music_components(path)
    msg = str(err.value)
    assert missing in msg and "pytorch_model_vae.bin" in msg and "\n" not in msg


def test_not_a_folder(tmp_path):
    with pytest.raises(MelfusionInputError, match="does not exist"):
        load_tango_music_components(tmp_path / "nope")


def _main_variant(tango, tmp_path, edit):
    path = linked_copy(tango[0], tmp_path / "t", skip=("pytorch_model_main.bin",))
    main = _sd(tango[0] / "pytorch_model_main.bin")
    edit(main)
    torch.save(main, path / "pytorch_model_main.bin")
    return path


def test_unexpected_and_missing_keys_are_errors(tango, t5_dir, tmp_path):
    def extra(sd):
        sd["unet.conv_in.extra"] = torch.zeros(1)

    with pytest.raises(MelfusionInputError, match=r"1 unexpected \(conv_in\.extra\)"):
        load_tango_music_components(_main_variant(tango, tmp_path / "a", extra), text_encoder=t5_dir)

    def drop(sd):
        del sd["unet.conv_out.bias"]

    with pytest.raises(MelfusionInputError, match=r"1 missing \(conv_out\.bias\)"):
        load_tango_music_components(_main_variant(tango, tmp_path / "b", drop), text_encoder=t5_dir)

    def group_in(sd):
        sd["group_in.0.weight"] = torch.zeros(512, 8)

    with pytest.raises(MelfusionInputError, match="group_in/group_out"):
        load_tango_music_components(_main_variant(tango, tmp_path / "c", group_in), text_encoder=t5_dir)


def test_unknown_vae_key_is_an_error(tango, t5_dir, tmp_path):
    path = linked_copy(tango[0], tmp_path / "t", skip=("pytorch_model_vae.bin",))
    sd = _sd(tango[0] / "pytorch_model_vae.bin")
    sd["encoder.down.0.block.0.temb_proj.weight"] = torch.zeros(32, 512)
    torch.save(sd, path / "pytorch_model_vae.bin")
    with pytest.raises(MelfusionInputError, match="temb_proj"):
        load_tango_music_components(path, text_encoder=t5_dir)


def test_unet_config_fallback_is_tangos_own_and_checked_against_weights(tango, t5_dir, tmp_path):
    # Without configs/diffusion_model_config.json the built-in full-size TANGO config is used;
    # it does not describe these narrow weights, so the shape check must refuse them.
    path = linked_copy(tango[0], tmp_path / "t", skip=("configs",))
    with pytest.raises(MelfusionInputError, match="built-in copy.*do not match its config"):
        load_tango_music_components(path, text_encoder=t5_dir)
    # ... and an explicit config (also accepted next to the checkpoint) fixes it.
    (path / "diffusion_model_config.json").write_text(json.dumps(TINY_UNET_CONFIG))
    unet = load_tango_music_components(path, text_encoder=t5_dir)["unet"]
    assert list(unet.config.block_out_channels) == [32, 64, 64, 64]


def test_text_encoder_width_must_match_unet(tango, tmp_path):
    from transformers import T5Config

    wide = write_t5_folder(tmp_path / "t5")
    cfg = T5Config.from_pretrained(wide)
    cfg.d_model = 48
    cfg.save_pretrained(wide)
    with pytest.raises(MelfusionInputError, match="48-d but the UNet cross-attends to 32-d"):
        load_tango_music_components(tango[0], text_encoder=wide)


def test_text_encoder_not_available_offline(tango, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MelfusionInputError, match="HF_HUB_OFFLINE=1.*--text-encoder"):
        load_tango_music_components(tango[0], text_encoder="melfusion-test/no-such-t5")


def test_fuse_weight_norm_matches_torch():
    conv = torch.nn.utils.weight_norm(torch.nn.ConvTranspose1d(8, 4, 6, 2))
    with torch.no_grad():
        conv.weight_g.mul_(torch.rand_like(conv.weight_g) + 0.5)
    sd = {f"ups.0.{k}": v for k, v in conv.state_dict().items()}
    fused = fuse_weight_norm(sd)
    assert set(fused) == {"ups.0.weight", "ups.0.bias"}
    torch.testing.assert_close(fused["ups.0.weight"], torch.nn.utils.remove_weight_norm(conv).weight.detach())


def test_builtin_unet_config_is_tangos_866m_unet():
    """Shapes and parameter count of the full-size config, without allocating it (meta device)."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(TANGO_UNET_CONFIGS["diffusion_model_config.json"])
    assert sum(p.numel() for p in unet.parameters()) == 865_933_768
    attn2 = unet.up_blocks[1].attentions[0].transformer_blocks[0].attn2
    assert attn2.to_k.weight.shape == (1280, 1024) and attn2.heads == 20


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MELFUSION_SLOW") != "1", reason="full-size config; set MELFUSION_SLOW=1")
@torch.no_grad()
def test_full_size_tango_unet_random_weights(tango, tmp_path):
    """The real 866M-parameter TANGO UNet, random weights, through the converter (built-in config)."""
    from diffusers import UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(TANGO_UNET_CONFIGS["diffusion_model_config.json"]).eval()
    assert sum(p.numel() for p in unet.parameters()) == 865_933_768
    assert unet.conv_in.weight.shape == (320, 8, 3, 3)
    assert unet.conv_out.weight.shape == (8, 320, 3, 3)
    widths = [b.attentions[0].transformer_blocks[0].attn2.to_k.weight.shape for b in unet.up_blocks[1:]]
    assert widths == [(1280, 1024), (640, 1024), (320, 1024)]
    x = torch.randn(1, 8, 256, 16)  # 10.24 s of TANGO latent
    text = torch.randn(1, 12, 1024)
    ref = unet(x, 999, encoder_hidden_states=text).sample
    assert ref.shape == x.shape

    # A FLAN-T5-large-wide (1024-d) but one-layer T5 stands in for the 341M-parameter encoder.
    t5_cfg = T5Config(
        vocab_size=64,
        d_model=1024,
        d_kv=64,
        d_ff=64,
        num_layers=1,
        num_heads=16,
        feed_forward_proj="gated-gelu",
    )
    t5_dir = tmp_path / "t5-1024"
    T5EncoderModel(t5_cfg).save_pretrained(t5_dir)
    build_t5_tokenizer().save_pretrained(t5_dir)
    main = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    main.update({f"text_encoder.{k}": v for k, v in T5EncoderModel(t5_cfg).state_dict().items()})
    path = linked_copy(tango[0], tmp_path / "tango-full", skip=("configs", "pytorch_model_main.bin"))
    torch.save(main, path / "pytorch_model_main.bin")
    del main
    c = load_tango_music_components(path, text_encoder=t5_dir)
    torch.testing.assert_close(c["unet"](x, 999, encoder_hidden_states=text).sample, ref)


class _Payload:  # any non-tensor global: weights_only loading must refuse to build it
    pass


def test_bin_files_are_loaded_weights_only(tango, t5_dir, tmp_path):
    stft = _sd(tango[0] / "pytorch_model_stft.bin")
    legacy = linked_copy(tango[0], tmp_path / "legacy", skip=("pytorch_model_stft.bin",))
    torch.save(stft, legacy / "pytorch_model_stft.bin", _use_new_zipfile_serialization=False)
    assert load_tango_music_components(legacy, text_encoder=t5_dir)["mel_config"]["n_mels"] == 64

    evil = linked_copy(tango[0], tmp_path / "evil", skip=("pytorch_model_stft.bin",))
    torch.save({**stft, "payload": _Payload()}, evil / "pytorch_model_stft.bin")
    with pytest.raises(MelfusionInputError, match="not a plain tensor state dict"):
        load_tango_music_components(evil, text_encoder=t5_dir)
