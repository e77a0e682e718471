from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler
from melfusion_testing import make_image

from melfusion.errors import MelfusionInputError
from melfusion.pipelines.melfusion import MeLFusionPipeline

STEPS = 4


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_output_shapes_and_sample_rate(tiny_pipe):
    out = tiny_pipe(
        make_image(),
        ["calm piano", "fast drums"],
        num_inference_steps=STEPS,
        num_waveforms_per_prompt=2,
        audio_length_in_s=1.0,
        generator=_gen(),
    )
    assert out.sample_rate == 16000
    assert out.audios.shape == (4, 16000) and out.audios.dtype == np.float32
    assert np.isfinite(out.audios).all()
    assert out.parameters["num_inference_steps"] == STEPS and len(out.parameters["image_sha256"]) == 1
    mel = tiny_pipe(make_image(), "calm", num_inference_steps=2, output_type="mel", generator=_gen()).audios
    assert mel.shape[:2] == (1, 1) and mel.shape[-1] == 64


def test_same_seed_same_audio_and_other_seed_differs(tiny_pipe):
    a = tiny_pipe(make_image(), "calm piano", num_inference_steps=STEPS, generator=_gen(1)).audios
    b = tiny_pipe(make_image(), "calm piano", num_inference_steps=STEPS, generator=_gen(1)).audios
    c = tiny_pipe(make_image(), "calm piano", num_inference_steps=STEPS, generator=_gen(2)).audios
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_alpha_zero_equals_text_only_and_alpha_nonzero_uses_the_image(tiny_pipe):
    kw = dict(num_inference_steps=STEPS, output_type="latent")
    text_only = tiny_pipe(make_image(0), "calm piano", use_image=False, generator=_gen(), **kw).audios
    fused = tiny_pipe(make_image(0), "calm piano", generator=_gen(), **kw).audios
    assert torch.equal(text_only, fused)  # α = 0 at init: the pretrained text-to-music model is unchanged
    tiny_pipe.synapse.set_alphas(0.15)
    img0 = tiny_pipe(make_image(0), "calm piano", generator=_gen(), **kw).audios
    img1 = tiny_pipe(make_image(1), "calm piano", generator=_gen(), **kw).audios
    assert not torch.allclose(img0, text_only, atol=1e-5)
    assert not torch.allclose(img0, img1, atol=1e-5)  # a different image gives different music


def test_guidance_cache_hit_on_second_call(tiny_pipe):
    cache = tiny_pipe.guidance_cache
    tiny_pipe(make_image(), "calm", num_inference_steps=STEPS, generator=_gen(), output_type="latent")
    assert (cache.hits, cache.misses) == (0, 1)
    tiny_pipe(make_image(), "other prompt", num_inference_steps=STEPS, generator=_gen(), output_type="latent")
    assert (cache.hits, cache.misses) == (1, 1)
    tiny_pipe(make_image(), "calm", num_inference_steps=STEPS + 1, generator=_gen(), output_type="latent")
    assert cache.misses == 2  # another schedule is another entry
    # several samples and prompts sharing one image compute its guidance once
    tiny_pipe(
        make_image(), ["a", "b"], num_waveforms_per_prompt=2, num_inference_steps=STEPS, output_type="latent"
    )
    assert cache.misses == 2


def test_batched_images_match_single_calls(tiny_pipe):
    tiny_pipe.synapse.set_alphas(0.1)
    kw = dict(num_inference_steps=STEPS, output_type="latent", guidance_scale=3.0)
    lat = torch.randn(2, 8, 32, 16, generator=_gen(5))
    both = tiny_pipe([make_image(0), make_image(1)], ["calm piano", "calm piano"], latents=lat, **kw).audios
    one = tiny_pipe(make_image(1), "calm piano", latents=lat[1:], **kw).audios
    assert torch.allclose(both[1:], one, atol=1e-5)


