"""MeLFusionPipeline: music from an image and a text prompt (MeLFusion, CVPR 2024, Algorithm 2)."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from melfusion.audio.stitch import crossfade_into
from melfusion.errors import MelfusionInputError
from melfusion.guidance.conditioner import ImageConditioner, normalize_capture
from melfusion.guidance.preprocess import ImageInput, preprocess_image, tensor_sha256
from melfusion.guidance.visual_guidance import GuidanceCache, VisualGuidance, stack_guidance
from melfusion.limits import MAX_AUDIO_SECONDS, MAX_STEPS
from melfusion.models.attention_processor import VISUAL_FEATURES
from melfusion.models.synapse import VisualSynapse
from melfusion.models.vocoder import GriffinLimVocoder  # noqa: F401  (diffusers resolves saved components by module)

OUTPUT_TYPES = ("np", "pt", "mel", "latent")
EMBEDDED = "embedded"  # from_pretrained("embedded"): the model shipped in the package


@dataclass
class MeLFusionPipelineOutput(BaseOutput):
    """audios: (B, T) float32 numpy in [-1, 1] (or latents / mels for other output types).
    parameters: what produced them (model, seed, steps, guidance, prompts, image hashes) for the sidecar."""

    audios: np.ndarray | torch.Tensor
    sample_rate: int
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowPlan:
    """Latent frames of a clip and the windows that make it: ``window`` frames from each of ``starts``. A clip
    that fits the model's window is one window over all of it; a longer one is made window by window, each
    overlapping the frames the windows before it made by at least ``overlap`` frames."""

    total: int
    window: int
    starts: tuple[int, ...]
    overlap: int = 0

    def held(self, k: int) -> int:
        """Latent frames at the start of window ``k`` already made by the windows before it."""
        return 0 if k == 0 else self.starts[k - 1] + self.window - self.starts[k]


def plan_windows(total: int, window: int, overlap: int) -> WindowPlan:
    """The fewest windows of ``window`` frames that cover ``total`` frames with consecutive ones sharing at least
    ``overlap`` frames, their starts spread evenly from 0 to ``total - window``."""
    if total <= window:
        return WindowPlan(total, total, (0,))
    if not 0 < overlap < window:
        raise ValueError(f"the overlap must be in (0, {window}) latent frames, got {overlap}")
    n = math.ceil((total - overlap) / (window - overlap))  # n·window − (n−1)·overlap ≥ total
    starts = tuple(round(k * (total - window) / (n - 1)) for k in range(n))
    return WindowPlan(total, window, starts, overlap)


def vocoder_audio_params(vocoder: torch.nn.Module) -> tuple[int, int]:
    """(sample_rate, hop_length) of a SpeechT5HifiGan or GriffinLimVocoder."""
    cfg = vocoder.config
    if hasattr(cfg, "upsample_rates"):  # HiFi-GAN: hop = product of upsample rates
        return int(cfg.sampling_rate), int(np.prod(cfg.upsample_rates))
    return int(cfg.sample_rate), int(cfg.hop_length)


class MeLFusionPipeline(DiffusionPipeline):
    r"""Text-to-music latent diffusion with a visual synapse (paper §3, Alg. 2).

    Components: the music LDM (``text_encoder``/``tokenizer``, ``unet``, audio ``vae``, ``vocoder``,
    ``scheduler``), the frozen image LDM (``image_unet``, ``image_vae``, ``image_scheduler``; optional
    ``image_text_encoder``/``image_tokenizer``, needed only for a model that does not store the image LDM's
    null-prompt embedding) and ``synapse`` (the learned α).

    ``default_image_guidance_scale`` (saved in ``model_index.json``): the image guidance scale used when a
    call gives none. ``None`` (default, the paper's models) keeps the released code's two-branch CFG with the
    image in both branches; a model trained for three-branch guidance (the embedded one) records its scale.
    """

    model_cpu_offload_seq = "text_encoder->image_text_encoder->image_vae->image_unet->unet->vae->vocoder"
    _optional_components = ["image_text_encoder", "image_tokenizer"]
    # The synapse's weights are read by the music UNet's processors, never through the synapse's own forward,
    # so an offload hook would never bring them to the execution device: they stay there.
    _exclude_from_cpu_offload = ["synapse"]
    _callback_tensor_inputs = ["latents"]

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> MeLFusionPipeline:
        """diffusers' ``from_pretrained``, plus: ``"embedded"`` loads the model shipped in the package (the CLI's
        default), and a packed folder (``python -m melfusion.models.embedded``: no text-encoder copy, float16
        weights) gets all-MiniLM-L6-v2 from its package and loads in float32."""
        from melfusion.models.embedded import embedded_model_dir, is_packed_folder

        path = pretrained_model_name_or_path
        if str(path) == EMBEDDED:
            path = embedded_model_dir()
            if path is None:
                raise MelfusionInputError("this build of melfusion ships no embedded model weights")
        if os.path.isdir(path) and is_packed_folder(path) and "text_encoder" not in kwargs:
            from melfusion.models.tiny import load_minilm

            tokenizer, text_encoder = load_minilm(True)
            kwargs = {
                "local_files_only": True,
                "dtype": torch.float32,
                "text_encoder": text_encoder,
                "tokenizer": tokenizer,
                "image_text_encoder": text_encoder,
                "image_tokenizer": tokenizer,
                **kwargs,
            }
        return super().from_pretrained(path, **kwargs)

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
        synapse: VisualSynapse,
        image_text_encoder: torch.nn.Module | None = None,
        image_tokenizer: Any = None,
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
        self.guidance_cache = GuidanceCache()
        self._computed_null: torch.Tensor | None = None  # ∅ from the image text encoder (old folders)
        self._interrupt = False
        self._guidance_scale = 7.0
        self._num_timesteps = 0
        synapse.install(unet)

    # ------------------------------------------------------------------------------------------ properties
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

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` (e.g. from ``callback_on_step_end``) to skip the remaining steps."""
        return self._interrupt

    def _latent_frame_multiple(self) -> int:
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    def _num_frames(self, audio_length_in_s: float) -> tuple[int, int]:
        """(mel frames rounded up to what the VAE and UNet can take, exact waveform samples)."""
        sr, hop = vocoder_audio_params(self.vocoder)
        frames = math.ceil(audio_length_in_s * sr / hop)
        multiple = self.vae_scale_factor * self._latent_frame_multiple()
        return math.ceil(frames / multiple) * multiple, int(round(audio_length_in_s * sr))

    def latent_shape(
        self,
        batch: int,
        audio_length_in_s: float,
        window_overlap_s: float | None = None,
        long_form: bool = True,
    ) -> tuple[int, int, int, int]:
        """(B, C, T', F') of the music latents (the initial noise ``latents=`` takes) for clips of
        ``audio_length_in_s``; T' covers all windows of a long clip (:meth:`window_plan`)."""
        frames = self.window_plan(audio_length_in_s, window_overlap_s, long_form).total
        freq = self.unet.config.sample_size
        freq = freq[1] if not isinstance(freq, int) else freq
        return batch, int(self.unet.config.in_channels), frames, int(freq)

    @property
    def window_frames(self) -> int:
        """Latent frames of the clips the music UNet was trained on (its ``sample_size``): one window."""
        size = self.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0])

    def window_plan(
        self, audio_length_in_s: float, window_overlap_s: float | None = None, long_form: bool = True
    ) -> WindowPlan:
        """How a clip is made: one pass when it fits the model's window (or ``long_form=False``), else
        windows of the training length overlapping by ``window_overlap_s`` (default: a quarter window)."""
        frames, _ = self._num_frames(audio_length_in_s)
        window = self.window_frames
        if not long_form or audio_length_in_s <= self.default_audio_length_in_s + 1e-6:
            latent_frames = frames // self.vae_scale_factor  # a multiple the UNet takes (_num_frames)
            return WindowPlan(latent_frames, latent_frames, (0,))
        sr, hop = vocoder_audio_params(self.vocoder)
        total = math.ceil(math.ceil(audio_length_in_s * sr / hop) / self.vae_scale_factor)
        if window_overlap_s is None:
            overlap = window // 4
        else:
            overlap = round(window_overlap_s * sr / hop / self.vae_scale_factor)
        return plan_windows(total, window, min(max(overlap, 1), window - 1))

    def progress_bar(self, iterable: Any = None, total: int | None = None) -> tqdm:
        """diffusers' progress bar, labelled (``set_progress_bar_config(desc=...)`` overrides the label)."""
        return tqdm(
            iterable, total=total, **{"desc": "denoising", **getattr(self, "_progress_bar_config", {})}
        )

    # ------------------------------------------------------------------------------------------ checks
    def check_inputs(
        self,
        image: Any,
        prompt: str | list[str] | None,
        negative_prompt: str | list[str] | None,
        audio_length_in_s: float,
        num_inference_steps: int,
        guidance_scale: float,
        image_guidance_scale: float | None,
        num_waveforms_per_prompt: int,
        guidance_capture: str,
        image_inversion_steps: int | None = None,
        output_type: str = "np",
        use_image: bool = True,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_attention_mask: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        window_overlap_s: float | None = None,
        long_form: bool = True,
    ) -> None:
        """Every check of a call, before any model runs: a :class:`MelfusionInputError` naming the problem."""
        if (prompt is None) == (prompt_embeds is None):
            raise MelfusionInputError("give exactly one of prompt and prompt_embeds")
        if prompt is not None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            if not prompts:
                raise MelfusionInputError("no prompt given; pass a text description of the music")
            for p in prompts:
                if not isinstance(p, str) or not p.strip():
                    raise MelfusionInputError(
                        "the text prompt is empty; describe the music, e.g. 'a calm piano piece'"
                    )
            n_prompts = len(prompts)
        else:
            n_prompts = _check_embeds("prompt_embeds", prompt_embeds, prompt_attention_mask)
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise MelfusionInputError("give at most one of negative_prompt and negative_prompt_embeds")
        if isinstance(negative_prompt, list | tuple) and len(negative_prompt) != n_prompts:
            raise MelfusionInputError(
                f"{len(negative_prompt)} negative prompts for {n_prompts} prompts; give one or one per prompt"
            )
        if negative_prompt_embeds is not None:
            n_neg = _check_embeds("negative_prompt_embeds", negative_prompt_embeds, negative_attention_mask)
            if n_neg != n_prompts or (
                prompt_embeds is not None and negative_prompt_embeds.shape[-1] != prompt_embeds.shape[-1]
            ):
                raise MelfusionInputError(
                    f"negative_prompt_embeds {tuple(negative_prompt_embeds.shape)} does not match the "
                    f"{n_prompts} prompts' embeddings; give one (S, D) row per prompt"
                )
        if use_image:
            if image is None:
                raise MelfusionInputError("no image given; pass an image, or use_image=False for text only")
            n_images = len(image) if isinstance(image, list | tuple) else 1
            if n_images not in (1, n_prompts):
                raise MelfusionInputError(
                    f"{n_images} images for {n_prompts} prompts; give one image, or one per prompt"
                )
        if not (isinstance(audio_length_in_s, int | float) and math.isfinite(audio_length_in_s)):
            raise MelfusionInputError(f"audio length must be a number of seconds, got {audio_length_in_s!r}")
        if not 0 < audio_length_in_s <= MAX_AUDIO_SECONDS:
            raise MelfusionInputError(
                f"audio length {audio_length_in_s} s is out of range; use a value in (0, {MAX_AUDIO_SECONDS:g}]"
            )
        for name, steps in (
            ("num_inference_steps", num_inference_steps),
            ("image_inversion_steps", image_inversion_steps),
        ):
            if steps is not None and (not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS):
                raise MelfusionInputError(f"{name} must be an integer in [1, {MAX_STEPS}], got {steps!r}")
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
        try:
            normalize_capture(guidance_capture)
        except ValueError as err:
            raise MelfusionInputError(f"guidance_capture: {err}") from None
        if output_type not in OUTPUT_TYPES:
            raise MelfusionInputError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if window_overlap_s is not None:
            window_s = self.default_audio_length_in_s
            if not (isinstance(window_overlap_s, int | float) and 0 < window_overlap_s < window_s):
                raise MelfusionInputError(
                    f"window_overlap_s must be in (0, {window_s:g}) s (the model's window), got {window_overlap_s!r}"
                )
        if latents is not None:
            shape = self.latent_shape(
                n_prompts * num_waveforms_per_prompt, audio_length_in_s, window_overlap_s, long_form
            )
            if tuple(latents.shape) != shape:
                raise MelfusionInputError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        bad = [k for k in callback_on_step_end_tensor_inputs or () if k not in self._callback_tensor_inputs]
        if bad:
            raise MelfusionInputError(
                f"callback_on_step_end_tensor_inputs {bad} are not offered; choose from {self._callback_tensor_inputs}"
            )
        if cross_attention_kwargs and VISUAL_FEATURES in cross_attention_kwargs:
            raise MelfusionInputError(
                f"cross_attention_kwargs[{VISUAL_FEATURES!r}] is set by the pipeline from the image; pass the image"
            )
        if use_image:  # text-only runs do not pass image features, so any processor works
            self.synapse.check_installed(self.unet)
        sched_cfg = self.scheduler.config
        max_steps = int(sched_cfg.get("num_train_timesteps", 1000)) - int(
            sched_cfg.get("steps_offset", 0) or 0
        )
        if num_inference_steps > max_steps:
            raise MelfusionInputError(
                f"num_inference_steps {num_inference_steps} is more than this scheduler can take ({max_steps})"
            )

    # ------------------------------------------------------------------------------------------ text
    @torch.no_grad()
    def encode_text(
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
    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        device: torch.device,
        num_waveforms_per_prompt: int = 1,
        do_classifier_free_guidance: bool = False,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(prompt_embeds, mask, negative_prompt_embeds, negative_mask), each row repeated
        ``num_waveforms_per_prompt`` times: embeddings (B·n, S, D), masks (B·n, S) bool. The negatives are
        None without classifier-free guidance; with it both are padded to one length S. Given embeddings are
        used as they are (masks default to all tokens valid); the negative default is the empty prompt."""
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
            prompt_embeds, prompt_attention_mask = self.encode_text(prompts, device)
        prompt_embeds, prompt_attention_mask = _embeds_and_mask(
            prompt_embeds, prompt_attention_mask, device, self.unet.dtype
        )
        n = prompt_embeds.shape[0]
        if do_classifier_free_guidance:
            if negative_prompt_embeds is None:
                negatives = [negative_prompt] * n if isinstance(negative_prompt, str) else negative_prompt
                negative_prompt_embeds, negative_attention_mask = self.encode_text(
                    negatives or [""] * n, device
                )
            negative_prompt_embeds, negative_attention_mask = _embeds_and_mask(
                negative_prompt_embeds, negative_attention_mask, device, self.unet.dtype
            )
            seq = max(prompt_embeds.shape[1], negative_prompt_embeds.shape[1])
            prompt_embeds, prompt_attention_mask = _pad_to(prompt_embeds, prompt_attention_mask, seq)
            negative_prompt_embeds, negative_attention_mask = _pad_to(
                negative_prompt_embeds, negative_attention_mask, seq
            )
            negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(num_waveforms_per_prompt, 0)
            negative_attention_mask = negative_attention_mask.repeat_interleave(num_waveforms_per_prompt, 0)
        else:
            negative_prompt_embeds = negative_attention_mask = None
        prompt_embeds = prompt_embeds.repeat_interleave(num_waveforms_per_prompt, 0)
        prompt_attention_mask = prompt_attention_mask.repeat_interleave(num_waveforms_per_prompt, 0)
        return prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_attention_mask

    # ------------------------------------------------------------------------------------------ image
    @torch.no_grad()
    def null_image_prompt_embeds(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The image LDM's null-prompt embedding ∅ (1, S, D): the one the model stores, else computed once with
        the image text encoder (padded to max length, as SD does)."""
        device = device or self._execution_device
        stored = self.synapse.image_null_prompt_embeds
        if stored is not None:
            return stored.to(device=device, dtype=self.image_unet.dtype)
        if self._computed_null is None:
            if self.image_text_encoder is None or self.image_tokenizer is None:
                raise MelfusionInputError(
                    "this model stores no null-prompt embedding for its image LDM and has no image text "
                    "encoder to compute it; load it with image_text_encoder=... and image_tokenizer=..., then "
                    "pipe.store_image_null_prompt() and save_pretrained (melfusion convert does this)"
                )
            tok = self.image_tokenizer(
                [""],
                padding="max_length",
                truncation=True,
                max_length=max_text_length(self.image_tokenizer, self.image_text_encoder),
                return_tensors="pt",
            )
            encoder_device = self.image_text_encoder.device
            self._computed_null = self.image_text_encoder(input_ids=tok.input_ids.to(encoder_device))[0].cpu()
        return self._computed_null.to(device=device, dtype=self.image_unet.dtype)

    def store_image_null_prompt(self) -> None:
        """Keep ∅ in the synapse's weights, so a saved folder needs no image text encoder at inference
        (computed in float32; one already stored is kept as it is)."""
        if self.synapse.image_null_prompt_embeds is None:
            self.null_image_prompt_embeds("cpu")  # computes self._computed_null
            self.synapse.store_image_null_prompt(self._computed_null.float())

    def image_conditioner(self, device: torch.device | str | None = None) -> ImageConditioner:
        """The image branch as training sees it (:class:`ImageConditioner`), with the music scheduler's spacing."""
        device = device or self._execution_device
        return ImageConditioner(
            self.image_unet,
            self.image_vae,
            self.image_scheduler.config,
            self.null_image_prompt_embeds(device),
            self.scheduler.config,
            device=device,
        )

    def image_grid(
        self, conditioner: ImageConditioner, timesteps: torch.Tensor, image_inversion_steps: int | None = None
    ) -> torch.Tensor:
        """Ascending image-branch grid: the music scheduler's own ``timesteps`` (paper), the trained grid of a
        fixed-image-timestep synapse, or ``image_inversion_steps`` DDIM steps (each music step then reads the
        nearest grid point)."""
        if self.synapse.config.get("image_timestep") is not None:
            if image_inversion_steps is not None:
                return conditioner.inversion_grid(image_inversion_steps)
            trained = self.synapse.config.get("image_inversion_grid")
            return torch.tensor(trained, dtype=torch.long) if trained else conditioner.inversion_grid(50)
        if image_inversion_steps is None:
            return conditioner.grid_from_timesteps(timesteps)
        return conditioner.inversion_grid(image_inversion_steps)

    def visual_guidance(
        self,
        image: ImageInput | torch.Tensor,
        num_inference_steps: int | None = None,
        capture: str = "trajectory",
        progress: bool = True,
        timesteps: torch.Tensor | None = None,
        image_inversion_steps: int | None = None,
    ) -> VisualGuidance:
        """Image (or its preprocessed (1, 3, H, W) pixels) → :class:`VisualGuidance` for the music
        ``timesteps`` (default: the scheduler's for ``num_inference_steps``), from ``guidance_cache`` when
        possible. The K/V are recorded on the cache's device (the CPU by default)."""
        capture = normalize_capture(capture)
        device = self._execution_device
        if timesteps is None:
            if num_inference_steps is None:
                raise ValueError("give num_inference_steps or timesteps")
            self.scheduler.set_timesteps(num_inference_steps, device=device)
            timesteps = self.scheduler.timesteps
        conditioner = self.image_conditioner(device)
        grid = self.image_grid(conditioner, timesteps, image_inversion_steps)
        image_t = self.synapse.config.get("image_timestep")
        pixels = image if isinstance(image, torch.Tensor) else preprocess_image(image, *self.image_resolution)
        image_cfg = {k: v for k, v in self.image_scheduler.config.items() if not k.startswith("_")}
        key = (
            tensor_sha256(pixels),
            tuple(grid.tolist()),
            capture,
            image_t,
            json.dumps(image_cfg, sort_keys=True, default=str),
            tensor_sha256(conditioner.null_prompt_embeds.float().cpu()),
            str(self.image_unet.dtype),
            id(self.image_unet),
            id(self.image_vae),
        )
        cached = self.guidance_cache.get(key)
        if cached is not None:
            return cached
        guidance = conditioner.guidance(
            conditioner.encode(pixels),
            grid,
            capture=capture,
            image_timestep=image_t,
            progress=progress and not getattr(self, "_progress_bar_config", {}).get("disable", False),
            store_device=self.guidance_cache.device,
        )
        guidance.meta["image_sha256"] = key[0]
        self.guidance_cache.put(key, guidance)
        return guidance

    def prepare_visual_guidance(
        self,
        images: list[ImageInput],
        n_prompts: int,
        num_waveforms_per_prompt: int,
        timesteps: torch.Tensor,
        capture: str,
        image_inversion_steps: int | None,
        progress: bool,
    ) -> tuple[list[VisualGuidance], torch.Tensor]:
        """One :class:`VisualGuidance` per distinct image (computed once, cached or not), and (B·n,) the image
        row of each sample."""
        per_prompt = images if len(images) == n_prompts else images * n_prompts
        pixels = [preprocess_image(img, *self.image_resolution) for img in per_prompt]
        hashes = [tensor_sha256(px) for px in pixels]
        distinct = list(dict.fromkeys(hashes))
        guidances = [
            self.visual_guidance(
                pixels[hashes.index(h)],
                capture=capture,
                progress=progress,
                timesteps=timesteps,
                image_inversion_steps=image_inversion_steps,
            )
            for h in distinct
        ]
        rows = torch.tensor([distinct.index(h) for h in hashes]).repeat_interleave(num_waveforms_per_prompt)
        return guidances, rows.to(self._execution_device)

    # ------------------------------------------------------------------------------------------ latents
    def prepare_latents(
        self,
        batch_size: int,
        audio_length_in_s: float,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
        window_overlap_s: float | None = None,
        long_form: bool = True,
    ) -> torch.Tensor:
        """Initial noise (B, C, T', F') for the whole clip (:meth:`latent_shape`), scaled by the scheduler's
        ``init_noise_sigma``."""
        shape = self.latent_shape(batch_size, audio_length_in_s, window_overlap_s, long_form)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        return latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

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
        image: ImageInput | list[ImageInput] | None = None,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        audio_length_in_s: float | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.0,
        image_guidance_scale: float | None = None,
        num_waveforms_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        guidance_capture: str = "trajectory",
        image_inversion_steps: int | None = None,
        use_image: bool = True,
        use_text: bool = True,
        progress: bool = True,
        seed: int | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        window_overlap_s: float | None = None,
        long_form: bool = True,
    ) -> MeLFusionPipelineOutput | tuple:
        r"""Generate music for each (image, prompt).

        Args:
            image: one image (path, PIL, array) shared by all prompts, or one per prompt.
            prompt / negative_prompt: text; ``negative_prompt`` fills the unconditional CFG branch (it acts only
                with guidance: a warning says when it cannot).
            audio_length_in_s: clip length (default: the UNet's training length). A longer clip is made window by
                window (``long_form``): windows of the training length, each denoised with its overlap with the
                windows before it held to their result (in-/out-painting), the same text and image conditioning
                for all, joined by a power-preserving crossfade. Memory does not grow with the length.
            window_overlap_s: overlap of consecutive windows (default: a quarter window).
            long_form: False makes a long clip in one pass over its whole length (warns: the model never saw
                clips that long).
            guidance_scale: text CFG scale s_t (paper: 7).
            image_guidance_scale: if set, three CFG branches as in InstructPix2Pix:
                ε = ε(∅, no image) + s_t·(ε(text, no image) − ε(∅, no image)) + s_i·(ε(text, image) − ε(text, no image)).
                ``None``: the model's ``default_image_guidance_scale``; when that is ``None`` too, the image is
                injected in both CFG branches (the released code's behaviour).
            guidance_capture: how the image features are computed (:mod:`melfusion.guidance.conditioner`):
                "trajectory" (default; ε_ψ(z^I_t, ∅, t) on the inverted trajectory, what training feeds),
                "inversion-lagged" (the K/V the inversion pass itself records, ε_ψ(z^I_{t_prev}, ∅, t): half the
                image UNet calls, not the training features) or "reverse" (a second DDIM pass from z^I_T).
            image_inversion_steps: steps of the image branch (default: the music scheduler's own timesteps, or
                the grid a fixed-image-timestep model was trained on). Fewer steps cut the image cost; each
                music step then reads the nearest grid point.
            use_image: False runs the same UNet text-only (synapse disabled): the ablation baseline.
            use_text: False replaces every prompt by "" (the token of training's text dropout): the
                image-only ablation (paper Table 4). The prompts must still be given (they are recorded).
            prompt_embeds / negative_prompt_embeds: (B, S, D) text states instead of ``prompt`` /
                ``negative_prompt``, with optional (B, S) ``prompt_attention_mask`` / ``negative_attention_mask``.
            output_type: "np" (waveforms), "pt", "mel" or "latent".
            return_dict: False returns ``(audios,)``.
            callback_on_step_end: ``f(pipe, i, t, tensors) -> dict`` (or a diffusers ``PipelineCallback``)
                after each step; ``tensors`` holds ``latents``, and a returned ``latents`` replaces them. Set
                ``pipe._interrupt = True`` to skip the remaining steps.
            cross_attention_kwargs: passed to the music UNet's attention processors, to which the pipeline adds
                the synapse's ``visual_features`` (the stock processors of the other layers take no other
                entries: diffusers drops them with a warning).
            seed: recorded in ``parameters`` (use ``generator`` for the randomness itself).
        """
        # 0. Defaults
        if audio_length_in_s is None:
            audio_length_in_s = self.default_audio_length_in_s
        if image_guidance_scale is None:
            image_guidance_scale = self.config.get("default_image_guidance_scale")
        if isinstance(callback_on_step_end, PipelineCallback | MultiPipelineCallbacks):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        tensor_inputs = list(callback_on_step_end_tensor_inputs or ["latents"])

        # 1. Check inputs (nothing runs before every argument is known to be usable)
        self.check_inputs(
            image, prompt, negative_prompt, audio_length_in_s, num_inference_steps, guidance_scale,
            image_guidance_scale, num_waveforms_per_prompt, guidance_capture, image_inversion_steps,
            output_type, use_image, prompt_embeds, negative_prompt_embeds, prompt_attention_mask,
            negative_attention_mask, latents, tensor_inputs, cross_attention_kwargs, window_overlap_s, long_form,
        )  # fmt: skip
        capture = normalize_capture(guidance_capture)
        three_way = image_guidance_scale is not None and use_image
        do_cfg = guidance_scale > 1.0
        self._interrupt = False
        self._guidance_scale = guidance_scale
        negative_given = negative_prompt is not None or negative_prompt_embeds is not None
        if negative_given and (guidance_scale == 1.0 if three_way else not do_cfg):
            warnings.warn(
                f"the negative prompt has no effect at guidance_scale={guidance_scale:g} (it fills the "
                "unconditional branch, whose weight is 1 − guidance_scale); use guidance_scale > 1",
                stacklevel=2,
            )
        if not long_form and audio_length_in_s > self.default_audio_length_in_s + 1e-6:
            warnings.warn(
                f"{audio_length_in_s:g} s is longer than the {self.default_audio_length_in_s:g} s clips this model "
                "was trained on, in one pass (long_form=False); expect it to lose structure over the length",
                stacklevel=2,
            )
        device = self._execution_device
        prompts = None if prompt is None else ([prompt] if isinstance(prompt, str) else list(prompt))
        n_prompts = len(prompts) if prompts is not None else prompt_embeds.shape[0]
        batch = n_prompts * num_waveforms_per_prompt

        # 2. Encode text (``use_text=False``: every prompt becomes "", training's text-dropout token)
        given_prompts = prompts
        if not use_text:
            prompts, prompt_embeds, prompt_attention_mask = [""] * n_prompts, None, None
        prompt_embeds, prompt_mask, negative_prompt_embeds, negative_mask = self.encode_prompt(
            prompts, device, num_waveforms_per_prompt, do_cfg or three_way, negative_prompt,
            prompt_embeds, negative_prompt_embeds, prompt_attention_mask, negative_attention_mask,
        )  # fmt: skip

        # 3. Timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 4. Image branch (Alg. 2 lines 1 and 6): features once per distinct image, on the music timesteps
        guidances: list[VisualGuidance] = []
        image_rows = torch.full((batch,), -1, dtype=torch.long, device=device)
        if use_image:
            images = list(image) if isinstance(image, list | tuple) else [image]
            guidances, image_rows = self.prepare_visual_guidance(
                images,
                n_prompts,
                num_waveforms_per_prompt,
                timesteps,
                capture,
                image_inversion_steps,
                progress,
            )

        # 5. CFG branch layout: the UNet batch is [branch 0 rows, branch 1 rows, ...]
        no_image = torch.full_like(image_rows, -1)
        if three_way:  # (∅, no image), (text, no image), (text, image)
            row_images = torch.cat([no_image, no_image, image_rows])
        elif do_cfg:  # the released code: the image in both branches
            row_images = torch.cat([image_rows, image_rows])
        else:
            row_images = image_rows

        if three_way:
            text_states = torch.cat([negative_prompt_embeds, prompt_embeds, prompt_embeds])
            text_mask = torch.cat([negative_mask, prompt_mask, prompt_mask])
        elif do_cfg:
            text_states = torch.cat([negative_prompt_embeds, prompt_embeds])
            text_mask = torch.cat([negative_mask, prompt_mask])
        else:
            text_states, text_mask = prompt_embeds, prompt_mask
        n_branches = text_states.shape[0] // batch

        # 6. Initial noise for the whole clip; clips longer than the model's window are made window by window
        plan = self.window_plan(audio_length_in_s, window_overlap_s, long_form)
        latents = self.prepare_latents(
            batch, audio_length_in_s, self.unet.dtype, device, generator, latents, window_overlap_s, long_form
        )

        # 7. Denoising loop (Alg. 2 lines 4–10), once per window; each window after the first holds its
        # overlap with the previous one to that window's result (diffusion in-/out-painting)
        extra = {"generator": generator} if "generator" in _step_params(self.scheduler) else {}
        self._num_timesteps = len(timesteps) * len(plan.starts)
        denoise = dict(
            timesteps=timesteps,
            text_states=text_states,
            text_mask=text_mask,
            guidances=guidances,
            row_images=row_images,
            n_branches=n_branches,
            guidance=(three_way, do_cfg, guidance_scale, image_guidance_scale),
            cross_attention_kwargs=cross_attention_kwargs,
            step_kwargs=extra,
            callback=callback_on_step_end,
        )
        noise = latents
        with self.progress_bar(total=self._num_timesteps) as bar:
            for k, start in enumerate(plan.starts):
                if k:  # a fresh reverse process (multistep schedulers keep a step index and past outputs)
                    self.scheduler.set_timesteps(num_inference_steps, device=device)
                window = noise[:, :, start : start + plan.window]
                held = plan.held(k)
                known = None
                if held:
                    known = (
                        latents[:, :, start : start + held],
                        window[:, :, :held] / self.scheduler.init_noise_sigma,
                    )
                result = self.denoise(window, bar=bar, step_offset=k * len(timesteps), known=known, **denoise)
                latents = torch.cat(
                    [latents[:, :, :start], result, latents[:, :, start + plan.window :]], dim=2
                )

        # 8. Decode: latent → mel → waveform (Alg. 2 lines 11–12)
        params = {
            "pipeline": type(self).__name__,
            "prompt": given_prompts,
            "prompt_embeds": given_prompts is None,
            "negative_prompt": negative_prompt,
            "use_text": use_text,
            "image_sha256": [g.meta["image_sha256"] for g in guidances],
            "audio_length_in_s": float(audio_length_in_s),
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "image_guidance_scale": image_guidance_scale,
            "cfg_branches": 3 if three_way else 2 if do_cfg else 1,  # 2: the image in both (released code)
            "num_waveforms_per_prompt": num_waveforms_per_prompt,
            "scheduler": type(self.scheduler).__name__,
            "guidance_capture": capture,
            "image_inversion_steps": image_inversion_steps if use_image else None,
            "image_grid_size": len(guidances[0].meta["grid"]) if guidances else None,
            "use_image": use_image,
            "seed": seed,
            "alphas": [round(float(a), 6) for a in self.synapse.alphas()],
            "windows": len(plan.starts),
            "window_overlap_s": self.window_overlap_seconds(plan),
        }
        audio = self.decode_output(latents, audio_length_in_s, output_type, plan)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (audio,)
        return MeLFusionPipelineOutput(audios=audio, sample_rate=self.sample_rate, parameters=params)

    def denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        text_states: torch.Tensor,
        text_mask: torch.Tensor,
        guidances: list[VisualGuidance],
        row_images: torch.Tensor,
        n_branches: int,
        guidance: tuple[bool, bool, float, float | None],
        cross_attention_kwargs: dict[str, Any] | None,
        step_kwargs: dict[str, Any],
        callback: Callable[[Any, int, torch.Tensor, dict], dict] | None,
        bar: tqdm,
        step_offset: int = 0,
        known: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One window's reverse process (Alg. 2 lines 4–10): (B, C, W, F) initial noise → clean latents.

        ``known`` = (z_0, ε), each (B, C, h, F): the window's first h frames are held to z_0, as in diffusers'
        inpainting: before each step they are set to the forward-noised q(z_t | z_0) with the window's own
        noise ε, and after the last step to z_0 itself. ``guidance`` = (three_way, do_cfg, s_t, s_i).
        The callback sees the step index counted over all windows (``step_offset + i``)."""
        three_way, do_cfg, guidance_scale, image_guidance_scale = guidance
        device = latents.device
        for i, t in enumerate(timesteps):
            if self.interrupt:
                continue
            if known is not None:
                z0, eps = known
                held = self.scheduler.add_noise(z0, eps, t.reshape(1))
                latents = torch.cat([held.to(latents.dtype), latents[:, :, z0.shape[2] :]], dim=2)
            attn_kwargs = dict(cross_attention_kwargs or {})
            if guidances:
                image_t = self.synapse.image_timestep_for(t)
                kv = stack_guidance(guidances, image_t, device, self.unet.dtype)
                attn_kwargs.update(self.synapse.attention_kwargs(kv, row_images, text_mask))
            model_in = torch.cat([latents] * n_branches) if n_branches > 1 else latents
            model_in = self.scheduler.scale_model_input(model_in, t)
            noise_pred = self.unet(
                model_in,
                t,
                encoder_hidden_states=text_states,
                encoder_attention_mask=text_mask,
                cross_attention_kwargs=attn_kwargs or None,
            ).sample
            noise_pred = self.combine_guidance(
                noise_pred, three_way, do_cfg, guidance_scale, image_guidance_scale
            )
            latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
            if callback is not None:
                out = callback(self, step_offset + i, t, {"latents": latents}) or {}
                latents = out.pop("latents", latents)
            bar.update()
        if known is not None:
            latents = torch.cat([known[0].to(latents.dtype), latents[:, :, known[0].shape[2] :]], dim=2)
        return latents

    def _decode_windows(
        self, latents: torch.Tensor, plan: WindowPlan, mel_only: bool, n_samples: int
    ) -> torch.Tensor:
        """(B, C, T', F') latents of a windowed clip → (B, 1, T, n_mels) log-mel or (B, n_samples) waveform,
        decoding one window at a time."""
        _, hop = vocoder_audio_params(self.vocoder)
        unit = self.vae_scale_factor * (1 if mel_only else hop)  # mel frames or samples per latent frame
        out: np.ndarray | None = None
        for k, start in enumerate(plan.starts):
            mel = self.decode_latents(latents[:, :, start : start + plan.window])  # (B, 1, W·f, n_mels)
            if mel_only:  # (B·n_mels, W·f): log-mels of the same frames agree, so complementary gains
                n_mels = mel.shape[-1]
                segment = mel.squeeze(1).transpose(1, 2).reshape(-1, mel.shape[2]).float().cpu().numpy()
            else:
                segment = self.mel_to_waveform(mel).cpu().numpy()  # (B, W·f·hop)
            if out is None:
                out = np.zeros((segment.shape[0], plan.total * unit), dtype=np.float32)
            crossfade_into(out, segment, start * unit, plan.held(k) * unit, 1.0 if mel_only else None)
        result = torch.from_numpy(out).to(latents.device)
        if mel_only:
            return result.reshape(latents.shape[0], n_mels, -1).transpose(1, 2).unsqueeze(1)
        return result[:, :n_samples]

    def window_overlap_seconds(self, plan: WindowPlan) -> float | None:
        """The (least) overlap of a plan's windows in seconds, rounded to latent frames; None for one window."""
        if len(plan.starts) == 1:
            return None
        sr, hop = vocoder_audio_params(self.vocoder)
        return round(plan.overlap * self.vae_scale_factor * hop / sr, 6)

    @staticmethod
    def combine_guidance(
        noise_pred: torch.Tensor,
        three_way: bool,
        do_cfg: bool,
        guidance_scale: float,
        image_guidance_scale: float | None,
    ) -> torch.Tensor:
        """The branches' predictions → one: three-branch (image guidance), two-branch CFG, or as is."""
        if three_way:
            e_u, e_t, e_ti = noise_pred.chunk(3)
            return e_u + guidance_scale * (e_t - e_u) + image_guidance_scale * (e_ti - e_t)
        if do_cfg:
            e_u, e_c = noise_pred.chunk(2)
            return e_u + guidance_scale * (e_c - e_u)
        return noise_pred

    def decode_output(
        self,
        latents: torch.Tensor,
        audio_length_in_s: float,
        output_type: str,
        plan: WindowPlan | None = None,
    ):
        """Latents → the requested output: latents, log-mel, or waveforms (B, samples) kept in [-1, 1]. A
        windowed clip is decoded window by window (flat memory) and the windows crossfaded over their overlap:
        log-mels with complementary gains, waveforms with power-preserving ones (:mod:`melfusion.audio.stitch`)."""
        if output_type == "latent":
            return latents
        n_samples = self._num_frames(audio_length_in_s)[1]
        if plan is None or len(plan.starts) == 1:
            mel = self.decode_latents(latents)
            if output_type == "mel":
                return mel
            audio = self.mel_to_waveform(mel)[:, :n_samples]
        else:
            audio = self._decode_windows(latents, plan, output_type == "mel", n_samples)
            if output_type == "mel":
                return audio
        peak = audio.abs().amax(dim=-1, keepdim=True)  # (B, 1): keep the documented [-1, 1] range
        audio = torch.where(peak > 1.0, audio * (0.99 / peak.clamp_min(1e-12)), audio)
        return audio.cpu().numpy() if output_type == "np" else audio


def _check_embeds(name: str, embeds: Any, mask: Any) -> int:
    """Rows of a (B, S, D) embedding tensor with an optional (B, S) mask; MelfusionInputError otherwise."""
    if not isinstance(embeds, torch.Tensor) or embeds.dim() != 3:
        raise MelfusionInputError(f"{name} must be a (batch, tokens, width) tensor")
    if mask is not None and (
        not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(embeds.shape[:2])
    ):
        raise MelfusionInputError(f"the attention mask of {name} must be a (batch, tokens) tensor")
    return int(embeds.shape[0])


def _embeds_and_mask(
    embeds: torch.Tensor, mask: torch.Tensor | None, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    if mask is None:
        mask = torch.ones(embeds.shape[:2], dtype=torch.bool)
    return embeds.to(device=device, dtype=dtype), mask.to(device).bool()


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
