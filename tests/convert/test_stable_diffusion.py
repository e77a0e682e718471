"""Stable Diffusion (diffusers layout) -> the image-LDM components of a MeLFusion pipeline."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from melfusion.convert.stable_diffusion import check_stable_diffusion, load_image_ldm_components
from melfusion.errors import MelfusionInputError

from ._convert_helpers import linked_copy, write_sd_folder


def test_loads_the_five_components(sd_dir):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    path, original = sd_dir
    c = load_image_ldm_components(path)
    assert set(c) == {"image_unet", "image_vae", "image_scheduler", "image_text_encoder", "image_tokenizer"}
    assert isinstance(c["image_unet"], UNet2DConditionModel)
    assert isinstance(c["image_vae"], AutoencoderKL)
    assert isinstance(c["image_text_encoder"], CLIPTextModel)
    sched = c["image_scheduler"]
    assert type(sched) is DDIMScheduler  # built from SD-1.5's PNDM config
    assert (sched.config.beta_schedule, sched.config.beta_end, sched.config.steps_offset) == (
        "scaled_linear",
        0.012,
        1,
    )
    assert sched.config.clip_sample is False and sched.config.set_alpha_to_one is False
    torch.testing.assert_close(sched.alphas_cumprod, original["scheduler"].alphas_cumprod)
    for key in ("image_unet", "image_vae", "image_text_encoder"):
        assert not c[key].training
    orig_unet = original["unet"].state_dict()
    for k, v in c["image_unet"].state_dict().items():
        torch.testing.assert_close(v, orig_unet[k], rtol=0, atol=0)
    torch.testing.assert_close(c["image_vae"].encoder.conv_in.weight, original["vae"].encoder.conv_in.weight)
    ids = c["image_tokenizer"]("art", padding="max_length", max_length=8, return_tensors="pt").input_ids
    assert ids[0, 0].item() == 0 and ids.shape == (1, 8)
    with torch.no_grad():
        out = c["image_text_encoder"](ids).last_hidden_state
        ref = original["text_encoder"](ids).last_hidden_state
    torch.testing.assert_close(out, ref)


def test_sd21_style_folder_keeps_v_prediction(tmp_path):
    path = tmp_path / "sd21"
    write_sd_folder(path, seed=1, scheduler="ddim")
    c = load_image_ldm_components(path, torch_dtype=torch.float16)
    assert c["image_scheduler"].config.prediction_type == "v_prediction"
    assert {p.dtype for p in c["image_unet"].parameters()} == {torch.float16}
    assert {p.dtype for p in c["image_text_encoder"].parameters()} == {torch.float16}


def test_missing_model_index(sd_dir, tmp_path):
    path = linked_copy(sd_dir[0], tmp_path / "sd", skip=("model_index.json",))
    with pytest.raises(MelfusionInputError, match="no model_index.json"):
        load_image_ldm_components(path)


@pytest.mark.parametrize("component", ["unet", "text_encoder", "tokenizer"])
def test_missing_subfolder(sd_dir, tmp_path, component):
    path = linked_copy(sd_dir[0], tmp_path / "sd", skip=(component,))
    with pytest.raises(MelfusionInputError, match=f"lacks the subfolder\\(s\\) {component}/"):
        check_stable_diffusion(path)


def test_component_not_listed_in_model_index(sd_dir, tmp_path):
    path = linked_copy(sd_dir[0], tmp_path / "sd", skip=("model_index.json",))
    index = json.loads((sd_dir[0] / "model_index.json").read_text())
    index["vae"] = [None, None]
    (path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(MelfusionInputError, match="lists no vae"):
        load_image_ldm_components(path)


def test_unreadable_weights(sd_dir, tmp_path):
    path = tmp_path / "sd"
    shutil.copytree(sd_dir[0], path)
    for f in (path / "unet").glob("*.safetensors"):
        f.write_bytes(b"not a safetensors file")
    with pytest.raises(MelfusionInputError, match="cannot load unet/"):
        load_image_ldm_components(path)


def test_a_file_or_nothing(tmp_path):
    f = tmp_path / "sd.ckpt"
    f.write_bytes(b"")
    with pytest.raises(MelfusionInputError, match="is a file"):
        load_image_ldm_components(f)
    with pytest.raises(MelfusionInputError, match="does not exist"):
        load_image_ldm_components(tmp_path / "missing" / "sd")


def test_hub_id_offline_not_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(MelfusionInputError, match="HF_HUB_OFFLINE=1"):
        load_image_ldm_components("melfusion-test/no-such-sd")
