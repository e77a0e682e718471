"""Art2MusPipeline on toy AudioLDM 2 components built in code: call modes, seeds, conditioning, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _art2mus_helpers import FakeJointEncoder
from melfusion_testing import make_image

from melfusion.errors import MelfusionInputError
from melfusion.pipelines.art2mus import (
    SUPPORT_PROMPT,
    Art2MusPipeline,
    ImageProjectionLayer,
    build_tiny_art2mus_components,
)

STEPS = 2
SR = 16000


def _call(pipe, seed=0, **kw):
    kw.setdefault("num_inference_steps", STEPS)
    kw.setdefault("audio_length_in_s", 0.32)
    return pipe(generator=torch.Generator().manual_seed(seed), progress=False, **kw)


@pytest.mark.parametrize(
    ("mode", "kwargs"),
    [
        ("text", {"prompt": ["a calm piano piece", "fast drums"]}),
        ("image", {"image": "IMAGES"}),
        ("image+text", {"image": "IMAGES", "prompt": ["a calm piano piece", "fast drums"]}),
    ],
)
def test_three_call_modes_give_the_expected_shapes(tiny_art2mus, mode, kwargs):
    images = [make_image(0), make_image(1)]
    if kwargs.get("image") == "IMAGES":
        kwargs = {**kwargs, "image": images}
    out = _call(tiny_art2mus, **kwargs, num_waveforms_per_prompt=2)
    assert out.parameters["mode"] == mode
    assert out.audios.shape == (4, int(0.32 * SR))  # (B·N, T)
    assert out.audios.dtype == np.float32 and np.isfinite(out.audios).all()
    assert out.sample_rate == SR
    lat = _call(tiny_art2mus, **kwargs, output_type="latent").audios
    assert lat.shape == (2, 4, 16, 8)  # (B, C, frames / 2, mels / 2): 32 frames × 16 mel bins


def test_fixed_seed_reproduces_and_another_seed_differs(tiny_art2mus):
    img = make_image(3)
    a = _call(tiny_art2mus, image=img, prompt="rain on a roof", output_type="latent", seed=7).audios
    b = _call(tiny_art2mus, image=img, prompt="rain on a roof", output_type="latent", seed=7).audios
    c = _call(tiny_art2mus, image=img, prompt="rain on a roof", output_type="latent", seed=8).audios
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    wa = _call(tiny_art2mus, image=img, seed=7).audios
    wb = _call(tiny_art2mus, image=img, seed=7).audios
    np.testing.assert_array_equal(wa, wb)


def test_text_only_is_audioldm2(tiny_art2mus):
    """With no image, Art2Mus is diffusers' AudioLDM2Pipeline (GPT2LMHeadModel: what its own LOA loop needs)."""
    from diffusers import AudioLDM2Pipeline

    comps = build_tiny_art2mus_components(language_model_class="GPT2LMHeadModel")
    art = Art2MusPipeline(**comps)
    base = AudioLDM2Pipeline(
        **{k: v for k, v in comps.items() if not k.startswith("image_")},
    )
    base.set_progress_bar_config(disable=True)
    kw = {
        "num_inference_steps": STEPS,
        "audio_length_in_s": 0.32,
        "output_type": "latent",
        "guidance_scale": 3.5,
    }
    ours = art(
        prompt="a calm piano piece with strings",
        negative_prompt="Low quality.",
        generator=torch.Generator().manual_seed(0),
        progress=False,
        **kw,
    ).audios
    theirs = base(
        prompt="a calm piano piece with strings",
        negative_prompt="Low quality.",
        generator=torch.Generator().manual_seed(0),
        **kw,
    ).audios
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_image_tokens_follow_the_text_tokens_in_gpt2(tiny_art2mus):
    pipe = tiny_art2mus
    seen = []
    hook = pipe.language_model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["inputs_embeds"].detach().clone()), with_kwargs=True
    )
    emb = torch.randn(1, 24)
    try:
        cond = pipe.encode_conditioning(["soft strings"], emb, batch_size=1, device=torch.device("cpu"))
    finally:
        hook.remove()
    first = seen[0]  # (1, S' + N, L): the prompt of the 8-step LOA generation
    text_tokens, _ = pipe.project_text(pipe.encode_text(["soft strings"], torch.device("cpu")))
    image_tokens = pipe.project_image(emb)
    assert first.shape[1] == text_tokens.shape[1] + 1
    torch.testing.assert_close(first[:, : text_tokens.shape[1]], text_tokens)
    torch.testing.assert_close(first[:, -1:], image_tokens)
    assert cond.generated_prompt_embeds.shape == (1, 8, 16)  # 8 LOA vectors of GPT-2's width


