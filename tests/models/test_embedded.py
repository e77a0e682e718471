"""The embedded default: packing a trained folder, loading it, and the shipped weights themselves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from melfusion_testing import make_image

from melfusion.loading import load_embedded_pipeline, load_pipeline_folder
from melfusion.models.embedded import (
    HALF_PARTS,
    TEXT_PARTS,
    embedded_model_dir,
    is_packed_folder,
    pack_embedded,
)

MAX_SHIPPED_MIB = 40


def _run(pipe, steps=3):
    return pipe(
        make_image(1),
        "a calm piano song",
        num_inference_steps=steps,
        audio_length_in_s=0.64,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        progress=False,
    )


def test_pack_then_load_matches_the_trained_pipeline(tmp_path):
    from melfusion.models.tiny import build_tiny_components
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    pipe = MeLFusionPipeline(**build_tiny_components(pretrained_text_encoder=True, image_size=16))
    pipe.synapse.alpha_logits.data.fill_(0.5)  # a visible α
    pipe.save_pretrained(tmp_path / "trained", safe_serialization=True)
    packed = pack_embedded(tmp_path / "trained", tmp_path / "packed", {"version": "test"})
    names = {p.name for p in packed.iterdir()}
    assert not names & set(TEXT_PARTS)  # MiniLM comes from its package, not the folder
    assert json.loads((packed / "embedded.json").read_text())["version"] == "test"
    for cfg in [packed / "model_index.json", *packed.glob("*/*config.json")]:
        assert "_name_or_path" not in json.loads(cfg.read_text()), cfg  # no build-machine paths
    from safetensors.torch import load_file

    for part in HALF_PARTS:
        (f,) = (packed / part).glob("*.safetensors")
        assert {v.dtype for v in load_file(f).values()} == {torch.float16}
    loaded = load_pipeline_folder(packed)
    assert loaded.unet.dtype == torch.float32
    assert torch.equal(loaded.synapse.alpha_logits, pipe.synapse.alpha_logits)
    a, b = _run(pipe).audios, _run(loaded).audios
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.02  # float16 storage rounding only


def test_generate_model_flag_accepts_a_packed_folder(tmp_path):
    """`--model` on a packed folder (a copy of the embedded model) loads it with MiniLM from its package."""
    from melfusion.loading import load_pipeline
    from melfusion.models.tiny import build_tiny_components
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    pipe = MeLFusionPipeline(**build_tiny_components(pretrained_text_encoder=True, image_size=16))
    pipe.save_pretrained(tmp_path / "trained", safe_serialization=True)
    packed = pack_embedded(tmp_path / "trained", tmp_path / "packed")
    assert is_packed_folder(packed) and not is_packed_folder(tmp_path / "trained")
    assert not is_packed_folder(tmp_path)  # no model_index.json
    loaded, name = load_pipeline(str(packed), "cpu")
    assert loaded.unet.dtype == torch.float32 and name == str(packed.resolve())
    assert np.asarray(_run(loaded).audios).shape == np.asarray(_run(pipe).audios).shape


def test_pack_records_the_default_image_guidance_scale(tmp_path):
    from melfusion.models.tiny import build_tiny_components
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    pipe = MeLFusionPipeline(**build_tiny_components(pretrained_text_encoder=True, image_size=16))
    assert pipe.config.default_image_guidance_scale is None  # paper models: two-branch CFG
    pipe.save_pretrained(tmp_path / "trained", safe_serialization=True)
    packed = pack_embedded(tmp_path / "trained", tmp_path / "packed", image_guidance_scale=14)
    assert load_pipeline_folder(packed).config.default_image_guidance_scale == 14.0
    plain = pack_embedded(tmp_path / "trained", tmp_path / "plain")
    assert load_pipeline_folder(plain).config.default_image_guidance_scale is None


def test_pack_rejects_a_folder_that_is_not_a_pipeline(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a pipeline folder"):
        pack_embedded(tmp_path, tmp_path / "out")


@pytest.mark.skipif(embedded_model_dir() is None, reason="this build ships no trained embedded model")
def test_shipped_weights_load_and_make_sound():
    folder = embedded_model_dir()
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
    assert size <= MAX_SHIPPED_MIB
    pipe, name = load_embedded_pipeline()
    assert "embedded:melfusion-tiny" in name and "random" not in name
    out = pipe(
        make_image(3),
        "a jazz song with a vibraphone",
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    audio = np.asarray(out.audios)
    assert out.sample_rate == 16000
    assert audio.shape == (1, int(round(pipe.default_audio_length_in_s * 16000)))
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3


def test_from_pretrained_loads_packed_folders_and_the_embedded_name():
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    folder = embedded_model_dir()
    by_name, by_path = (
        MeLFusionPipeline.from_pretrained("embedded"),
        MeLFusionPipeline.from_pretrained(folder),
    )
    assert by_name.unet.dtype == by_path.unet.dtype == torch.float32
    assert torch.equal(_run(by_name).audios, _run(by_path).audios)
