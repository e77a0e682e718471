"""MeLFusionPipeline behaves like a diffusers pipeline: schedulers, callbacks, embeddings, offload, loading."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from melfusion_testing import make_image

from melfusion.errors import MelfusionInputError
from melfusion.guidance.visual_guidance import GuidanceCache
from melfusion.models.synapse import SynapseNotInstalledError
from melfusion.pipelines.melfusion import MeLFusionPipeline

STEPS = 4
KW = dict(num_inference_steps=STEPS, output_type="latent")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _record(pipe):
    """First-layer K the synapse receives at each music UNet call, and the timestep of each call."""
    seen, times = [], []
    original = pipe.synapse.attention_kwargs

    def record(kv, *args, **kwargs):
        seen.append(kv[0][0] if kv is not None else None)
        return original(kv, *args, **kwargs)

    pipe.synapse.attention_kwargs = record
    pipe.unet.register_forward_pre_hook(lambda _m, args: times.append(int(args[1])))
    return seen, times


@pytest.mark.parametrize(
    ("scheduler_cls", "extra"),
    [
        (DDIMScheduler, {}),
        (DDPMScheduler, {}),
        (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    ],
)
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_image_branch_runs_on_the_music_schedulers_own_timesteps(tiny_pipe, scheduler_cls, extra, spacing):
    tiny_pipe.scheduler = scheduler_cls.from_config(
        tiny_pipe.scheduler.config, timestep_spacing=spacing, **extra
    )
    tiny_pipe.synapse.set_alphas(0.1)
    seen, times = _record(tiny_pipe)
    tiny_pipe(make_image(), "calm", generator=_gen(), **KW)
    music = [int(t) for t in tiny_pipe.scheduler.timesteps]
    assert times == music
    g = tiny_pipe.visual_guidance(make_image(), timesteps=tiny_pipe.scheduler.timesteps, progress=False)
    assert tiny_pipe.guidance_cache.hits == 1  # the call's own entry
    assert g.timesteps == music  # exactly the music grid, no nearest-neighbour
    for k, t in zip(seen, music, strict=True):
        assert torch.equal(k, g.at(t)[0][0]) and g.timesteps[g.index_for(t)] == t


def test_callback_on_step_end_sees_and_replaces_latents_and_can_interrupt(tiny_pipe):
    calls = []

    def callback(pipe, i, t, tensors):
        calls.append((i, int(t), sorted(tensors)))
        return {"latents": torch.zeros_like(tensors["latents"])} if i == STEPS - 1 else {}

    out = tiny_pipe(make_image(), "calm", generator=_gen(), callback_on_step_end=callback, **KW)
    assert [c[:2] for c in calls] == list(enumerate(int(t) for t in tiny_pipe.scheduler.timesteps))
    assert calls[0][2] == ["latents"] and torch.all(out.audios == 0)

    def stop(pipe, i, t, tensors):
        pipe._interrupt = i == 1
        return {}

    stopped = tiny_pipe(make_image(), "calm", generator=_gen(), callback_on_step_end=stop, **KW)
    assert tiny_pipe.interrupt and stopped.audios.shape == out.audios.shape
    with pytest.raises(MelfusionInputError, match="callback_on_step_end_tensor_inputs"):
        tiny_pipe(
            make_image(), "calm", callback_on_step_end=stop, callback_on_step_end_tensor_inputs=["x"], **KW
        )


def test_prompt_embeds_equal_the_prompt_path_and_return_dict(tiny_pipe):
    tiny_pipe.synapse.set_alphas(0.1)
    by_text = tiny_pipe(make_image(), "calm piano", negative_prompt="noise", generator=_gen(), **KW).audios
    emb, mask = tiny_pipe.encode_text(["calm piano"], torch.device("cpu"))
    neg, neg_mask = tiny_pipe.encode_text(["noise"], torch.device("cpu"))
    out = tiny_pipe(
        make_image(),
        prompt_embeds=emb,
        prompt_attention_mask=mask,
        negative_prompt_embeds=neg,
        negative_attention_mask=neg_mask,
        generator=_gen(),
        return_dict=False,
        **KW,
    )
    assert isinstance(out, tuple) and len(out) == 1
    torch.testing.assert_close(out[0], by_text, rtol=0, atol=1e-6)
    with pytest.raises(MelfusionInputError, match="exactly one of prompt and prompt_embeds"):
        tiny_pipe(make_image(), "calm", prompt_embeds=emb, **KW)
    with pytest.raises(MelfusionInputError, match="prompt_embeds must be"):
        tiny_pipe(make_image(), prompt_embeds=emb[0], **KW)


def test_a_negative_prompt_that_cannot_act_is_warned_about(tiny_pipe):
    with pytest.warns(UserWarning, match="negative prompt has no effect"):
        tiny_pipe(make_image(), "calm", negative_prompt="noise", guidance_scale=1.0, use_image=False, **KW)
    with pytest.warns(UserWarning, match="negative prompt has no effect"):  # three branches at s_t = 1
        tiny_pipe(
            make_image(), "calm", negative_prompt="noise", guidance_scale=1.0, image_guidance_scale=2.0, **KW
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_pipe(make_image(), "calm", negative_prompt="noise", guidance_scale=3.0, **KW)


def test_removed_synapse_is_refused_before_generation(tiny_pipe):
    tiny_pipe.enable_attention_slicing()
    with pytest.raises(SynapseNotInstalledError, match=r"enable_attention_slicing\(\)"):
        tiny_pipe(make_image(), "calm", **KW)
    tiny_pipe(make_image(), "calm", use_image=False, **KW)  # text only needs no synapse
    tiny_pipe.synapse.install(tiny_pipe.unet)
    tiny_pipe(make_image(), "calm", **KW)
    with pytest.raises(MelfusionInputError, match="visual_features"):
        tiny_pipe(make_image(), "calm", cross_attention_kwargs={"visual_features": None}, **KW)


def test_cpu_offload_keeps_the_synapse_with_the_unet(tiny_pipe):
    """Model offload runs end to end on CPU. Sequential offload moves every component in
    ``_exclude_from_cpu_offload`` to the execution device (diffusers), which is where the synapse is listed;
    run end to end it fails on CPU inside the BERT text encoder (accelerate re-creates its buffers)."""
    assert "synapse" in MeLFusionPipeline._exclude_from_cpu_offload
    assert "synapse" not in MeLFusionPipeline.model_cpu_offload_seq
    tiny_pipe.synapse.set_alphas(0.15)
    want = tiny_pipe(make_image(), "calm", generator=_gen(), **KW).audios
    # with ∅ stored the image text encoder is not needed at all (the tiny model shares one with the music LDM)
    tiny_pipe.store_image_null_prompt()
    tiny_pipe.register_modules(image_text_encoder=None, image_tokenizer=None)
    tiny_pipe.enable_model_cpu_offload(device="cpu")
    assert not hasattr(tiny_pipe.synapse, "_hf_hook")  # never offloaded: its weights are read, not called
    assert tiny_pipe.synapse.alpha_logits.device.type == "cpu"
    got = tiny_pipe(make_image(), "calm", generator=_gen(), **KW).audios
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_stored_null_prompt_lets_a_folder_load_without_the_image_text_encoder(tiny_pipe, tmp_path):
    tiny_pipe.synapse.set_alphas(0.1)
    want = tiny_pipe(make_image(), "calm", generator=_gen(), **KW).audios
    tiny_pipe.save_pretrained(tmp_path / "old")  # an existing folder: no stored ∅
    old = MeLFusionPipeline.from_pretrained(tmp_path / "old")
    assert old.synapse.image_null_prompt_embeds is None
    assert torch.equal(old(make_image(), "calm", generator=_gen(), **KW).audios, want)

    tiny_pipe.store_image_null_prompt()
    tiny_pipe.save_pretrained(tmp_path / "new")
    new = MeLFusionPipeline.from_pretrained(tmp_path / "new", image_text_encoder=None, image_tokenizer=None)
    assert new.image_text_encoder is None and new.synapse.image_null_prompt_embeds is not None
    assert torch.equal(new(make_image(), "calm", generator=_gen(), **KW).audios, want)
    bare = MeLFusionPipeline.from_pretrained(tmp_path / "old", image_text_encoder=None, image_tokenizer=None)
    with pytest.raises(MelfusionInputError, match="no null-prompt embedding"):
        bare(make_image(), "calm", **KW)


def test_byte_bounded_cache_evicts_in_the_pipeline(tiny_pipe):
    tiny_pipe(make_image(0), "calm", **KW)
    (entry,) = tiny_pipe.guidance_cache._items.values()
    tiny_pipe.guidance_cache = GuidanceCache(max_bytes=entry.nbytes())  # room for one image
    tiny_pipe(make_image(0), "calm", **KW)
    tiny_pipe(make_image(1), "calm", **KW)
    tiny_pipe(make_image(0), "calm", **KW)
    cache = tiny_pipe.guidance_cache
    assert (cache.hits, cache.misses, len(cache)) == (0, 3, 1)


def test_image_progress_bar_follows_set_progress_bar_config(tiny_pipe, capsys):
    tiny_pipe(make_image(), "calm", **KW)  # tiny_pipe disables bars
    assert "image branch" not in capsys.readouterr().err
    tiny_pipe.set_progress_bar_config(disable=False)
    tiny_pipe.guidance_cache.clear()
    tiny_pipe(make_image(), "calm", **KW)
    err = capsys.readouterr().err
    assert "image branch" in err and "denoising" in err
    assert np.isfinite(tiny_pipe(make_image(), "calm", num_inference_steps=2).audios).all()


def test_one_image_is_computed_once_per_call_even_without_a_cache(tiny_pipe):
    tiny_pipe.guidance_cache = GuidanceCache(max_bytes=0)
    calls = []
    hook = tiny_pipe.image_vae.encoder.register_forward_pre_hook(lambda *_: calls.append("encode"))
    tiny_pipe(
        [make_image(0), make_image(0), make_image(1)], ["a", "b", "c"], num_waveforms_per_prompt=2, **KW
    )
    hook.remove()
    assert calls.count("encode") == 2  # two distinct images


def test_storing_the_null_prompt_keeps_one_already_stored(tiny_pipe):
    tiny_pipe.synapse.store_image_null_prompt(torch.full((1, 3, 4), 0.123456789))
    tiny_pipe.store_image_null_prompt()
    assert torch.equal(tiny_pipe.synapse.image_null_prompt_embeds, torch.full((1, 3, 4), 0.123456789))


def test_more_steps_than_the_scheduler_has_is_a_clear_error(tiny_pipe):
    with pytest.raises(MelfusionInputError, match="more than this scheduler can take"):
        tiny_pipe(make_image(), "calm", num_inference_steps=1000, **{"output_type": "latent"})


def test_longer_than_trained_clips_in_one_pass_are_warned_about_and_cfg_branches_recorded(tiny_pipe):
    with pytest.warns(UserWarning, match="longer than the 1.28 s clips"):
        out = tiny_pipe(make_image(), "calm", audio_length_in_s=2.0, long_form=False, **KW)
    assert out.parameters["windows"] == 1
    assert out.parameters["cfg_branches"] == 2
    assert tiny_pipe(make_image(), "calm", image_guidance_scale=2.0, **KW).parameters["cfg_branches"] == 3
    assert tiny_pipe(make_image(), "calm", guidance_scale=1.0, **KW).parameters["cfg_branches"] == 1