def test_image_only_uses_the_support_prompt_in_t5_and_only_image_tokens_in_gpt2(tiny_art2mus):
    pipe = tiny_art2mus
    emb = torch.randn(2, 24)
    cond = pipe.encode_conditioning(None, emb, batch_size=2, device=torch.device("cpu"))
    support = pipe.encode_text([SUPPORT_PROMPT], torch.device("cpu"))
    torch.testing.assert_close(cond.prompt_embeds, support.t5.expand(2, -1, -1))
    direct = pipe.language_of_audio(image_tokens=pipe.project_image(emb))
    torch.testing.assert_close(cond.generated_prompt_embeds, direct)
    # a different image gives a different "language of audio"
    other = pipe.encode_conditioning(None, torch.randn(2, 24), batch_size=2, device=torch.device("cpu"))
    assert not torch.allclose(other.generated_prompt_embeds, cond.generated_prompt_embeds)


def test_image_embeds_input_equals_the_image_path(tiny_art2mus, tmp_path):
    img = make_image(5)
    path = tmp_path / "art.png"
    img.save(path)
    emb = tiny_art2mus.encode_image([path])
    a = _call(tiny_art2mus, image=str(path), output_type="latent").audios
    b = _call(tiny_art2mus, image_embeds=emb, output_type="latent").audios
    torch.testing.assert_close(a, b)


def test_four_image_tokens():
    pipe = Art2MusPipeline(**build_tiny_art2mus_components(num_image_tokens=4))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.project_image(torch.randn(3, 24)).shape == (3, 4, 16)
    out = _call(pipe, image=make_image(0))
    assert out.audios.shape == (1, int(0.32 * SR))
    assert out.parameters["num_image_tokens"] == 4


def test_projection_layer_matches_the_paper():
    layer = ImageProjectionLayer()  # ImageBind 1024 → 1536 → 768, one token
    assert (layer.projection1.in_features, layer.projection1.out_features) == (1024, 1536)
    assert isinstance(layer.act, torch.nn.Tanh)
    assert (layer.projection2.in_features, layer.projection2.out_features) == (1536, 768)
    assert layer(torch.randn(2, 1024)).shape == (2, 1, 768)
    assert ImageProjectionLayer(num_tokens=4)(torch.randn(2, 1024)).shape == (2, 4, 768)


def test_waveforms_are_ranked_by_image_audio_similarity_with_a_joint_encoder(tiny_art2mus):
    enc = FakeJointEncoder(24)
    tiny_art2mus.set_image_encoder(enc)
    raw = _call(
        tiny_art2mus, image=[make_image(0), make_image(1)], num_waveforms_per_prompt=3, rank_waveforms=False
    )
    ranked = _call(tiny_art2mus, image=[make_image(0), make_image(1)], num_waveforms_per_prompt=3)
    assert enc.audio_calls == 1
    assert ranked.parameters["ranked_by"].startswith("fake-joint")
    scores = ranked.scores.reshape(2, 3)
    assert (np.diff(scores, axis=1) <= 0).all()  # best first within each artwork's group
    # the fake encoder prefers later waveforms of the batch: each group comes back reversed
    np.testing.assert_array_equal(ranked.audios[0], raw.audios[2])
    np.testing.assert_array_equal(ranked.audios[3], raw.audios[5])


