"""Diffusion training targets and weights (pure functions)."""

from __future__ import annotations

import torch
from diffusers.training_utils import compute_snr


def diffusion_target(
    scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """The regression target for the scheduler's parameterisation: ε (Eq. 7) or v = α_t ε − σ_t x_0."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise ValueError(f"unsupported prediction_type {kind!r}")


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weights (Hang et al. 2023), (B,): min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR + 1) for v."""
    snr = compute_snr(scheduler, timesteps)
    clipped = torch.clamp(snr, max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    if scheduler.config.prediction_type == "sample":
        return clipped
    return clipped / snr


def diffusion_loss(
    pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample MSE (mean over C, H, W), optionally weighted, then the batch mean."""
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(1)  # (B,)
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample)
    return per_sample.mean()
