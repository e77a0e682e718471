"""The image conditioner: DDIM inversion on any grid, and the features training and sampling share."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler
from melfusion_testing import tiny_image_unet

from melfusion.guidance.capture import capture_decoder_self_attention
from melfusion.guidance.conditioner import ImageConditioner, normalize_capture
from melfusion.models.tiny import SD_LIKE_SCHEDULER

SCHED = SD_LIKE_SCHEDULER
NULL = torch.zeros(1, 3, 12)


def _latent(seed=2):
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def _conditioner(prediction_type="epsilon", damp=1.0, music=None, **sched):
    cfg = {**SCHED, "prediction_type": prediction_type, **sched}
    return ImageConditioner(tiny_image_unet(damp=damp), None, cfg, NULL, music)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_inversion_equals_diffusers_ddim_inverse_scheduler(prediction_type, spacing):
    """On DDIM's own grid the conditioner's inversion is diffusers' DDIMInverseScheduler loop."""
    cond = _conditioner(prediction_type, damp=0.1, music={"timestep_spacing": spacing})
    z0 = _latent()
    grid = cond.inversion_grid(10)
    (traj,) = cond.invert(z0, grid)

    inverse = DDIMInverseScheduler.from_config(
        {**SCHED, "prediction_type": prediction_type, "timestep_spacing": spacing}
    )
    inverse.set_timesteps(10)
    assert inverse.timesteps.tolist() == grid.tolist()
    z, want = z0, [z0]
    for t in inverse.timesteps:
        z = inverse.step(cond.unet(z, t, encoder_hidden_states=NULL).sample, t, z).prev_sample
        want.append(z)
    torch.testing.assert_close(traj.latents, torch.cat(want), rtol=0, atol=1e-6)
    assert traj.timesteps.tolist() == grid.tolist()


@pytest.mark.parametrize(("prediction_type", "tol"), [("epsilon", 0.04), ("v_prediction", 0.08)])
def test_inversion_then_ddim_sampling_reconstructs_latent(prediction_type, tol):
    """DDIM inversion is exact up to the ε(z_{t_prev}, t) ≈ ε(z_t, t) approximation, so its error shrinks
    with the step count and with the smoothness of ε_ψ (a random UNet's output layer is damped ×0.1 here)."""
    cond = _conditioner(prediction_type, damp=0.1)
    z0, errors = _latent(), {}
    for steps in (10, 50):
        grid = cond.inversion_grid(steps)
        g = cond.guidance(z0, grid, capture="reverse", progress=False)
        errors[steps] = ((g.reconstruction - z0).norm() / z0.norm()).item()
    assert errors[50] < tol, errors
    assert errors[50] < 0.6 * errors[10], errors  # converges with more steps
    z_T = g.latents[-1][None]
    assert len(g.latents) == 51 and (z_T - z0).norm() / z0.norm() > 0.02  # it did move
    torch.testing.assert_close(cond.reconstruct(z_T, grid), g.reconstruction, rtol=0, atol=1e-5)
    # diffusers' DDIMScheduler undoes it the same way
    fwd = DDIMScheduler.from_config({**SCHED, "prediction_type": prediction_type})
    fwd.set_timesteps(50)
    z = z_T
    for t in fwd.timesteps:
        z = fwd.step(cond.unet(z, t, encoder_hidden_states=NULL).sample, t, z).prev_sample
    torch.testing.assert_close(z, g.reconstruction, rtol=0, atol=1e-5)


def test_trajectory_features_are_the_image_unet_at_the_trajectory_latent():
    """capture="trajectory": at grid point t the K/V of ε_ψ(z^I_t, ∅, t), z^I_t the inverted latent at t."""
    cond = _conditioner(damp=0.1)
    z0, grid = _latent(), cond.inversion_grid(6)
    g = cond.guidance(z0, grid, capture="trajectory", progress=False, batch_size=1)
    (traj,) = cond.invert(z0, grid)
    assert g.timesteps == sorted(grid.tolist(), reverse=True)
    for i, t in enumerate(grid.tolist()):
        with capture_decoder_self_attention(cond.unet) as store:
            cond.unet(traj.latents[i + 1 : i + 2], t, encoder_hidden_states=NULL)
        for (k, v), (k_want, v_want) in zip(g.at(t), store):
            torch.testing.assert_close(k, k_want, rtol=0, atol=1e-6)
            torch.testing.assert_close(v, v_want, rtol=0, atol=1e-6)


