"""Long-form generation: clips longer than the model's window, made window by window."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from melfusion_testing import make_image

from melfusion.audio.stitch import correlation, crossfade_gains, crossfade_into
from melfusion.errors import MelfusionInputError
from melfusion.loading import SCHEDULERS, set_scheduler
from melfusion.pipelines.melfusion.pipeline_melfusion import plan_windows

STEPS = 3


def run(pipe, seconds, **kw):
    kw = {"num_inference_steps": STEPS, "generator": torch.Generator().manual_seed(0), **kw}
    return pipe(make_image(), "calm piano", audio_length_in_s=seconds, **kw)


# ------------------------------------------------------------------------------------------ plan
@pytest.mark.parametrize(
    "total,window,overlap",
    [(100, 32, 8), (33, 32, 8), (64, 32, 16), (250, 64, 16), (375, 64, 16), (88, 32, 8)],
)
def test_window_plan_covers_the_clip_with_the_fewest_evenly_spread_windows(total, window, overlap):
    plan = plan_windows(total, window, overlap)
    n = len(plan.starts)
    assert plan.starts[0] == 0 and plan.starts[-1] + window == total  # the last window ends with the clip
    steps = [b - a for a, b in zip(plan.starts, plan.starts[1:])]
    assert all(plan.held(k) >= overlap for k in range(1, n))  # every seam overlaps at least as asked
    assert max(steps) - min(steps) <= 1  # evenly spread
    assert (n - 2) * (window - overlap) + window < total  # one window fewer could not cover the clip
    assert plan.overlap == overlap


def test_window_plan_of_a_short_clip_is_one_window_and_bad_overlaps_are_refused():
    assert plan_windows(20, 32, 8).starts == (0,) and plan_windows(20, 32, 8).window == 20
    with pytest.raises(ValueError, match="overlap"):
        plan_windows(100, 32, 32)


# ------------------------------------------------------------------------------------------ stitching
def test_crossfade_gains_keep_power_for_independent_and_level_for_identical_signals():
    a, b = crossfade_gains(1000, 0.0)
    np.testing.assert_allclose(a**2 + b**2, 1.0, atol=1e-6)  # equal power
    a, b = crossfade_gains(1000, 1.0)
    np.testing.assert_allclose(a + b, 1.0, atol=1e-6)  # equal gain
    assert a[0] > 0.99 and b[-1] > 0.99 and np.all(np.diff(a) < 0)


def test_crossfade_into_joins_a_signal_with_itself_seamlessly_and_noise_at_its_power():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3000)).astype(np.float32)
    out = np.zeros_like(x)
    crossfade_into(out, x[:, :2000], 0, 0)
    crossfade_into(out, x[:, 1500:], 1500, 500)  # the overlap holds the same samples twice
    np.testing.assert_allclose(out, x, atol=1e-5)
    out = np.zeros((1, 40000), np.float32)
    first, second = rng.standard_normal((2, 1, 30000)).astype(np.float32)
    crossfade_into(out, first, 0, 0)
    crossfade_into(out, second, 10000, 20000)  # independent noise over the whole overlap
    assert abs(correlation(first[:, 10000:], second[:, :20000])[0]) < 0.05
    assert np.mean(out[0, 10000:30000] ** 2) == pytest.approx(1.0, rel=0.05)


# ------------------------------------------------------------------------------------------ pipeline
@pytest.mark.parametrize("name", SCHEDULERS)
def test_long_clips_work_with_every_sampler(tiny_pipe, name):
    """Each window is a fresh reverse process, also for multistep samplers that keep past outputs."""
    set_scheduler(tiny_pipe, name)
    out = run(tiny_pipe, 3.0, output_type="latent")
    assert out.parameters["windows"] > 1 and torch.isfinite(out.audios).all()


def test_long_clip_has_the_asked_length_and_is_deterministic(tiny_pipe):
    out = run(tiny_pipe, 4.0)
    assert out.audios.shape == (1, 4 * tiny_pipe.sample_rate)
    assert np.isfinite(out.audios).all() and np.abs(out.audios).max() <= 1.0
    assert out.parameters["windows"] == len(tiny_pipe.window_plan(4.0).starts) > 1
    assert out.parameters["window_overlap_s"] == pytest.approx(tiny_pipe.default_audio_length_in_s / 4)
    np.testing.assert_array_equal(out.audios, run(tiny_pipe, 4.0).audios)
    assert not np.array_equal(
        out.audios, run(tiny_pipe, 4.0, generator=torch.Generator().manual_seed(1)).audios
    )


def test_first_window_equals_a_one_window_clip_and_later_windows_keep_it(tiny_pipe):
    """Window 0 of a long clip is the short clip made from the same noise, and the windows after it only
    continue it: the frames it made are held, not redone."""
    plan = tiny_pipe.window_plan(3.0)
    noise = torch.randn(tiny_pipe.latent_shape(1, 3.0), generator=torch.Generator().manual_seed(3))
    long = run(tiny_pipe, 3.0, latents=noise, output_type="latent").audios
    window_s = tiny_pipe.default_audio_length_in_s
    short = run(tiny_pipe, window_s, latents=noise[:, :, : plan.window], output_type="latent").audios
    torch.testing.assert_close(long[:, :, : plan.window], short, rtol=1e-5, atol=1e-5)
    assert long.shape[2] == plan.total


def test_memory_stays_flat_the_unet_and_vae_see_one_window_at_a_time(tiny_pipe):
    seen = []
    hooks = [
        tiny_pipe.unet.register_forward_pre_hook(lambda m, a: seen.append(("unet", a[0].shape[2]))),
        tiny_pipe.vae.decoder.register_forward_pre_hook(lambda m, a: seen.append(("vae", a[0].shape[2]))),
    ]
    run(tiny_pipe, 6.0)
    for h in hooks:
        h.remove()
    window = tiny_pipe.window_frames
    assert {frames for _, frames in seen} == {window}
    assert sum(name == "vae" for name, _ in seen) == len(tiny_pipe.window_plan(6.0).starts)


def test_step_callback_counts_over_all_windows(tiny_pipe):
    steps = []
    run(tiny_pipe, 4.0, callback_on_step_end=lambda pipe, i, t, d: steps.append(i) or {})
    windows = len(tiny_pipe.window_plan(4.0).starts)
    assert steps == list(range(windows * STEPS)) and tiny_pipe.num_timesteps == windows * STEPS


def test_mel_output_of_a_long_clip_and_the_overlap_option(tiny_pipe):
    mel = run(tiny_pipe, 4.0, output_type="mel").audios
    assert mel.shape[:2] == (1, 1) and mel.shape[3] == tiny_pipe.vocoder.config.n_mels
    assert mel.shape[2] >= 4.0 * tiny_pipe.sample_rate / tiny_pipe.vocoder.config.hop_length
    wide = run(tiny_pipe, 4.0, window_overlap_s=0.64)
    assert wide.parameters["window_overlap_s"] == pytest.approx(0.64)
    assert wide.parameters["windows"] > run(tiny_pipe, 4.0).parameters["windows"]
    for bad in (0.0, tiny_pipe.default_audio_length_in_s, -1):
        with pytest.raises(MelfusionInputError, match="window_overlap_s"):
            run(tiny_pipe, 4.0, window_overlap_s=bad)
