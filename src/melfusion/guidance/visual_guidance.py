"""The image branch of MeLFusion (Alg. 2, lines 1 and 6): DDIM-invert the image latent with the null
prompt, then collect the frozen image UNet's decoder self-attention K/V at every sampling timestep.

The image branch never sees the music latent, so its features depend only on (image, schedule): they are
computed once into a :class:`VisualGuidance` and reused across CFG branches, samples and calls
(:class:`GuidanceCache`)."""

from __future__ import annotations

import bisect
import inspect
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMInverseScheduler, DDIMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm

from melfusion.guidance.capture import capture_decoder_self_attention

CAPTURE_MODES = ("reverse", "inversion")  # "none" (inversion only) is internal, see ddim_invert


@dataclass
class VisualGuidance:
    """Per-timestep decoder self-attention K/V of the image LDM for one image.

    kv[i][l] = (K, V), each (1, N_l, C_l), captured at ``timesteps[i]`` (descending, the sampling order).
    ``latents`` holds the inverted trajectory z^I_{t} (ascending noise, first = clean latent)."""

    timesteps: list[int]
    kv: list[list[tuple[torch.Tensor, torch.Tensor]]] = field(repr=False)
    latents: list[torch.Tensor] = field(default_factory=list, repr=False)
    reconstruction: torch.Tensor | None = field(
        default=None, repr=False
    )  # z^I_0 after re-sampling (capture="reverse" only)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._sorted = sorted(range(len(self.timesteps)), key=lambda i: self.timesteps[i])
        self._sorted_t = [self.timesteps[i] for i in self._sorted]

    @property
    def num_layers(self) -> int:
        return len(self.kv[0]) if self.kv else 0

    def index_for(self, timestep: int | float | torch.Tensor) -> int:
        """Index of the captured timestep nearest to ``timestep`` (exact when the schedules agree)."""
        t = float(timestep.item() if isinstance(timestep, torch.Tensor) else timestep)
        pos = bisect.bisect_left(self._sorted_t, t)
        cands = [p for p in (pos - 1, pos) if 0 <= p < len(self._sorted_t)]
        best = min(cands, key=lambda p: abs(self._sorted_t[p] - t))
        return self._sorted[best]

    def at(self, timestep: int | float | torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.kv[self.index_for(timestep)]

    def nbytes(self) -> int:
        n = sum(
            k.numel() * k.element_size() + v.numel() * v.element_size() for step in self.kv for k, v in step
        )
        return n + sum(z.numel() * z.element_size() for z in self.latents)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> VisualGuidance:
        kv = [
            [(k.to(device=device, dtype=dtype), v.to(device=device, dtype=dtype)) for k, v in s]
            for s in self.kv
        ]
        return VisualGuidance(self.timesteps, kv, self.latents, self.reconstruction, dict(self.meta))


def stack_guidance(
    guidances: list[VisualGuidance], timestep: int | float | torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (K, V) with the images stacked on the batch axis: (B_img, N_l, C_l)."""
    steps = [g.at(timestep) for g in guidances]
    if len(steps) == 1:
        return steps[0]
    return [
        (torch.cat([s[layer][0] for s in steps]), torch.cat([s[layer][1] for s in steps]))
        for layer in range(len(steps[0]))
    ]


def make_image_schedulers(
    image_scheduler_config: dict, music_scheduler_config: dict | None = None
) -> tuple[DDIMScheduler, DDIMInverseScheduler]:
    """DDIM and DDIM-inverse schedulers for the image LDM whose timesteps follow the music scheduler's
    spacing, so that each music step has an image capture at the very same timestep."""
    cfg = {k: v for k, v in dict(image_scheduler_config).items() if not k.startswith("_")}
    cfg["clip_sample"] = False
    if music_scheduler_config is not None:
        spacing = music_scheduler_config.get("timestep_spacing", "leading")
        cfg["timestep_spacing"] = "leading" if spacing == "leading" else "trailing"
        cfg["steps_offset"] = (
            int(music_scheduler_config.get("steps_offset", 0)) if spacing == "leading" else 0
        )
    forward = DDIMScheduler.from_config(cfg)
    accepted = set(inspect.signature(DDIMInverseScheduler.__init__).parameters)
    inverse = DDIMInverseScheduler.from_config({k: v for k, v in cfg.items() if k in accepted})
    return forward, inverse


@torch.no_grad()
def encode_image_latent(vae: AutoencoderKL, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] → VAE posterior mode × scaling factor, (B, C, H/f, W/f)."""
    pixels = pixels.to(device=vae.device, dtype=vae.dtype)
    latent = vae.encode(pixels).latent_dist.mode()
    return latent * vae.config.scaling_factor


@torch.no_grad()
def compute_visual_guidance(
    image_latent: torch.Tensor,
    *,
    unet: UNet2DConditionModel,
    scheduler: DDIMScheduler | None,
    inverse_scheduler: DDIMInverseScheduler,
    null_prompt_embeds: torch.Tensor,
    num_inference_steps: int,
    capture: str = "inversion",
    store_dtype: torch.dtype | None = None,
    progress: bool = True,
    stop_at_timestep: int | None = None,
) -> VisualGuidance:
    """DDIM inversion of ``image_latent`` (1, C, h, w) with the null prompt, plus K/V capture.

    capture="reverse" (paper Alg. 2 literally): invert z_0 → z_T, then run ε_ψ(z^I_t, ∅, t) down the same
    timesteps from z_T, capturing at each t (2N image UNet calls).
    capture="inversion": capture during the inversion pass itself (N calls). DDIM inversion evaluates
    ε_ψ(z_{t_prev}, ∅, t) to step z_{t_prev} → z_t; the capture of that call is used for timestep t, the same
    approximation (ε(z_{t_prev}, t) ≈ ε(z_t, t)) inversion itself rests on.

    ``stop_at_timestep`` (capture="inversion" only): end the inversion at the first timestep >= it. For a
    synapse that reads one fixed image timestep this captures the two steps around it, so the nearest capture
    is the one the full pass would give, without the rest of the pass."""
    if capture not in (*CAPTURE_MODES, "none"):
        raise ValueError(f"capture must be one of {CAPTURE_MODES}, got {capture!r}")
    if image_latent.shape[0] != 1:
        raise ValueError("compute_visual_guidance takes one image latent (1, C, h, w)")
    device, dtype = unet.device, unet.dtype
    z = image_latent.to(device=device, dtype=dtype)
    null = null_prompt_embeds.to(device=device, dtype=dtype)
    inverse_scheduler.set_timesteps(num_inference_steps, device=device)

    latents = [z]
    captured: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    bar = tqdm(
        total=num_inference_steps * (1 if capture == "inversion" else 2),
        desc="image inversion",
        disable=not progress,
        leave=False,
    )
    with capture_decoder_self_attention(unet, store_dtype) as store:
        for t in inverse_scheduler.timesteps:  # ascending noise
            eps = unet(z, t, encoder_hidden_states=null).sample
            if capture == "inversion":
                captured[int(t)] = list(store)  # type: ignore[arg-type]
            z = inverse_scheduler.step(eps, t, z).prev_sample
            latents.append(z)
            bar.update()
            if capture == "inversion" and stop_at_timestep is not None and int(t) >= stop_at_timestep:
                break
        reconstruction = None
        if capture == "reverse":
            assert scheduler is not None
            scheduler.set_timesteps(num_inference_steps, device=device)
            for t in scheduler.timesteps:  # descending
                eps = unet(z, t, encoder_hidden_states=null).sample
                captured[int(t)] = list(store)  # type: ignore[arg-type]
                z = scheduler.step(eps, t, z).prev_sample
                bar.update()
            reconstruction = z
    bar.close()
    timesteps = sorted(captured, reverse=True)
    return VisualGuidance(
        timesteps=timesteps,
        kv=[captured[t] for t in timesteps],
        latents=latents,
        reconstruction=reconstruction,
        meta={
            "capture": capture,
            "num_inference_steps": num_inference_steps,
            "stop_at_timestep": stop_at_timestep if capture == "inversion" else None,
        },
    )


@torch.no_grad()
def ddim_reconstruct(
    z_T: torch.Tensor,
    *,
    unet: UNet2DConditionModel,
    scheduler: DDIMScheduler,
    null_prompt_embeds: torch.Tensor,
    num_inference_steps: int,
) -> torch.Tensor:
    """Deterministic DDIM sampling from z_T with the null prompt (the inverse of the inversion)."""
    scheduler.set_timesteps(num_inference_steps, device=unet.device)
    z = z_T.to(device=unet.device, dtype=unet.dtype)
    for t in scheduler.timesteps:
        eps = unet(z, t, encoder_hidden_states=null_prompt_embeds).sample
        z = scheduler.step(eps, t, z).prev_sample
    return z


@dataclass
class InversionTrajectory:
    """DDIM inversion path of one image latent: ``latents[0]`` = z_0, ``latents[i + 1]`` = z at
    ``timesteps[i]`` (ascending). Training (Alg. 1, line 7) evaluates ε_ψ(z^I_t, ∅, t) on it."""

    timesteps: torch.Tensor  # (N,) long, ascending
    latents: torch.Tensor  # (N + 1, C, h, w)

    def latent_at(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) timesteps → (B, C, h, w) latents of the nearest inversion step."""
        ts = self.timesteps.to(t.device)
        idx = (ts[None, :] - t[:, None].to(ts.dtype)).abs().argmin(dim=1)  # (B,)
        return self.latents.to(t.device)[idx + 1]


@torch.no_grad()
def ddim_invert(
    image_latent: torch.Tensor,
    *,
    unet: UNet2DConditionModel,
    inverse_scheduler: DDIMInverseScheduler,
    null_prompt_embeds: torch.Tensor,
    num_inference_steps: int,
) -> InversionTrajectory:
    """DDIM inversion z_0 → z_T with the null prompt, keeping every intermediate latent."""
    if image_latent.shape[0] != 1:
        raise ValueError("ddim_invert takes one image latent (1, C, h, w); use ddim_invert_batch for more")
    return ddim_invert_batch(
        image_latent,
        unet=unet,
        inverse_scheduler=inverse_scheduler,
        null_prompt_embeds=null_prompt_embeds,
        num_inference_steps=num_inference_steps,
    )[0]


@torch.no_grad()
def ddim_invert_batch(
    image_latents: torch.Tensor,
    *,
    unet: UNet2DConditionModel,
    inverse_scheduler: DDIMInverseScheduler,
    null_prompt_embeds: torch.Tensor,
    num_inference_steps: int,
) -> list[InversionTrajectory]:
    """DDIM inversion of a batch (B, C, h, w) with the null prompt: one trajectory per row. Rows are
    independent (same timesteps), so this equals B calls of ``ddim_invert`` up to float rounding."""
    device, dtype = unet.device, unet.dtype
    z = image_latents.to(device=device, dtype=dtype)
    null = null_prompt_embeds.to(device=device, dtype=dtype).expand(z.shape[0], -1, -1)
    inverse_scheduler.set_timesteps(num_inference_steps, device=device)
    latents = [z]
    for t in inverse_scheduler.timesteps:  # ascending noise
        eps = unet(z, t, encoder_hidden_states=null).sample
        z = inverse_scheduler.step(eps, t, z).prev_sample
        latents.append(z)
    path = torch.stack(latents, dim=1).cpu()  # (B, N + 1, C, h, w)
    timesteps = inverse_scheduler.timesteps.detach().cpu().long()
    return [InversionTrajectory(timesteps, row) for row in path]


@torch.no_grad()
def image_kv_at(
    unet: UNet2DConditionModel,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    null_prompt_embeds: torch.Tensor,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Decoder self-attention K/V of ε_ψ(z^I_t, ∅, t) for a batch: latents (B, C, h, w), timesteps (B,)
    → per layer (K, V), each (B, N_l, C_l)."""
    null = null_prompt_embeds.to(device=unet.device, dtype=unet.dtype).expand(latents.shape[0], -1, -1)
    with capture_decoder_self_attention(unet) as store:
        unet(
            latents.to(device=unet.device, dtype=unet.dtype),
            timesteps.to(unet.device),
            encoder_hidden_states=null,
        )
        return list(store)  # type: ignore[arg-type]


def schedule_key(scheduler_config: dict, num_inference_steps: int, capture: str) -> str:
    cfg = {k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")}
    return json.dumps({"cfg": cfg, "n": num_inference_steps, "capture": capture}, sort_keys=True, default=str)


class GuidanceCache:
    """In-memory LRU of :class:`VisualGuidance` keyed by (image hash, schedule, model)."""

    def __init__(self, max_items: int = 8):
        self.max_items = max_items
        self._items: OrderedDict[tuple, VisualGuidance] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple) -> VisualGuidance | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key: tuple, value: VisualGuidance) -> None:
        if self.max_items <= 0:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
