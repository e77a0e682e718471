"""The image conditioner: the one piece of code that turns (image, timesteps) into synapse features.

Training (Alg. 1 line 7), inference (Alg. 2 line 6), the trainer's feature cache and the benchmarks all go
through :class:`ImageConditioner`, so a model is fed at sampling time exactly what it was trained on.

Definition. For an image latent z^I_0 and an ascending timestep grid t_1 < … < t_N, DDIM inversion with the
null prompt gives the trajectory z^I_{t_1}, …, z^I_{t_N} (diffusers' ``DDIMInverseScheduler`` convention: the
step to t_k evaluates ε_ψ(z^I_{t_{k-1}}, ∅, t_k)). The synapse features at timestep t are the decoder
self-attention K/V of ε_ψ(z^I_t, ∅, t), z^I_t the trajectory latent at t (the nearest grid point when t is
off the grid, as in training, where t is drawn from [0, T)).

- Per-step models (the paper): the grid is the music scheduler's own timesteps, so every music step t reads
  ε_ψ(z^I_t, ∅, t) at that very t, whatever the scheduler (DDIM, DDPM, DPM-Solver++).
- A synapse that records one image timestep t_I reads ε_ψ(z^I_{t_I}, ∅, t_I) at every step; its grid is the
  one it was trained with (``VisualSynapse.config.image_inversion_grid``), inverted only up to t_I.

The inversion runs on arbitrary integer grids (a DPM-Solver++ grid is not DDIM's), with the DDIM update of
diffusers' ``DDIMScheduler`` / ``DDIMInverseScheduler`` (identical to them on their own grids; tested).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm

from melfusion.guidance.capture import capture_decoder_self_attention
from melfusion.guidance.visual_guidance import VisualGuidance

KV = list[tuple[torch.Tensor, torch.Tensor]]

# "trajectory": ε_ψ(z^I_t, ∅, t) on the inverted trajectory (Alg. 1 line 7 / Alg. 2; what training uses).
# "inversion-lagged": the K/V the inversion pass records, ε_ψ(z^I_{t_prev}, ∅, t): one step less noisy, no
#   extra UNet calls (N instead of 2N); not the training features (benchmarks/bench_sampling.py measures it).
# "reverse": Alg. 2 read literally as a second DDIM pass from z^I_T, ε_ψ(ẑ^I_t, ∅, t) with ẑ re-sampled.
CAPTURE_MODES = ("trajectory", "inversion-lagged", "reverse")
CAPTURE_ALIASES = {"inversion": "inversion-lagged"}  # the name before 2026-12-07


def normalize_capture(capture: str) -> str:
    """A capture mode's canonical name (old names accepted); ValueError for an unknown one."""
    capture = CAPTURE_ALIASES.get(capture, capture)
    if capture not in CAPTURE_MODES:
        raise ValueError(f"capture must be one of {CAPTURE_MODES}, got {capture!r}")
    return capture


@dataclass
class InversionTrajectory:
    """DDIM inversion path of one image latent: ``latents[0]`` = z_0, ``latents[i + 1]`` = z at
    ``timesteps[i]`` (ascending). A prefix of the grid when the inversion stopped early."""

    timesteps: torch.Tensor  # (N,) long, ascending
    latents: torch.Tensor  # (N + 1, C, h, w)

    def index_for(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) timesteps → (B,) index of the nearest grid point (ties: the lower one)."""
        ts = self.timesteps.to(t.device)
        return (ts[None, :] - t[:, None].to(ts.dtype)).abs().argmin(dim=1)

    def latent_at(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) timesteps → (B, C, h, w) latents z^I at the nearest grid point."""
        return self.latents.to(t.device)[self.index_for(t) + 1]