def test_text_calls_are_ranked_by_clap_and_image_only_clip_calls_are_not(tiny_art2mus):
    out = _call(tiny_art2mus, prompt="a calm piano", num_waveforms_per_prompt=2)
    assert out.parameters["ranked_by"] == "CLAP text-audio cosine" and out.scores.shape == (2,)
    out = _call(tiny_art2mus, image=make_image(0), num_waveforms_per_prompt=2)
    assert out.scores is None and out.parameters["ranked_by"] is None  # CLIP has no audio tower


def test_save_and_load_round_trip(tiny_art2mus, tmp_path):
    tiny_art2mus.save_pretrained(tmp_path / "a2m")
    loaded = Art2MusPipeline.from_pretrained(tmp_path / "a2m")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.image_projection, ImageProjectionLayer)
    assert loaded.config.image_encoder_type == "clip"
    assert loaded.config.support_prompt == SUPPORT_PROMPT
    a = _call(tiny_art2mus, image=make_image(2), output_type="latent").audios
    b = _call(loaded, image=make_image(2), output_type="latent").audios
    torch.testing.assert_close(a, b)
    assert (tmp_path / "a2m" / "image_projection" / "diffusion_pytorch_model.safetensors").is_file()


def test_from_an_audioldm2_folder_adds_only_a_projection(tmp_path):
    from diffusers import AudioLDM2Pipeline

    comps = build_tiny_art2mus_components()
    AudioLDM2Pipeline(**{k: v for k, v in comps.items() if not k.startswith("image_")}).save_pretrained(
        tmp_path / "aldm2"
    )
    pipe = Art2MusPipeline.from_pretrained(tmp_path / "aldm2", image_embed_dim=24, num_image_tokens=4)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.image_encoder_type == "imagebind"  # the paper's encoder when none is given
    assert pipe.image_projection.config.num_tokens == 4
    for name in ("unet", "vae", "language_model", "text_encoder_2"):
        for (k, v), (_, w) in zip(
            getattr(pipe, name).state_dict().items(), comps[name].state_dict().items(), strict=True
        ):
            assert torch.equal(v, w), f"{name}.{k} changed"
    out = _call(pipe, image_embeds=torch.randn(1, 24))
    assert out.audios.shape == (1, int(0.32 * SR))


def test_bad_inputs_raise_clear_errors(tiny_art2mus, tmp_path):
    with pytest.raises(MelfusionInputError, match="image .* a prompt"):
        _call(tiny_art2mus)
    with pytest.raises(MelfusionInputError, match="batch sizes differ"):
        _call(tiny_art2mus, image=[make_image(0), make_image(1)], prompt=["a", "b", "c"])
    with pytest.raises(MelfusionInputError, match=r"image_embeds must be \(B, 24\)"):
        _call(tiny_art2mus, image_embeds=torch.randn(1, 7))
    with pytest.raises(MelfusionInputError, match="either image or image_embeds"):
        _call(tiny_art2mus, image=make_image(0), image_embeds=torch.randn(1, 24))
    with pytest.raises(MelfusionInputError, match="must not be empty"):
        _call(tiny_art2mus, prompt="  ")
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    with pytest.raises(MelfusionInputError, match="not an image file"):
        _call(tiny_art2mus, image=str(bad))
    none_pipe = Art2MusPipeline(**build_tiny_art2mus_components(image_encoder="none"))
    with pytest.raises(MelfusionInputError, match="image_embeds="):
        _call(none_pipe, image=make_image(0))


def test_missing_imagebind_is_a_clear_error(tmp_path):
    from melfusion.encoders.imagebind import imagebind_available

    if imagebind_available():
        pytest.skip("the imagebind package is installed here")
    comps = build_tiny_art2mus_components(image_encoder="none")
    pipe = Art2MusPipeline(**{**comps, "image_encoder_type": "imagebind"})
    with pytest.raises(MelfusionInputError, match="encodes images with ImageBind-huge.*image_embeds="):
        _call(pipe, image=make_image(0))
    from melfusion.pairing.encoders import build_pairing_encoder

    with pytest.raises(MelfusionInputError, match="--encoder imagebind .* not available.*--encoder tiny"):
        build_pairing_encoder("imagebind")
