"""Stage-1 trainers of the embedded model family (audio VAE, image VAE, image LDM)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from melfusion_testing import make_image, write_triplets

from melfusion.errors import MelfusionInputError
from melfusion.pipelines.melfusion import MeLFusionPipeline
from melfusion.recipes.embedded.components import ComponentTrainer, load_component_config


def _config(manifest, out, component="audio_vae", *extra):
    return load_component_config(
        None,
        [
            f"model.component={component}",
            "model.block_out_channels=[8, 16]",
            "model.latent_channels=4",
            "model.audio_seconds=1.28",
            "model.crop_frames=64",
            "model.image_size=16",
            f"data.train_manifest={manifest}",
            f"train.output_dir={out}",
            "train.batch_size=4",
            "train.max_steps=4",
            "train.checkpoint_every=0",
            "train.validate_every=0",
            "optim.warmup_steps=0",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_triplets(tmp_path_factory.mktemp("triplets"), n=4, seconds=1.5)


@pytest.mark.parametrize("component", ["audio_vae", "image_vae"])
def test_vae_overfits_and_exports_with_scaling_factor(manifest, tmp_path, component):
    cfg = _config(manifest, tmp_path / "run", component, "train.max_steps=60", "optim.lr=3e-3")
    trainer = ComponentTrainer(cfg)
    x = trainer.train_set.x
    assert x.shape == ((4, 1, 128, 64) if component == "audio_vae" else (4, 3, 16, 16))
    history = trainer.train()
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]
    path = trainer.export()
    vae = AutoencoderKL.from_pretrained(path)
    with torch.no_grad():
        z = vae.encode(x[:, :, :64] if component == "audio_vae" else x).latent_dist.mode()
    assert abs(float((z * vae.config.scaling_factor).std()) - 1.0) < 0.35  # unit-variance latents
    assert vae.config.scaling_factor != 1.0


def test_image_ldm_trains_on_frozen_vae_and_resumes_exactly(manifest, tmp_path):
    vae_run = ComponentTrainer(_config(manifest, tmp_path / "vae", "image_vae", "train.max_steps=2"))
    vae_run.train()
    vae_dir = vae_run.export()
    extra = (f"model.image_vae={vae_dir}", "model.block_out_channels=[16, 16]", "model.attention_head_dim=2")
    full = ComponentTrainer(_config(manifest, tmp_path / "full", "image_unet", *extra))
    frozen = {k: v.clone() for k, v in full.image_vae.state_dict().items()}
    full.train()
    assert all(torch.equal(frozen[k], v) for k, v in full.image_vae.state_dict().items())

    first = ComponentTrainer(_config(manifest, tmp_path / "split", "image_unet", *extra, "train.max_steps=2"))
    first.train()
    first.save_checkpoint()
    second = ComponentTrainer(_config(manifest, tmp_path / "split", "image_unet", *extra))
    second.train(resume="latest")
    a, b = full.accelerator.unwrap_model(full.net), second.accelerator.unwrap_model(second.net)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
    unet = UNet2DConditionModel.from_pretrained(second.export())
    assert list(unet.config.block_out_channels) == [16, 16]


def test_audio_vae_band_count_carries_into_the_music_preset(manifest, tmp_path):
    """model.n_mels sets the audio VAE's mel front end; the tiny music preset built on that VAE follows it."""
    from melfusion.models.tiny import build_tiny_components

    run = ComponentTrainer(
        _config(manifest, tmp_path / "vae", "audio_vae", "model.n_mels=32", "train.max_steps=1")
    )
    assert run.train_set.x.shape == (4, 1, 128, 32)
    run.train()
    vae_dir = run.export()
    parts = build_tiny_components(audio_seconds=1.28, image_size=16, audio_vae=vae_dir, channels=(16, 16))
    assert parts["vocoder"].config.n_mels == 32
    assert tuple(parts["unet"].config.sample_size) == (64, 16)  # 128 frames x 32 bands over 2x
    out = MeLFusionPipeline(**parts)(
        make_image(),
        "a calm piano",
        audio_length_in_s=1.28,
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    )
    assert out.audios.shape == (1, 20480) and np.isfinite(out.audios).all()
    default = build_tiny_components(audio_seconds=1.28, channels=(16, 16))
    assert default["vocoder"].config.n_mels == 64


def test_component_config_errors(manifest, tmp_path):
    with pytest.raises(MelfusionInputError, match="model.n_mels=33 must be a positive multiple"):
        _config(manifest, tmp_path, "audio_vae", "model.n_mels=33").validate()
    with pytest.raises(MelfusionInputError, match="model.n_mels=0 must be a positive multiple"):
        _config(manifest, tmp_path, "audio_vae", "model.n_mels=0").validate()
    with pytest.raises(MelfusionInputError, match="model.image_vae is not set"):
        _config(manifest, tmp_path, "image_unet").validate()
    with pytest.raises(MelfusionInputError, match="model.component must be one of"):
        _config(manifest, tmp_path, "music_vae").validate()
    with pytest.raises(MelfusionInputError, match="must be a list"):
        load_component_config(None, ["model.block_out_channels=8"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"id": "x", "image": "missing.png", "audio": "missing.wav", "text": "t"}) + "\n"
    )
    with pytest.raises(MelfusionInputError, match="no usable item"):
        ComponentTrainer(_config(bad, tmp_path / "run"))


def test_train_command_dispatches_component_configs(manifest, tmp_path, capsys):
    from melfusion.cli import main

    config = tmp_path / "vae.yaml"
    config.write_text(
        "trainer: component\nmodel:\n  component: image_vae\n  block_out_channels: [8, 8]\n"
        "  latent_channels: 4\n  image_size: 16\ntrain:\n  max_steps: 1\n  batch_size: 2\n"
        "  checkpoint_every: 1\n"
    )
    out = tmp_path / "run"
    assert (
        main(["train", "--config", str(config), f"data.train_manifest={manifest}", f"train.output_dir={out}"])
        == 0
    )
    assert (out / "final" / "config.json").is_file()
    assert "exported image_vae" in capsys.readouterr().out


def test_embedded_128_band_audio_vae_config_parses():
    from pathlib import Path

    config = load_component_config(
        Path(__file__).resolve().parents[3] / "configs" / "embedded" / "audio-vae-128.yaml"
    )
    config.validate()
    assert (config.model.component, config.model.n_mels) == ("audio_vae", 128)
    assert config.data.train_manifest.endswith("runs/corpus/train.jsonl")