def test_image_guidance_scale_three_branches(tiny_pipe):
    tiny_pipe.synapse.set_alphas(0.15)
    kw = dict(num_inference_steps=STEPS, output_type="latent", guidance_scale=3.0)
    two = tiny_pipe(make_image(), "calm", generator=_gen(), **kw).audios
    three = tiny_pipe(make_image(), "calm", image_guidance_scale=1.5, generator=_gen(), **kw).audios
    assert three.shape == two.shape and not torch.allclose(two, three)
    # image scale 0: ε(∅) + s(ε(text) − ε(∅)) with no image anywhere = the text-only run
    zero = tiny_pipe(make_image(), "calm", image_guidance_scale=0.0, generator=_gen(), **kw).audios
    text_only = tiny_pipe(make_image(), "calm", use_image=False, generator=_gen(), **kw).audios
    assert torch.allclose(zero, text_only, atol=1e-5)


def test_model_default_image_guidance_scale(tiny_pipe, tmp_path):
    """A model folder may record the image guidance scale it was tuned for; a call without one uses it."""
    tiny_pipe.synapse.set_alphas(0.15)
    kw = dict(num_inference_steps=STEPS, output_type="latent", guidance_scale=3.0)
    two = tiny_pipe(make_image(), "calm", generator=_gen(), **kw)
    assert two.parameters["image_guidance_scale"] is None
    explicit = tiny_pipe(make_image(), "calm", image_guidance_scale=1.5, generator=_gen(), **kw)
    tiny_pipe.register_to_config(default_image_guidance_scale=1.5)
    default = tiny_pipe(make_image(), "calm", generator=_gen(), **kw)
    assert torch.equal(default.audios, explicit.audios) and default.parameters["image_guidance_scale"] == 1.5
    assert not torch.allclose(default.audios, two.audios)
    other = tiny_pipe(make_image(), "calm", image_guidance_scale=4.0, generator=_gen(), **kw)
    assert other.parameters["image_guidance_scale"] == 4.0  # an explicit scale wins

    tiny_pipe.save_pretrained(tmp_path / "model")
    index = json.loads((tmp_path / "model" / "model_index.json").read_text())
    assert index["default_image_guidance_scale"] == 1.5
    loaded = MeLFusionPipeline.from_pretrained(tmp_path / "model")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.default_image_guidance_scale == 1.5
    again = loaded(make_image(), "calm", generator=_gen(), **kw)
    assert torch.equal(again.audios, default.audios)


@pytest.mark.parametrize("scheduler_cls", [DDPMScheduler, DPMSolverMultistepScheduler])
def test_other_schedulers(tiny_pipe, scheduler_cls):
    tiny_pipe.scheduler = scheduler_cls.from_config(tiny_pipe.scheduler.config)
    out = tiny_pipe(make_image(), "calm", num_inference_steps=STEPS, audio_length_in_s=0.5, generator=_gen())
    assert out.audios.shape == (1, 8000) and np.isfinite(out.audios).all()
    assert out.parameters["scheduler"] == scheduler_cls.__name__


def _record_features(pipe):
    """Wrap ``pipe.synapse.attention_kwargs`` to record the first layer's K of every music UNet call."""
    seen: list[torch.Tensor] = []
    original = pipe.synapse.attention_kwargs

    def record(kv, *args, **kwargs):
        if kv is not None:
            seen.append(kv[0][0])
        return original(kv, *args, **kwargs)

    pipe.synapse.attention_kwargs = record
    return seen


def _expected_features(pipe, image, timesteps, image_t=None, grid=None):
    """Independent of the pipeline's image path: invert on ``grid``, then ε_ψ(z^I_t, ∅, t) for each t."""
    from melfusion.guidance.preprocess import preprocess_image

    cond = pipe.image_conditioner("cpu")
    grid = cond.grid_from_timesteps(timesteps) if grid is None else grid
    (traj,) = cond.invert(cond.encode(preprocess_image(image, *pipe.image_resolution)), grid)
    out = []
    for t in timesteps.tolist():
        t_img = torch.tensor([t if image_t is None else image_t])
        out.append(cond.features(traj.latent_at(t_img), t_img)[0][0])
    return out