def test_lagged_capture_is_one_step_less_noisy_and_reverse_re_samples():
    """ "inversion-lagged" records ε_ψ(z^I_{t_prev}, ∅, t): the same UNet call at the previous latent."""
    cond = _conditioner(damp=0.1)
    z0, grid = _latent(), cond.inversion_grid(6)
    lagged = cond.guidance(z0, grid, capture="inversion-lagged", progress=False)
    (traj,) = cond.invert(z0, grid)
    for i, t in enumerate(grid.tolist()):
        with capture_decoder_self_attention(cond.unet) as store:
            cond.unet(traj.latents[i : i + 1], t, encoder_hidden_states=NULL)  # z at the previous grid point
        torch.testing.assert_close(lagged.at(t)[0][0], store[0][0], rtol=0, atol=1e-6)
    exact = cond.guidance(z0, grid, capture="trajectory", progress=False)
    reverse = cond.guidance(z0, grid, capture="reverse", progress=False)
    assert lagged.timesteps == exact.timesteps == reverse.timesteps
    assert not torch.allclose(lagged.at(int(grid[2]))[0][0], exact.at(int(grid[2]))[0][0], atol=1e-4)
    assert reverse.reconstruction is not None and exact.reconstruction is None
    assert normalize_capture("inversion") == "inversion-lagged"  # the old name
    with pytest.raises(ValueError, match="capture must be one of"):
        normalize_capture("both")


def test_fixed_image_timestep_inverts_only_up_to_it():
    cond = _conditioner(damp=0.1)
    z0, grid = _latent(), cond.inversion_grid(50)  # 1, 21, ..., 981
    calls = []
    hook = cond.unet.register_forward_hook(lambda *_: calls.append(1))
    g = cond.guidance(z0, grid, image_timestep=200, progress=False)
    hook.remove()
    assert g.timesteps == [200] and len(calls) == 11 + 1  # inversion to 201, one feature call
    (traj,) = cond.invert(z0, grid)
    assert torch.equal(traj.latents[11], g.latents[11])  # the latent at 201: nearest to 200
    with capture_decoder_self_attention(cond.unet) as store:
        cond.unet(traj.latents[11:12], 200, encoder_hidden_states=NULL)
    torch.testing.assert_close(g.at(981)[0][0], store[0][0], rtol=0, atol=1e-6)  # every step reads t_I


def test_arbitrary_grids_and_their_errors():
    cond = _conditioner(damp=0.1)
    grid = cond.grid_from_timesteps(torch.tensor([951, 20, 500, 500]))
    assert grid.tolist() == [20, 500, 951]
    (traj,) = cond.invert(_latent(), grid)
    assert traj.index_for(torch.tensor([0, 260, 270, 999])).tolist() == [0, 0, 1, 2]
    with pytest.raises(ValueError, match="integer timesteps"):
        cond.grid_from_timesteps(torch.tensor([999.0, 500.5]))
    with pytest.raises(ValueError, match="outside"):
        cond.grid_from_timesteps(torch.tensor([1000, 3]))


def test_grid_follows_the_music_spacing():
    assert _conditioner(music={"timestep_spacing": "trailing"}).inversion_grid(4).tolist() == [
        249,
        499,
        749,
        999,
    ]
    assert _conditioner().inversion_grid(4).tolist() == [1, 251, 501, 751]


def test_batched_inversion_equals_one_image_at_a_time():
    cond = _conditioner(damp=0.1)
    z = torch.cat([_latent(), -_latent(), 0.5 * _latent()])
    grid = cond.inversion_grid(6)
    batch = cond.invert(z, grid)
    assert len(batch) == 3
    for i, traj in enumerate(batch):
        (one,) = cond.invert(z[i : i + 1], grid)
        assert traj.latents.shape == one.latents.shape == (7, *z.shape[1:])
        torch.testing.assert_close(traj.latents, one.latents, rtol=0, atol=1e-5)