def ddim_transfer(
    sample: torch.Tensor,
    model_output: torch.Tensor,
    alpha_from: torch.Tensor,
    alpha_to: torch.Tensor,
    prediction_type: str,
) -> torch.Tensor:
    """Deterministic DDIM move of ``sample`` from ᾱ_from to ᾱ_to (up for inversion, down for sampling):
    z_to = √ᾱ_to x̂_0 + √(1 − ᾱ_to) ε̂, with (x̂_0, ε̂) read off ``model_output`` at ᾱ_from (DDIM Eq. 12, η = 0)."""
    beta_from = 1 - alpha_from
    if prediction_type == "epsilon":
        eps = model_output
        x0 = (sample - beta_from**0.5 * eps) / alpha_from**0.5
    elif prediction_type == "v_prediction":
        x0 = alpha_from**0.5 * sample - beta_from**0.5 * model_output
        eps = alpha_from**0.5 * model_output + beta_from**0.5 * sample
    elif prediction_type == "sample":
        x0 = model_output
        eps = (sample - alpha_from**0.5 * x0) / beta_from**0.5
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}")
    return alpha_to**0.5 * x0 + (1 - alpha_to) ** 0.5 * eps


class ImageConditioner:
    """The frozen image LDM seen as a feature extractor for the visual synapse.

    Args:
        unet / vae: the image LDM's UNet ε_ψ and VAE.
        image_scheduler_config: the image LDM's noise schedule (betas, prediction type).
        null_prompt_embeds: (1, S, D) the image LDM's null-prompt embedding ∅.
        music_scheduler_config: the music scheduler's config; training grids (``inversion_grid``) follow its
            timestep spacing, so they coincide with DDIM sampling grids of the music model.
        device: where to compute (default: the UNet's; a pipeline under CPU offload passes its execution device).
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        image_scheduler_config: dict,
        null_prompt_embeds: torch.Tensor,
        music_scheduler_config: dict | None = None,
        device: torch.device | str | None = None,
    ):
        self.unet = unet
        self.vae = vae
        self.device = torch.device(device) if device is not None else unet.device
        cfg = {k: v for k, v in dict(image_scheduler_config).items() if not k.startswith("_")}
        self.prediction_type = cfg.get("prediction_type", "epsilon")
        schedule = DDIMScheduler.from_config(cfg)
        self.alphas_cumprod = schedule.alphas_cumprod.to(torch.float32)  # (T,)
        # ᾱ below the first grid point: DDIM's final ᾱ (= the inverse scheduler's initial one)
        self.alpha_clean = torch.tensor(1.0) if cfg.get("set_alpha_to_one", True) else self.alphas_cumprod[0]
        self.num_train_timesteps = int(schedule.config.num_train_timesteps)
        grid_cfg = dict(cfg)
        if music_scheduler_config is not None:
            for key in ("timestep_spacing", "steps_offset", "num_train_timesteps"):
                if key in music_scheduler_config:
                    grid_cfg[key] = music_scheduler_config[key]
        self._grid_scheduler = DDIMScheduler.from_config(grid_cfg)
        self.null_prompt_embeds = null_prompt_embeds

    # ------------------------------------------------------------------------------------------ grids
    def inversion_grid(self, num_steps: int) -> torch.Tensor:
        """Ascending (N,) long: the DDIM grid of ``num_steps`` steps with the music scheduler's spacing."""
        self._grid_scheduler.set_timesteps(num_steps)
        return self._grid_scheduler.timesteps.flip(0).long().cpu()

    def grid_from_timesteps(self, timesteps: torch.Tensor) -> torch.Tensor:
        """A sampler's timesteps (any order, e.g. DPM-Solver++'s) → the ascending integer grid they form."""
        ts = torch.as_tensor(timesteps).detach().cpu()
        if ts.is_floating_point() and not torch.equal(ts, ts.round()):
            raise ValueError(
                "the image branch needs integer timesteps; this scheduler uses fractional ones "
                f"({ts[:3].tolist()}…); use ddim, ddpm or dpmsolver++"
            )
        grid = torch.unique(ts.long())  # sorted ascending
        if int(grid[0]) < 0 or int(grid[-1]) >= self.num_train_timesteps:
            raise ValueError(f"timesteps outside [0, {self.num_train_timesteps}): {grid.tolist()}")
        return grid

    def _alpha(self, t: int) -> torch.Tensor:
        return self.alphas_cumprod[t] if t >= 0 else self.alpha_clean

    # ----------------------------------------------------------------------------------- computation
    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → VAE posterior mode × scaling factor, (B, C, H/f, W/f)."""
        latent = self.vae.encode(pixels.to(device=self.device, dtype=self.vae.dtype)).latent_dist.mode()
        return latent * self.vae.config.scaling_factor

    def _null(self, batch: int) -> torch.Tensor:
        return self.null_prompt_embeds.to(device=self.device, dtype=self.unet.dtype).expand(batch, -1, -1)

    @torch.no_grad()
    def invert(
        self,
        latents: torch.Tensor,
        grid: torch.Tensor,
        until: int | None = None,
        on_step: Callable[[int, KV | None], None] | None = None,
        capture: bool = False,
    ) -> list[InversionTrajectory]:
        """DDIM inversion of (B, C, h, w) latents along the ascending ``grid``: one trajectory per row.

        ``until``: stop once the grid point nearest to this timestep is reached (the latent a fixed image
        timestep reads). ``capture``: hand ``on_step(t, kv)`` the K/V of each inversion call, ε(z_{t_prev}, t)."""
        grid = grid.long().cpu()
        stop = len(grid) if until is None else int((grid - int(until)).abs().argmin()) + 1
        z = latents.to(device=self.device, dtype=self.unet.dtype)
        null = self._null(z.shape[0])
        path, t_prev = [z], -1
        ctx = capture_decoder_self_attention(self.unet) if capture else nullcontext()
        with ctx as store:
            for t in grid[:stop].tolist():
                out = self.unet(z, t, encoder_hidden_states=null).sample
                if on_step is not None:
                    on_step(t, list(store) if capture else None)  # type: ignore[arg-type]
                z = ddim_transfer(z, out, self._alpha(t_prev), self._alpha(t), self.prediction_type)
                path.append(z)
                t_prev = t
        stacked = torch.stack(path, dim=1).cpu()  # (B, K + 1, C, h, w)
        return [InversionTrajectory(grid[:stop].clone(), row) for row in stacked]

    @torch.no_grad()
    def features(
        self, latents: torch.Tensor, timesteps: torch.Tensor, dtype: torch.dtype | None = None
    ) -> KV:
        """Decoder self-attention K/V of ε_ψ(z^I_t, ∅, t): latents (B, C, h, w), timesteps (B,)
        → per layer (K, V), each (B, N_l, C_l)."""
        with capture_decoder_self_attention(self.unet, dtype) as store:
            self.unet(
                latents.to(device=self.device, dtype=self.unet.dtype),
                timesteps.to(self.device),
                encoder_hidden_states=self._null(latents.shape[0]),
            )
            return list(store)  # type: ignore[arg-type]

    def features_on(self, trajectories: list[InversionTrajectory], timesteps: torch.Tensor) -> KV:
        """Alg. 1 line 7 for a batch: row b reads ε_ψ(z^I_{t_b}, ∅, t_b) on its own image's trajectory.
        ``timesteps`` (B,) are image timesteps (the music t, or a synapse's fixed t_I)."""
        ts = timesteps.detach().cpu().long()
        z = torch.stack([traj.latent_at(t[None])[0] for traj, t in zip(trajectories, ts)])
        return self.features(z, ts)

    @torch.no_grad()
    def guidance(
        self,
        latent: torch.Tensor,
        grid: torch.Tensor,
        capture: str = "trajectory",
        image_timestep: int | None = None,
        store_dtype: torch.dtype | None = None,
        batch_size: int = 8,
        progress: bool = True,
        store_device: torch.device | str | None = None,
    ) -> VisualGuidance:
        """All the features one sampling run needs, for one image latent (1, C, h, w).

        ``grid``: ascending timesteps of the image branch (the music scheduler's, or ``inversion_grid`` for a
        fixed ``image_timestep`` or fewer image steps). ``batch_size``: image UNet rows per feature call.
        ``store_device`` / ``store_dtype``: where the K/V are kept as they are recorded (e.g. the CPU, so a
        long capture does not accumulate on the accelerator); default: as computed."""
        capture = normalize_capture(capture)
        if latent.shape[0] != 1:
            raise ValueError("guidance takes one image latent (1, C, h, w)")
        grid = grid.long().cpu()
        until = image_timestep if capture != "reverse" else None
        n_inv = len(grid) if until is None else int((grid - int(until)).abs().argmin()) + 1
        n_feat = {"trajectory": 1 if image_timestep is not None else n_inv, "inversion-lagged": 0}
        bar = tqdm(
            total=n_inv + n_feat.get(capture, len(grid)),
            desc="image branch",
            disable=not progress,
            leave=False,
        )
        captured: dict[int, KV] = {}

        def keep(kv: KV) -> KV:
            return [
                (k.to(store_device or k.device, store_dtype), v.to(store_device or v.device, store_dtype))
                for k, v in kv
            ]

        def record(t: int, kv: KV | None) -> None:
            if kv is not None:
                captured[t] = keep(kv)
            bar.update()

        traj = self.invert(latent, grid, until=until, on_step=record, capture=capture == "inversion-lagged")[
            0
        ]
        reconstruction = None
        if capture == "trajectory":
            wanted = traj.timesteps if image_timestep is None else torch.tensor([int(image_timestep)])
            for chunk in wanted.split(batch_size):
                kv = self.features(traj.latent_at(chunk), chunk)
                for i, t in enumerate(chunk.tolist()):
                    captured[t] = keep([(k[i : i + 1], v[i : i + 1]) for k, v in kv])
                bar.update(len(chunk))
        elif capture == "reverse":
            reconstruction = self._reverse(traj, grid, lambda t, kv: record(t, kv))
        bar.close()
        timesteps = sorted(captured, reverse=True)
        return VisualGuidance(
            timesteps=timesteps,
            kv=[captured[t] for t in timesteps],
            latents=list(traj.latents.unbind(0)),
            reconstruction=reconstruction,
            meta={"capture": capture, "grid": grid.tolist(), "image_timestep": image_timestep},
        )

    def _reverse(
        self, traj: InversionTrajectory, grid: torch.Tensor, on_step: Callable[[int, KV], None]
    ) -> torch.Tensor:
        """DDIM sampling from z_T down the same grid, handing ``on_step`` ε(ẑ_t, t)'s K/V at each t; returns ẑ_0."""
        z = traj.latents[-1:].to(device=self.device, dtype=self.unet.dtype)
        null, ts = self._null(1), grid.tolist()
        with capture_decoder_self_attention(self.unet) as store:
            for i in range(len(ts) - 1, -1, -1):
                out = self.unet(z, ts[i], encoder_hidden_states=null).sample
                on_step(ts[i], list(store))  # type: ignore[arg-type]
                t_below = ts[i - 1] if i > 0 else -1
                z = ddim_transfer(z, out, self._alpha(ts[i]), self._alpha(t_below), self.prediction_type)
        return z

    @torch.no_grad()
    def reconstruct(self, z_T: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Deterministic DDIM sampling from z_T along ``grid`` with the null prompt (undoes ``invert``)."""
        z = z_T.to(device=self.device, dtype=self.unet.dtype)
        null, ts = self._null(z.shape[0]), grid.long().tolist()
        for i in range(len(ts) - 1, -1, -1):
            out = self.unet(z, ts[i], encoder_hidden_states=null).sample
            t_below = ts[i - 1] if i > 0 else -1
            z = ddim_transfer(z, out, self._alpha(ts[i]), self._alpha(t_below), self.prediction_type)
        return z