def test_capture_modes_feed_what_they_are_named_for(tiny_pipe):
    tiny_pipe.synapse.set_alphas(0.1)
    kw = dict(num_inference_steps=STEPS, output_type="latent", latents=torch.zeros(1, 8, 32, 16))
    seen = _record_features(tiny_pipe)
    exact = tiny_pipe(make_image(), "calm", **kw)  # default: "trajectory", the training features
    assert exact.parameters["guidance_capture"] == "trajectory"
    timesteps = tiny_pipe.scheduler.timesteps
    for got, want in zip(seen, _expected_features(tiny_pipe, make_image(), timesteps), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)  # batched vs single UNet rows
    seen.clear()
    lagged = tiny_pipe(make_image(), "calm", guidance_capture="inversion", **kw)  # the old name
    assert lagged.parameters["guidance_capture"] == "inversion-lagged"
    assert not torch.allclose(seen[1], _expected_features(tiny_pipe, make_image(), timesteps)[1], atol=1e-4)
    rev = tiny_pipe(make_image(), "calm", guidance_capture="reverse", **kw)
    assert rev.parameters["guidance_capture"] == "reverse"
    assert not torch.equal(exact.audios, lagged.audios) and not torch.equal(exact.audios, rev.audios)


def test_save_load_roundtrip_gives_identical_audio(tiny_pipe, tmp_path):
    tiny_pipe.synapse.set_alphas([0.1, -0.1, 0.05, 0.15])
    tiny_pipe.save_pretrained(tmp_path / "model")
    assert list((tmp_path / "model").rglob("*.bin")) == []  # safetensors only
    assert (tmp_path / "model" / "synapse" / "diffusion_pytorch_model.safetensors").exists()
    loaded = MeLFusionPipeline.from_pretrained(tmp_path / "model")
    loaded.set_progress_bar_config(disable=True)
    a = tiny_pipe(make_image(), "calm piano", num_inference_steps=STEPS, generator=_gen(3)).audios
    b = loaded(make_image(), "calm piano", num_inference_steps=STEPS, generator=_gen(3)).audios
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(prompt=""), "prompt is empty"),
        (dict(prompt="   "), "prompt is empty"),
        (dict(audio_length_in_s=0), "out of range"),
        (dict(audio_length_in_s=-3.0), "out of range"),
        (dict(audio_length_in_s=float("nan")), "number of seconds"),
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(num_inference_steps=2.5), "num_inference_steps"),
        (dict(guidance_scale=-1.0), "guidance scale"),
        (dict(num_waveforms_per_prompt=0), "num_waveforms_per_prompt"),
        (dict(prompt=["a", "b", "c"], image=[make_image(0), make_image(1)]), "2 images for 3 prompts"),
        (dict(negative_prompt=["x", "y"]), "negative prompts"),
        (dict(output_type="wav"), "output_type"),
        (dict(guidance_capture="both"), "guidance_capture"),
    ],
)
def test_bad_inputs(tiny_pipe, kwargs, message):
    call = dict(image=make_image(), prompt="calm", num_inference_steps=2)
    call.update(kwargs)
    with pytest.raises(MelfusionInputError, match=message):
        tiny_pipe(**call)


def test_bad_image_files(tiny_pipe, tmp_path, monkeypatch):
    with pytest.raises(MelfusionInputError, match="image not found"):
        tiny_pipe(tmp_path / "nope.png", "calm", num_inference_steps=2)
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    with pytest.raises(MelfusionInputError, match="not an image file"):
        tiny_pipe(text, "calm", num_inference_steps=2)
    big = tmp_path / "big.png"
    make_image(size=(300, 300)).save(big)
    monkeypatch.setattr("melfusion.guidance.preprocess.MAX_IMAGE_PIXELS", 50_000)
    with pytest.raises(MelfusionInputError, match="image too large"):
        tiny_pipe(big, "calm", num_inference_steps=2)


