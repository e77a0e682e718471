"""MeLFusionPipeline: music from an image and a text prompt (MeLFusion, CVPR 2024, Algorithm 2)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from melfusion.errors import MelfusionInputError
from melfusion.guidance.preprocess import ImageInput, preprocess_image, tensor_sha256
from melfusion.guidance.visual_guidance import (
    CAPTURE_MODES,
    GuidanceCache,
    VisualGuidance,
    compute_visual_guidance,
    encode_image_latent,
    make_image_schedulers,
    schedule_key,
    stack_guidance,
)
from melfusion.models.synapse import VisualSynapse
from melfusion.models.vocoder import GriffinLimVocoder  # noqa: F401  (diffusers resolves saved components by module)

MAX_AUDIO_SECONDS = 600.0
MAX_STEPS = 1000


@dataclass
class MeLFusionPipelineOutput(BaseOutput):
    """audios: (B, T) float32 numpy in [-1, 1] (or latents / mels for other output types).
    parameters: what produced them (model, seed, steps, guidance, prompts, image hashes) for the sidecar."""

    audios: np.ndarray | torch.Tensor
    sample_rate: int
    parameters: dict[str, Any] = field(default_factory=dict)


def vocoder_audio_params(vocoder: torch.nn.Module) -> tuple[int, int]:
    """(sample_rate, hop_length) of a SpeechT5HifiGan or GriffinLimVocoder."""
    cfg = vocoder.config
    if hasattr(cfg, "upsample_rates"):  # HiFi-GAN: hop = product of upsample rates
        return int(cfg.sampling_rate), int(np.prod(cfg.upsample_rates))
    return int(cfg.sample_rate), int(cfg.hop_length)


class MeLFusionPipeline(DiffusionPipeline):
    r"""Text-to-music latent diffusion with a visual synapse (paper §3, Alg. 2).

    Components: the music LDM (``text_encoder``/``tokenizer``, ``unet``, audio ``vae``, ``vocoder``,
    ``scheduler``), the frozen image LDM (``image_unet``, ``image_vae``, ``image_scheduler``,
    ``image_text_encoder``/``image_tokenizer`` for the null prompt) and ``synapse`` (the learned α).

    ``default_image_guidance_scale`` (saved in ``model_index.json``): the image guidance scale used when a
    call gives none. ``None`` (default, the paper's models) keeps the released code's two-branch CFG with the
    image in both branches; a model trained for three-branch guidance (the embedded one) records its scale.
    """

    model_cpu_offload_seq = "text_encoder->image_text_encoder->image_vae->image_unet->unet->vae->vocoder"

    def __init__(
        self,
        text_encoder: torch.nn.Module,
        tokenizer: Any,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        vocoder: torch.nn.Module,
        scheduler: Any,
        image_unet: UNet2DConditionModel,
        image_vae: AutoencoderKL,
        image_scheduler: Any,
        image_text_encoder: torch.nn.Module,
        image_tokenizer: Any,
        synapse: VisualSynapse,
        default_image_guidance_scale: float | None = None,
    ):
        super().__init__()
        self.register_modules(
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            vae=vae,
            vocoder=vocoder,
            scheduler=scheduler,
            image_unet=image_unet,
            image_vae=image_vae,
            image_scheduler=image_scheduler,
            image_text_encoder=image_text_encoder,
            image_tokenizer=image_tokenizer,
            synapse=synapse,
        )
        self.register_to_config(default_image_guidance_scale=default_image_guidance_scale)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_vae_scale_factor = 2 ** (len(image_vae.config.block_out_channels) - 1)
        self.guidance_cache = GuidanceCache(max_items=8)
        synapse.install(unet)

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def sample_rate(self) -> int:
        return vocoder_audio_params(self.vocoder)[0]

    @property
    def image_resolution(self) -> tuple[int, int]:
        size = self.image_unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return h * self.image_vae_scale_factor, w * self.image_vae_scale_factor

    @property
    def default_audio_length_in_s(self) -> float:
        size = self.unet.config.sample_size
        frames = (size if isinstance(size, int) else size[0]) * self.vae_scale_factor
        sr, hop = vocoder_audio_params(self.vocoder)
        return frames * hop / sr

    def _latent_frame_multiple(self) -> int:
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    def check_inputs(
        self,
        prompts: list[str],
        negative_prompts: list[str] | None,
        num_images: int,
        audio_length_in_s: float,
        num_inference_steps: int,
        guidance_scale: float,
        image_guidance_scale: float | None,
        num_waveforms_per_prompt: int,
        capture: str,
    ) -> None:
        if not prompts:
            raise MelfusionInputError("no prompt given; pass a text description of the music")
        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise MelfusionInputError(
                    "the text prompt is empty; describe the music, e.g. 'a calm piano piece'"
                )
        if negative_prompts is not None and len(negative_prompts) != len(prompts):
            raise MelfusionInputError(
                f"{len(negative_prompts)} negative prompts for {len(prompts)} prompts; give one or one per prompt"
            )
        if num_images not in (1, len(prompts)):
            raise MelfusionInputError(
                f"{num_images} images for {len(prompts)} prompts; give one image, or one per prompt"
            )
        if not (isinstance(audio_length_in_s, int | float) and math.isfinite(audio_length_in_s)):
            raise MelfusionInputError(f"audio length must be a number of seconds, got {audio_length_in_s!r}")
        if not 0 < audio_length_in_s <= MAX_AUDIO_SECONDS:
            raise MelfusionInputError(
                f"audio length {audio_length_in_s} s is out of range; use a value in (0, {MAX_AUDIO_SECONDS:g}]"
            )
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= MAX_STEPS:
            raise MelfusionInputError(
                f"num_inference_steps must be an integer in [1, {MAX_STEPS}], got {num_inference_steps!r}"
            )
        if not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise MelfusionInputError(f"guidance scale must be >= 0, got {guidance_scale}")
        if image_guidance_scale is not None and (
            not math.isfinite(image_guidance_scale) or image_guidance_scale < 0
        ):
            raise MelfusionInputError(f"image guidance scale must be >= 0, got {image_guidance_scale}")
        if not isinstance(num_waveforms_per_prompt, int) or num_waveforms_per_prompt < 1:
            raise MelfusionInputError(
                f"num_waveforms_per_prompt must be >= 1, got {num_waveforms_per_prompt!r}"
            )
        if capture not in CAPTURE_MODES:
            raise MelfusionInputError(f"guidance_capture must be one of {CAPTURE_MODES}, got {capture!r}")

    @torch.no_grad()
    def encode_prompt(
        self, prompts: list[str], device: torch.device, tokenizer: Any = None, text_encoder: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts → (B, S, D) token states and (B, S) bool mask (padding to the longest in the batch)."""
        tokenizer = tokenizer or self.tokenizer
        text_encoder = text_encoder or self.text_encoder
        max_len = max_text_length(tokenizer, text_encoder)
        tok = tokenizer(prompts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        ids = tok.input_ids.to(device)
        mask = tok.attention_mask.to(device)
        states = text_encoder(input_ids=ids, attention_mask=mask)[0]  # (B, S, D)
        return states.to(self.unet.dtype), mask.bool()

    @torch.no_grad()
    def null_image_prompt_embeds(self, device: torch.device) -> torch.Tensor:
        """The image LDM's null-prompt embedding ε_ψ(·, ∅, ·) (1, S, D), padded to max length as SD does."""
        tok = self.image_tokenizer(
            [""],
            padding="max_length",
            truncation=True,
            max_length=max_text_length(self.image_tokenizer, self.image_text_encoder),
            return_tensors="pt",
        )
        return self.image_text_encoder(input_ids=tok.input_ids.to(device))[0].to(self.image_unet.dtype)

    def visual_guidance(
        self,
        image: ImageInput,
        num_inference_steps: int,
        capture: str = "inversion",
        progress: bool = True,
    ) -> VisualGuidance:
        """Image → :class:`VisualGuidance` for this schedule, from the LRU cache when possible."""
        device = self._execution_device
        pixels = preprocess_image(image, *self.image_resolution)
        # A synapse that reads one fixed image timestep needs the inversion only up to it.
        stop_at = self.synapse.config.get("image_timestep") if capture == "inversion" else None
        key = (
            tensor_sha256(pixels),
            schedule_key(self.scheduler.config, num_inference_steps, capture),
            stop_at,
            id(self.image_unet),
            id(self.image_vae),
            str(device),
        )
        cached = self.guidance_cache.get(key)
        if cached is not None:
            return cached
        forward, inverse = make_image_schedulers(self.image_scheduler.config, self.scheduler.config)
        latent = encode_image_latent(self.image_vae, pixels)
        guidance = compute_visual_guidance(
            latent,
            unet=self.image_unet,
            scheduler=forward,
            inverse_scheduler=inverse,
            null_prompt_embeds=self.null_image_prompt_embeds(device),
            num_inference_steps=num_inference_steps,
            capture=capture,
            progress=progress,
            stop_at_timestep=stop_at,
        )
        guidance.meta["image_sha256"] = key[0]
        self.guidance_cache.put(key, guidance)
        return guidance

    def _num_frames(self, audio_length_in_s: float) -> tuple[int, int]:
        """(mel frames rounded up to what the VAE and UNet can take, exact waveform samples)."""
        sr, hop = vocoder_audio_params(self.vocoder)
        frames = math.ceil(audio_length_in_s * sr / hop)
        multiple = self.vae_scale_factor * self._latent_frame_multiple()
        return math.ceil(frames / multiple) * multiple, int(round(audio_length_in_s * sr))

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, T', F') latents → (B, 1, T, n_mels) log-mel spectrogram."""
        return self.vae.decode(latents / self.vae.config.scaling_factor).sample

    def mel_to_waveform(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.dim() == 4:
            mel = mel.squeeze(1)  # (B, T, n_mels)
        return self.vocoder(mel.to(self.vocoder.dtype)).float()  # (B, samples)

    # ------------------------------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput | list[ImageInput],
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        audio_length_in_s: float | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.0,
        image_guidance_scale: float | None = None,
        num_waveforms_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        guidance_capture: str = "inversion",
        image_inversion_steps: int | None = None,
        use_image: bool = True,
        use_text: bool = True,
        progress: bool = True,
        seed: int | None = None,
    ) -> MeLFusionPipelineOutput:
        r"""Generate music for each (image, prompt).

        Args:
            image: one image (path, PIL, array) shared by all prompts, or one per prompt.
            prompt / negative_prompt: text; ``negative_prompt`` fills the unconditional CFG branch.
            audio_length_in_s: clip length (default: the UNet's training length).
            guidance_scale: text CFG scale s_t (paper: 7).
            image_guidance_scale: if set, three CFG branches as in InstructPix2Pix:
                ε = ε(∅, no image) + s_t·(ε(text, no image) − ε(∅, no image)) + s_i·(ε(text, image) − ε(text, no image)).
                ``None``: the model's ``default_image_guidance_scale``; when that is ``None`` too, the image is
                injected in both CFG branches (the released code's behaviour).
            image_inversion_steps: steps of the image branch (default: ``num_inference_steps``, one capture
                per music step). Fewer steps cut the image cost proportionally; each music step then uses the
                capture at the nearest timestep.
            guidance_capture: "inversion" (K/V captured during DDIM inversion, N image UNet calls) or
                "reverse" (separate reverse pass from z_T as in Alg. 2, 2N calls).
            use_image: False runs the same UNet text-only (synapse disabled): the ablation baseline.
            use_text: False replaces every prompt by "" (the token of training's text dropout): the
                image-only ablation (paper Table 4). The prompts must still be given (they are recorded).
            output_type: "np" (waveforms), "pt", "mel" or "latent".
            seed: recorded in ``parameters`` (use ``generator`` for the randomness itself).
        """
        # 1. Check and normalise inputs
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        images = image if isinstance(image, list | tuple) else [image]
        negatives = None
        if negative_prompt is not None:
            negatives = (
                [negative_prompt] * len(prompts)
                if isinstance(negative_prompt, str)
                else list(negative_prompt)
            )
        if audio_length_in_s is None:
            audio_length_in_s = self.default_audio_length_in_s
        if image_guidance_scale is None:
            image_guidance_scale = self.config.get("default_image_guidance_scale")
        self.check_inputs(
            prompts,
            negatives,
            len(images),
            audio_length_in_s,
            num_inference_steps,
            guidance_scale,
            image_guidance_scale,
            num_waveforms_per_prompt,
            guidance_capture,
        )
        given_prompts = prompts
        if not use_text:
            prompts = [""] * len(prompts)
        image_steps = num_inference_steps if image_inversion_steps is None else image_inversion_steps
        if not isinstance(image_steps, int) or not 1 <= image_steps <= MAX_STEPS:
            raise MelfusionInputError(
                f"image_inversion_steps must be an integer in [1, {MAX_STEPS}], got {image_steps!r}"
            )
        if output_type not in ("np", "pt", "mel", "latent"):
            raise MelfusionInputError(
                f"output_type must be 'np', 'pt', 'mel' or 'latent', got {output_type!r}"
            )
        device = self._execution_device
        n_prompts = len(prompts)
        batch = n_prompts * num_waveforms_per_prompt
        do_cfg = guidance_scale > 1.0
        three_way = image_guidance_scale is not None and use_image

        # 2. Encode text: rows [uncond..., cond...] per branch
        cond, cond_mask = self.encode_prompt(prompts, device)
        cond = cond.repeat_interleave(num_waveforms_per_prompt, 0)
        cond_mask = cond_mask.repeat_interleave(num_waveforms_per_prompt, 0)
        if do_cfg or three_way:
            uncond, uncond_mask = self.encode_prompt(negatives or [""] * n_prompts, device)
            uncond = uncond.repeat_interleave(num_waveforms_per_prompt, 0)
            uncond_mask = uncond_mask.repeat_interleave(num_waveforms_per_prompt, 0)
            seq = max(cond.shape[1], uncond.shape[1])
            cond, cond_mask = _pad_to(cond, cond_mask, seq)
            uncond, uncond_mask = _pad_to(uncond, uncond_mask, seq)

        # 3. Image branch: inversion + K/V capture, once per distinct image (cached)
        guidances: list[VisualGuidance] = []
        image_rows = torch.full((batch,), -1, dtype=torch.long, device=device)
        if use_image:
            hashes: dict[str, int] = {}
            per_prompt = images if len(images) == n_prompts else images * n_prompts
            for p, img in enumerate(per_prompt):
                g = self.visual_guidance(img, image_steps, guidance_capture, progress)
                h = g.meta["image_sha256"]
                if h not in hashes:
                    hashes[h] = len(guidances)
                    guidances.append(g)
                image_rows[p * num_waveforms_per_prompt : (p + 1) * num_waveforms_per_prompt] = hashes[h]
            guidances = [g.to(device=device, dtype=self.unet.dtype) for g in guidances]
        no_image = torch.full_like(image_rows, -1)

        # Branch layout of the UNet batch and the image row of each branch
        if three_way:
            text_states = torch.cat([uncond, cond, cond])
            text_mask = torch.cat([uncond_mask, cond_mask, cond_mask])
            row_images = torch.cat([no_image, no_image, image_rows])
        elif do_cfg:
            text_states = torch.cat([uncond, cond])
            text_mask = torch.cat([uncond_mask, cond_mask])
            row_images = torch.cat([image_rows, image_rows])
        else:
            text_states, text_mask, row_images = cond, cond_mask, image_rows
        n_branches = text_states.shape[0] // batch

        # 4. Timesteps and initial latents
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        frames, num_samples = self._num_frames(audio_length_in_s)
        freq = self.unet.config.sample_size
        freq = freq[1] if not isinstance(freq, int) else freq
        shape = (batch, self.unet.config.in_channels, frames // self.vae_scale_factor, int(freq))
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        elif tuple(latents.shape) != shape:
            raise MelfusionInputError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = latents.to(device) * self.scheduler.init_noise_sigma

        # 5. Denoising loop (Alg. 2 lines 4–10)
        extra = {"generator": generator} if "generator" in _step_params(self.scheduler) else {}
        try:
            with self.progress_bar(total=len(timesteps)) as bar:
                for t in timesteps:
                    if guidances:
                        self.synapse.set_visual_features(
                            stack_guidance(guidances, self.synapse.image_timestep_for(t)),
                            row_images,
                            text_mask,
                        )
                    else:
                        self.synapse.set_visual_features(None)
                    model_in = torch.cat([latents] * n_branches) if n_branches > 1 else latents
                    model_in = self.scheduler.scale_model_input(model_in, t)
                    out = self.unet(
                        model_in, t, encoder_hidden_states=text_states, encoder_attention_mask=text_mask
                    ).sample
                    if three_way:
                        e_u, e_t, e_ti = out.chunk(3)
                        out = e_u + guidance_scale * (e_t - e_u) + image_guidance_scale * (e_ti - e_t)
                    elif do_cfg:
                        e_u, e_c = out.chunk(2)
                        out = e_u + guidance_scale * (e_c - e_u)
                    latents = self.scheduler.step(out, t, latents, **extra).prev_sample
                    bar.update()
        finally:
            self.synapse.clear_visual_features()

        # 6. Decode: latent → mel → waveform (Alg. 2 lines 11–12)
        params = {
            "pipeline": type(self).__name__,
            "prompt": given_prompts,
            "negative_prompt": negatives,
            "use_text": use_text,
            "image_sha256": [g.meta["image_sha256"] for g in guidances],
            "audio_length_in_s": float(audio_length_in_s),
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "image_guidance_scale": image_guidance_scale,
            "num_waveforms_per_prompt": num_waveforms_per_prompt,
            "scheduler": type(self.scheduler).__name__,
            "guidance_capture": guidance_capture,
            "image_inversion_steps": image_steps if use_image else None,
            "use_image": use_image,
            "seed": seed,
            "alphas": [round(float(a), 6) for a in self.synapse.alphas()],
        }
        sr = self.sample_rate
        if output_type == "latent":
            return MeLFusionPipelineOutput(audios=latents, sample_rate=sr, parameters=params)
        mel = self.decode_latents(latents)
        if output_type == "mel":
            return MeLFusionPipelineOutput(audios=mel, sample_rate=sr, parameters=params)
        audio = self.mel_to_waveform(mel)[:, :num_samples]
        peak = audio.abs().amax(dim=-1, keepdim=True)  # (B, 1): keep the documented [-1, 1] range
        audio = torch.where(peak > 1.0, audio * (0.99 / peak.clamp_min(1e-12)), audio)
        self.maybe_free_model_hooks()
        if output_type == "np":
            audio = audio.cpu().numpy()
        return MeLFusionPipelineOutput(audios=audio, sample_rate=sr, parameters=params)


def max_text_length(tokenizer: Any, text_encoder: Any) -> int:
    """Token budget: the tokenizer's limit, capped by the encoder's position table (BERT-style) and 512."""
    limit = int(getattr(tokenizer, "model_max_length", 512) or 512)
    positions = getattr(getattr(text_encoder, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limit = min(limit, positions)
    return min(limit, 512)


def _pad_to(states: torch.Tensor, mask: torch.Tensor, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    pad = seq - states.shape[1]
    if pad <= 0:
        return states, mask
    states = torch.cat([states, states.new_zeros(states.shape[0], pad, states.shape[2])], dim=1)
    mask = torch.cat([mask, mask.new_zeros(mask.shape[0], pad)], dim=1)
    return states, mask


def _step_params(scheduler: Any) -> set[str]:
    import inspect

    return set(inspect.signature(scheduler.step).parameters)
