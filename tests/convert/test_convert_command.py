"""`melfusion convert tango`: TANGO + Stable Diffusion folders -> a MeLFusion pipeline folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from melfusion.cli import main

from ._convert_helpers import write_sd_folder


def _argv(tango, sd, t5, out, *extra):
    return [
        "convert",
        "tango",
        "--tango",
        str(tango),
        "--image-ldm",
        str(sd),
        "--text-encoder",
        str(t5),
        "--out",
        str(out),
        *extra,
    ]


def test_convert_writes_a_loadable_pipeline(tango, sd_dir, t5_dir, tmp_path, capsys):
    from melfusion.convert.stable_diffusion import load_image_ldm_components
    from melfusion.pipelines.melfusion import MeLFusionPipeline
    from melfusion.pipelines.melfusion.pipeline_melfusion import max_text_length

    out = tmp_path / "melfusion-tango"
    assert main(_argv(tango[0], sd_dir[0], t5_dir, out, "--rho", "4")) == 0
    err = capsys.readouterr().err
    assert "wrote" in err and "ignores the image" in err  # α = 0 is said, not only in --help
    index = json.loads((out / "model_index.json").read_text())
    for key in (
        "unet",
        "vae",
        "vocoder",
        "scheduler",
        "text_encoder",
        "image_unet",
        "image_text_encoder",
        "synapse",
    ):
        assert key in index
    assert not list(out.rglob("*.bin"))  # safetensors only
    assert list((out / "unet").glob("*.safetensors"))
    # the image LDM's null prompt is stored in the synapse; its text encoder is not written
    assert index["image_text_encoder"] == [None, None] and not (out / "image_text_encoder").exists()

    pipe = MeLFusionPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.synapse.config.rho == 4.0
    assert torch.all(pipe.synapse.alphas() == 0)  # alpha starts at 0: the converted model is TANGO
    main_sd = torch.load(tango[0] / "pytorch_model_main.bin", map_location="cpu", weights_only=True)
    torch.testing.assert_close(pipe.unet.conv_in.weight, main_sd["unet.conv_in.weight"], rtol=0, atol=0)
    torch.testing.assert_close(
        pipe.text_encoder.shared.weight, main_sd["text_encoder.shared.weight"], rtol=0, atol=0
    )
    assert pipe.vae.config.scaling_factor == pytest.approx(0.9227914214134216)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    sd = load_image_ldm_components(sd_dir[0])
    tok, enc = sd["image_tokenizer"], sd["image_text_encoder"]
    ids = tok([""], padding="max_length", max_length=max_text_length(tok, enc), return_tensors="pt").input_ids
    torch.testing.assert_close(pipe.synapse.image_null_prompt_embeds, enc(ids)[0], rtol=0, atol=1e-6)

    image = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)
    out_audio = pipe(
        image,
        "calm piano music",
        audio_length_in_s=0.32,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert out_audio.sample_rate == 16000
    assert out_audio.audios.shape == (1, 5120)


def test_bad_inputs_exit_2_with_one_line(tango, sd_dir, t5_dir, tmp_path, capsys):
    cases = [
        (_argv(tmp_path / "nope", sd_dir[0], t5_dir, tmp_path / "o1"), "does not exist"),
        (_argv(tango[0], tmp_path / "nosd", t5_dir, tmp_path / "o2"), "does not exist"),
        (_argv(tango[0], sd_dir[0], t5_dir, tmp_path / "o3", "--rho", "0"), "--rho must be a positive"),
    ]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    cases.append((_argv(tango[0], sd_dir[0], t5_dir, taken), "not empty"))
    for argv, expected in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("melfusion convert: error: ") and expected in err[-1]


def test_unpairable_image_ldm_is_a_one_line_error(tango, t5_dir, tmp_path, capsys):
    sd = tmp_path / "sd-deeper"
    write_sd_folder(sd, layers_per_block=2)  # 9 decoder self-attention layers vs the music UNet's 6
    assert main(_argv(tango[0], sd, t5_dir, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cannot be paired" in err and "decoder" in err
    assert not (tmp_path / "out").exists()