def test_coarser_image_inversion_schedule(tiny_pipe):
    tiny_pipe.synapse.set_alphas(0.1)
    kw = dict(
        num_inference_steps=STEPS, output_type="latent", generator=None, latents=torch.zeros(1, 8, 32, 16)
    )
    coarse = tiny_pipe(make_image(), "calm", image_inversion_steps=2, **kw)
    assert coarse.parameters["image_inversion_steps"] == 2
    g = tiny_pipe.visual_guidance(make_image(), 2)
    assert len(g.timesteps) == 2 and tiny_pipe.guidance_cache.hits == 1  # the call above cached it
    full = tiny_pipe(make_image(), "calm", **kw)
    assert full.parameters["image_inversion_steps"] is None and full.parameters["image_grid_size"] == STEPS
    assert not torch.equal(coarse.audios, full.audios)
    with pytest.raises(MelfusionInputError, match="image_inversion_steps"):
        tiny_pipe(make_image(), "calm", image_inversion_steps=0, num_inference_steps=2)


def test_use_text_false_is_the_image_only_ablation(tiny_pipe):
    kw = dict(num_inference_steps=STEPS, output_type="latent")
    a = tiny_pipe(make_image(0), "calm piano", use_text=False, generator=_gen(), **kw)
    b = tiny_pipe(make_image(0), "fast drums", use_text=False, generator=_gen(), **kw)
    with_text = tiny_pipe(make_image(0), "calm piano", generator=_gen(), **kw)
    assert torch.equal(a.audios, b.audios)  # the text is not used
    assert not torch.allclose(a.audios, with_text.audios, atol=1e-5)
    assert a.parameters["use_text"] is False and a.parameters["prompt"] == ["calm piano"]


def test_waveforms_stay_in_range(tiny_pipe):
    out = tiny_pipe(make_image(0), "calm", num_inference_steps=STEPS, audio_length_in_s=0.5, generator=_gen())
    assert np.abs(out.audios).max() <= 1.0


def test_fixed_image_timestep_feeds_the_trained_features_at_every_step(tiny_pipe):
    """synapse image_timestep (option): every step reads ε_ψ(z^I_{t_I}, ∅, t_I) on the trained 50-step grid,
    whatever the music scheduler; the inversion stops at t_I."""
    from melfusion.models.synapse import VisualSynapse

    fixed = VisualSynapse.from_config(tiny_pipe.synapse.config, image_timestep=300)
    fixed.set_alphas(0.15)
    tiny_pipe.register_modules(synapse=fixed)
    fixed.install(tiny_pipe.unet)
    seen = _record_features(tiny_pipe)
    calls = []
    hook = tiny_pipe.image_unet.register_forward_hook(lambda *_: calls.append(1))
    out = tiny_pipe(make_image(), "calm", num_inference_steps=STEPS, generator=_gen(), output_type="latent")
    hook.remove()
    assert len(seen) == STEPS and all(k is seen[0] for k in seen)
    grid = tiny_pipe.image_conditioner("cpu").inversion_grid(50)  # 1, 21, ..., 981: 301 is nearest to 300
    (want,) = _expected_features(tiny_pipe, make_image(), torch.tensor([981]), image_t=300, grid=grid)
    torch.testing.assert_close(seen[0], want, rtol=1e-4, atol=1e-5)
    assert len(calls) == 16 + 1  # inversion up to 301, one feature call
    assert out.parameters["image_grid_size"] == 50
    fixed.register_to_config(image_inversion_grid=[5, 150, 290, 700])  # a model trained on another grid
    assert tiny_pipe.visual_guidance(make_image(), STEPS, progress=False).meta["grid"] == [5, 150, 290, 700]
