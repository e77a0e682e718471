"""Art2MusPipeline: artwork and/or text → music on diffusers' AudioLDM 2 (Rinaldi et al., ECCV-W 2024).

AudioLDM 2 conditions its UNet on two contexts: 8 "language of audio" (LOA) vectors that GPT-2 generates
from projected CLAP + FLAN-T5 text embeddings, and the FLAN-T5 states themselves. Art2Mus adds an image
encoder and a trained `ImageProjectionLayer` that turns the image embedding into N GPT-2 input tokens:

  text-only    GPT-2 ← [CLAP(p), T5(p)]             T5 context ← T5(p)          (= AudioLDM 2)
  image-only   GPT-2 ← [img tokens]                 T5 context ← T5(support prompt)
  image+text   GPT-2 ← [CLAP(p), T5(p), img tokens] T5 context ← T5(p)

where img tokens = ImageProjectionLayer(normalise(E(image))) (B, N, 768) and the support prompt is the
paper's fixed "Music representing the content of this artwork". The unconditional CFG branch is the
negative prompt's text path ("Low quality." by default). All AudioLDM 2 components are diffusers' and
transformers' own classes and the denoising, decoding and vocoding are `AudioLDM2Pipeline.__call__`
itself (fed precomputed embeddings): only the projection is new weight.

With several waveforms per input they are ranked best first: by image–audio similarity when the image
encoder shares a space with audio (ImageBind), else by CLAP text–audio similarity when there is a
prompt, else left in generation order.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AudioLDM2Pipeline
from diffusers.utils import BaseOutput

from melfusion.errors import MelfusionInputError
from melfusion.pipelines.art2mus.constants import (
    GUIDANCE_SCALE,
    IMAGE_ENCODER_TYPES,
    NEGATIVE_PROMPT,
    NUM_INFERENCE_STEPS,
    SUPPORT_PROMPT,
)
from melfusion.pipelines.art2mus.image_encoders import ClipImageEncoder, ImageBindImageEncoder, ImageEncoder
from melfusion.pipelines.art2mus.projection import ImageProjectionLayer

OUTPUT_TYPES = ("np", "pt", "latent")


@dataclass
class Art2MusPipelineOutput(BaseOutput):
    """audios: (B·N, T) float32 in generation-group order, each group of N ranked best first (or latents).
    scores: (B·N,) ranking similarities (None when not ranked). parameters: what produced them."""

    audios: np.ndarray | torch.Tensor
    sample_rate: int
    scores: np.ndarray | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextStates:
    """Frozen text encoders' output for a batch: CLAP pooled (B, 1, Dc); T5 states (B, S, Dt) + mask."""

    clap: torch.Tensor
    t5: torch.Tensor
    t5_mask: torch.Tensor


@dataclass
class Art2MusConditioning:
    """The UNet's two contexts: LOA (B, 8, L) and T5 states (B, S, Dt) with their (B, S) mask."""

    generated_prompt_embeds: torch.Tensor
    prompt_embeds: torch.Tensor
    attention_mask: torch.Tensor


def _as_list(value: str | list[str] | None, what: str) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(t, str) for t in items):
        raise MelfusionInputError(f"{what} must be a string or a list of strings")
    if not items:
        raise MelfusionInputError(f"{what} is an empty list")
    return list(items)


class Art2MusPipeline(AudioLDM2Pipeline):
    r"""Art2Mus on AudioLDM 2 components (see the module doc). Extra components: `image_projection`
    ([`ImageProjectionLayer`]), optional `image_encoder` (`CLIPVisionModelWithProjection`) and
    `image_processor`; config: `image_encoder_type` ("clip" | "imagebind" | "none"), `support_prompt`,
    `normalize_image_embeds` (L2-normalise the encoder output before the projection)."""

    _optional_components = ["image_encoder", "image_processor"]

    def __init__(
        self,
        vae,
        text_encoder,
        text_encoder_2,
        projection_model,
        language_model,
        tokenizer,
        tokenizer_2,
        feature_extractor,
        unet,
        scheduler,
        vocoder,
        image_projection: ImageProjectionLayer,
        image_encoder=None,
        image_processor=None,
        image_encoder_type: str = "clip",
        support_prompt: str = SUPPORT_PROMPT,
        normalize_image_embeds: bool = True,
    ):
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            projection_model=projection_model,
            language_model=language_model,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            feature_extractor=feature_extractor,
            unet=unet,
            scheduler=scheduler,
            vocoder=vocoder,
        )
        if image_encoder_type not in IMAGE_ENCODER_TYPES:
            raise ValueError(
                f"image_encoder_type must be one of {IMAGE_ENCODER_TYPES}, got {image_encoder_type!r}"
            )
        lm_dim = int(language_model.config.hidden_size)
        if image_projection.config.language_model_dim != lm_dim:
            raise ValueError(
                f"image_projection outputs {image_projection.config.language_model_dim}-d tokens but the "
                f"language model is {lm_dim}-d"
            )
        if image_encoder is not None and getattr(image_encoder.config, "projection_dim", None) not in (
            None,
            image_projection.config.image_embed_dim,
        ):
            raise ValueError(
                f"image_encoder gives {image_encoder.config.projection_dim}-d embeddings but image_projection "
                f"expects {image_projection.config.image_embed_dim}-d"
            )
        self.register_modules(
            image_projection=image_projection, image_encoder=image_encoder, image_processor=image_processor
        )
        self.register_to_config(
            image_encoder_type=image_encoder_type,
            support_prompt=support_prompt,
            normalize_image_embeds=bool(normalize_image_embeds),
        )
        self._external_image_encoder: ImageEncoder | None = None

    # ---------------------------------------------------------------------------------- loading
    @classmethod
    def from_audioldm2(
        cls,
        audioldm2: AudioLDM2Pipeline | str | os.PathLike[str],
        *,
        image_projection: ImageProjectionLayer | None = None,
        num_image_tokens: int = 1,
        image_embed_dim: int | None = None,
        image_encoder=None,
        image_processor=None,
        image_encoder_type: str | None = None,
        support_prompt: str = SUPPORT_PROMPT,
        **load_kwargs: Any,
    ) -> Art2MusPipeline:
        """Wrap an AudioLDM 2 pipeline (object or folder) with a projection (fresh if not given).

        Without an image encoder the type defaults to ImageBind (1024-d, as the paper); with a CLIP
        vision model to "clip" and its projection_dim.
        """
        base = (
            audioldm2
            if isinstance(audioldm2, AudioLDM2Pipeline)
            else AudioLDM2Pipeline.from_pretrained(audioldm2, **load_kwargs)
        )
        if image_encoder_type is None:
            image_encoder_type = "clip" if image_encoder is not None else "imagebind"
        if image_projection is None:
            dim = image_embed_dim or (
                int(image_encoder.config.projection_dim) if image_encoder is not None else 1024
            )
            image_projection = ImageProjectionLayer(
                image_embed_dim=dim,
                language_model_dim=int(base.language_model.config.hidden_size),
                num_tokens=num_image_tokens,
            ).to(device=base.device)
        components = {k: v for k, v in base.components.items()}
        return cls(
            **components,
            image_projection=image_projection,
            image_encoder=image_encoder,
            image_processor=image_processor,
            image_encoder_type=image_encoder_type,
            support_prompt=support_prompt,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], **kwargs: Any):
        """An Art2Mus folder (save_pretrained), or an AudioLDM 2 folder (a fresh projection is added;
        Art2Mus-only keywords: image_projection, num_image_tokens, image_embed_dim, image_encoder_type)."""
        index = Path(pretrained_model_name_or_path) / "model_index.json"
        if index.is_file():
            try:
                name = json.loads(index.read_text()).get("_class_name")
            except (OSError, json.JSONDecodeError) as err:
                raise MelfusionInputError(f"{index} is unreadable or not JSON ({err})") from None
            if name == "AudioLDM2Pipeline":
                extra = {
                    k: kwargs.pop(k)
                    for k in ("image_projection", "num_image_tokens", "image_embed_dim", "image_encoder_type")
                    if k in kwargs
                }
                for k in ("image_encoder", "image_processor", "support_prompt"):
                    if k in kwargs:
                        extra[k] = kwargs.pop(k)
                base = AudioLDM2Pipeline.from_pretrained(pretrained_model_name_or_path, **kwargs)
                return cls.from_audioldm2(base, **extra)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    # ---------------------------------------------------------------------------- image encoder
    def set_image_encoder(self, encoder: ImageEncoder | None) -> None:
        """Use `encoder` (e.g. an `ImageBindImageEncoder`) for image inputs instead of the configured one."""
        if encoder is not None and int(encoder.embed_dim) != self.image_projection.config.image_embed_dim:
            raise MelfusionInputError(
                f"{encoder.name} gives {encoder.embed_dim}-d embeddings but the projection expects "
                f"{self.image_projection.config.image_embed_dim}-d"
            )
        self._external_image_encoder = encoder

    def get_image_encoder(self, load: bool = True) -> ImageEncoder | None:
        """The encoder for image inputs: one set with `set_image_encoder`, else the configured type (CLIP from
        the components; ImageBind loaded on first use when `load`)."""
        if self._external_image_encoder is not None:
            return self._external_image_encoder
        kind = self.config.image_encoder_type
        if kind == "clip":
            if self.image_encoder is None or self.image_processor is None:
                if not load:
                    return None
                raise MelfusionInputError(
                    "this Art2Mus pipeline has no CLIP image encoder; give image_embeds=, or add one "
                    "(image_encoder=CLIPVisionModelWithProjection, image_processor=CLIPImageProcessor)"
                )
            return ClipImageEncoder(self.image_encoder, self.image_processor)
        if kind == "imagebind":
            if not load:
                return None
            self.set_image_encoder(ImageBindImageEncoder.from_pretrained(device=self._execution_device))
            return self._external_image_encoder
        if not load:
            return None
        raise MelfusionInputError(
            "this Art2Mus pipeline has no image encoder (image_encoder_type='none'): give image_embeds="
        )

    def encode_image(self, images: list[Any]) -> torch.Tensor:
        """Images (paths, PIL, arrays) → raw encoder embeddings (B, D) float32 on the execution device."""
        from melfusion.guidance.preprocess import to_pil

        pil = [to_pil(im) for im in images]
        emb = self.get_image_encoder().encode_images(pil)
        return emb.to(self._execution_device, torch.float32)

    # ----------------------------------------------------------------------------- conditioning
    def t5_length(self, texts: list[str]) -> int:
        """Token count of the longest text for the T5 tokenizer (padding=True, truncated)."""
        tok = self.tokenizer_2(
            texts,
            padding=True,
            max_length=self.tokenizer_2.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return int(tok.input_ids.shape[1])

    @torch.no_grad()
    def encode_text(self, texts: list[str], device: torch.device, t5_length: int | None = None) -> TextStates:
        """CLAP pooled and FLAN-T5 states of `texts`, tokenised as AudioLDM 2 does (T5 padded to
        `t5_length` when given, else to the longest)."""
        tok = self.tokenizer(
            texts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        clap = self.text_encoder.get_text_features(
            tok.input_ids.to(device), attention_mask=tok.attention_mask.to(device)
        )
        clap = getattr(clap, "pooler_output", clap)[:, None, :]  # (B, 1, Dc)
        tok2 = self.tokenizer_2(
            texts,
            padding="max_length" if t5_length else True,
            max_length=t5_length or self.tokenizer_2.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        mask = tok2.attention_mask.to(device)
        t5 = self.text_encoder_2(tok2.input_ids.to(device), attention_mask=mask)[0]  # (B, S, Dt)
        return TextStates(clap=clap, t5=t5, t5_mask=mask)

    def project_text(self, states: TextStates) -> tuple[torch.Tensor, torch.Tensor]:
        """AudioLDM 2's projection: [SOS, CLAP, EOS, SOS_1, T5..., EOS_1] → (B, S', L) tokens and mask."""
        out = self.projection_model(
            hidden_states=states.clap,
            hidden_states_1=states.t5,
            attention_mask=torch.ones(states.clap.shape[:2], dtype=torch.long, device=states.clap.device),
            attention_mask_1=states.t5_mask,
        )
        return out.hidden_states, out.attention_mask

    def project_image(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """Raw image embeddings (B, D) → GPT-2 input tokens (B, N, L) (differentiable)."""
        x = image_embeds.to(self.image_projection.device, torch.float32)
        if self.config.normalize_image_embeds:
            x = F.normalize(x, dim=-1)
        return self.image_projection(x.to(self.image_projection.dtype))

    def generate_language_model(
        self,
        inputs_embeds: torch.Tensor,
        max_new_tokens: int | None = 8,
        attention_mask: torch.Tensor | None = None,
        **model_kwargs: Any,
    ) -> torch.Tensor:
        """GPT-2 "language of audio" generation: append the last hidden state `max_new_tokens` times and return
        the new (B, n, L) vectors. Works with GPT2Model and GPT2LMHeadModel alike and keeps autograd (no
        key/value cache: n is 8, so recomputing the short prefix costs little)."""
        n = max_new_tokens or int(getattr(self.language_model.config, "max_new_tokens", 8) or 8)
        b = inputs_embeds.shape[0]
        mask = (
            attention_mask.to(inputs_embeds.device)
            if attention_mask is not None
            else torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        )
        for _ in range(n):
            out = self.language_model(
                inputs_embeds=inputs_embeds,
                attention_mask=mask,
                output_hidden_states=True,
                return_dict=True,
                use_cache=False,
            )
            nxt = out.hidden_states[-1][:, -1:, :]  # (B, 1, L)
            inputs_embeds = torch.cat([inputs_embeds, nxt.to(inputs_embeds.dtype)], dim=1)
            mask = torch.cat([mask, mask.new_ones((b, 1))], dim=1)
        return inputs_embeds[:, -n:, :]

    def language_of_audio(
        self,
        text_tokens: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        image_tokens: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
    ) -> torch.Tensor:
        """GPT-2 on [text tokens, image tokens] (either may be absent) → LOA (B, 8, L)."""
        parts, masks = [], []
        if text_tokens is not None:
            parts.append(text_tokens)
            masks.append(
                text_mask
                if text_mask is not None
                else torch.ones(text_tokens.shape[:2], dtype=torch.long, device=text_tokens.device)
            )
        if image_tokens is not None:
            parts.append(image_tokens.to(self.language_model.dtype))
            masks.append(torch.ones(image_tokens.shape[:2], dtype=torch.long, device=image_tokens.device))
        if not parts:
            raise ValueError("language_of_audio needs text tokens, image tokens or both")
        inputs = torch.cat(parts, dim=1)  # (B, S' + N, L)
        mask = torch.cat([m.to(inputs.device, torch.long) for m in masks], dim=1)
        return self.generate_language_model(inputs, max_new_tokens=max_new_tokens, attention_mask=mask)

    def encode_conditioning(
        self,
        prompts: list[str] | None,
        image_embeds: torch.Tensor | None,
        *,
        batch_size: int,
        device: torch.device,
        support_prompt: str | None = None,
        t5_length: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Art2MusConditioning:
        """Both UNet contexts for one branch (see the module doc's table). Differentiable in `image_embeds`."""
        support = support_prompt or self.config.support_prompt
        text_tokens = text_mask = None
        if prompts is not None:
            states = self.encode_text(prompts, device, t5_length)
            text_tokens, text_mask = self.project_text(states)
            t5, t5_mask = states.t5, states.t5_mask
        else:
            states = self.encode_text([support], device, t5_length)
            t5 = states.t5.expand(batch_size, -1, -1)
            t5_mask = states.t5_mask.expand(batch_size, -1)
        image_tokens = self.project_image(image_embeds) if image_embeds is not None else None
        loa = self.language_of_audio(text_tokens, text_mask, image_tokens, max_new_tokens)
        return Art2MusConditioning(generated_prompt_embeds=loa, prompt_embeds=t5, attention_mask=t5_mask)

    # ---------------------------------------------------------------------------------- checks
    def check_art2mus_inputs(
        self,
        image: Any,
        prompt: str | list[str] | None,
        image_embeds: torch.Tensor | np.ndarray | None,
        negative_prompt: str | list[str] | None,
        num_waveforms_per_prompt: int,
        num_inference_steps: int,
        guidance_scale: float,
        output_type: str,
    ) -> tuple[list[Any] | None, list[str] | None, torch.Tensor | None, list[str] | None, int]:
        """Validate a call; returns (images, prompts, image_embeds (B, D), negative prompts, batch size)."""
        if image is not None and image_embeds is not None:
            raise MelfusionInputError("give either image or image_embeds, not both")
        images = None
        if image is not None:
            images = list(image) if isinstance(image, list | tuple) else [image]
            if not images:
                raise MelfusionInputError("image is an empty list")
        prompts = _as_list(prompt, "prompt")
        if prompts is not None and any(not p.strip() for p in prompts):
            raise MelfusionInputError("prompt must not be empty (leave it out for image-only generation)")
        embeds = None
        if image_embeds is not None:
            embeds = torch.as_tensor(
                np.asarray(image_embeds) if not torch.is_tensor(image_embeds) else image_embeds
            )
            if embeds.dim() == 1:
                embeds = embeds[None]
            dim = self.image_projection.config.image_embed_dim
            if embeds.dim() != 2 or embeds.shape[1] != dim:
                raise MelfusionInputError(f"image_embeds must be (B, {dim}), got {tuple(embeds.shape)}")
            if not torch.isfinite(embeds).all():
                raise MelfusionInputError("image_embeds contains NaN or infinite values")
        if images is None and embeds is None and prompts is None:
            raise MelfusionInputError("give an image (or image_embeds), a prompt, or both")
        sizes = {
            name: n
            for name, n in (
                ("images", len(images) if images is not None else None),
                ("image_embeds", embeds.shape[0] if embeds is not None else None),
                ("prompts", len(prompts) if prompts is not None else None),
            )
            if n is not None
        }
        batch = max(sizes.values())
        if any(n not in (1, batch) for n in sizes.values()):
            raise MelfusionInputError(
                "batch sizes differ: "
                + ", ".join(f"{n} {k}" for k, n in sizes.items())
                + " (or give one of them)"
            )
        if images is not None and len(images) == 1:
            images = images * batch
        if embeds is not None and embeds.shape[0] == 1:
            embeds = embeds.expand(batch, -1)
        if prompts is not None and len(prompts) == 1:
            prompts = prompts * batch
        negatives = _as_list(negative_prompt, "negative_prompt")
        if negatives is not None:
            if len(negatives) == 1:
                negatives = negatives * batch
            elif len(negatives) != batch:
                raise MelfusionInputError(f"{len(negatives)} negative prompts for a batch of {batch}")
        if isinstance(num_waveforms_per_prompt, bool) or not isinstance(num_waveforms_per_prompt, int):
            raise MelfusionInputError("num_waveforms_per_prompt must be an integer >= 1")
        if num_waveforms_per_prompt < 1:
            raise MelfusionInputError("num_waveforms_per_prompt must be an integer >= 1")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise MelfusionInputError("num_inference_steps must be an integer >= 1")
        if not np.isfinite(guidance_scale) or guidance_scale < 0:
            raise MelfusionInputError("guidance_scale must be a finite number >= 0")
        if output_type not in OUTPUT_TYPES:
            raise MelfusionInputError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        return images, prompts, embeds, negatives, batch

    # --------------------------------------------------------------------------------- ranking
    @torch.no_grad()
    def clap_scores(self, texts: list[str], audio: torch.Tensor, group: int) -> torch.Tensor:
        """Cosine similarity of each waveform (B·N, T) with its group's text (CLAP; audio resampled)."""
        import soxr

        from melfusion.encoders.base import features_tensor, seeded_numpy

        device = self._execution_device
        sr_in = int(self.vocoder.config.sampling_rate)
        sr_out = int(self.feature_extractor.sampling_rate)
        waves = [soxr.resample(w.astype(np.float32), sr_in, sr_out) for w in audio.float().numpy()]
        with seeded_numpy(0):
            feats = self.feature_extractor(waves, return_tensors="pt", sampling_rate=sr_out)
        kwargs = {"input_features": feats.input_features.to(device, self.text_encoder.dtype)}
        if "is_longer" in feats:
            kwargs["is_longer"] = feats["is_longer"].to(device)
        a = F.normalize(features_tensor(self.text_encoder.get_audio_features(**kwargs)).float(), dim=-1)
        tok = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(device)
        t = F.normalize(features_tensor(self.text_encoder.get_text_features(**tok)).float(), dim=-1)
        return (a * t.repeat_interleave(group, dim=0)).sum(-1).cpu()  # (B·N,)

    def rank_waveforms(
        self,
        audio: torch.Tensor,
        group: int,
        *,
        image_embeds: torch.Tensor | None,
        prompts: list[str] | None,
        encoder: ImageEncoder | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, str | None]:
        """Reorder each group of `group` waveforms best first; returns (audio, scores, criterion)."""
        if group < 2:
            return audio, None, None
        if image_embeds is not None and encoder is not None and getattr(encoder, "shares_audio_space", False):
            sr = int(self.vocoder.config.sampling_rate)
            emb = F.normalize(encoder.encode_audio(audio.float().numpy(), sr).float().cpu(), dim=-1)
            img = F.normalize(image_embeds.float().cpu(), dim=-1).repeat_interleave(group, dim=0)
            scores, criterion = (emb * img).sum(-1), f"{encoder.name} image-audio cosine"
        elif prompts is not None:
            scores, criterion = self.clap_scores(prompts, audio, group), "CLAP text-audio cosine"
        else:
            return audio, None, None
        order = torch.argsort(scores.view(-1, group), dim=1, descending=True)  # (B, N)
        flat = (order + torch.arange(order.shape[0])[:, None] * group).reshape(-1)
        return audio[flat], scores[flat], criterion

    # ------------------------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        image: Any = None,
        prompt: str | list[str] | None = None,
        *,
        image_embeds: torch.Tensor | np.ndarray | None = None,
        support_prompt: str | None = None,
        negative_prompt: str | list[str] | None = NEGATIVE_PROMPT,
        audio_length_in_s: float | None = None,
        num_inference_steps: int = NUM_INFERENCE_STEPS,
        guidance_scale: float = GUIDANCE_SCALE,
        num_waveforms_per_prompt: int = 1,
        rank_waveforms: bool = True,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        progress: bool = True,
        callback=None,
        callback_steps: int = 1,
    ) -> Art2MusPipelineOutput | tuple:
        """Generate music from an artwork, a text, or both (module doc). Returns (B·N, T) waveforms.

        image: a path, PIL image, HWC uint8 array or CHW tensor, or a list (one per batch item).
        image_embeds: precomputed (B, D) encoder embeddings instead of `image` (e.g. cached ImageBind).
        support_prompt: the T5 text of image-only calls (default: the pipeline's, the paper's sentence).
        """
        # 1. Check inputs
        images, prompts, embeds, negatives, batch = self.check_art2mus_inputs(
            image,
            prompt,
            image_embeds,
            negative_prompt,
            num_waveforms_per_prompt,
            num_inference_steps,
            guidance_scale,
            output_type,
        )
        device = self._execution_device
        do_cfg = guidance_scale > 1.0
        if do_cfg and negatives is None:
            negatives = [""] * batch  # AudioLDM 2's unconditional text

        # 2. Encode the image
        encoder = None
        if images is not None:
            encoder = self.get_image_encoder()
            embeds = self.encode_image(images)  # (B, D)
        elif embeds is not None:
            encoder = self.get_image_encoder(load=False)
            embeds = embeds.to(device, torch.float32)
        mode = (
            "image+text"
            if embeds is not None and prompts is not None
            else "image"
            if embeds is not None
            else "text"
        )

        # 3. Both contexts for the conditional and (CFG) unconditional branches, T5 padded to one length
        support = support_prompt or self.config.support_prompt
        cond_t5_texts = prompts if prompts is not None else [support]
        length = self.t5_length(cond_t5_texts + (negatives if do_cfg else []))
        cond = self.encode_conditioning(
            prompts,
            embeds,
            batch_size=batch,
            device=device,
            support_prompt=support,
            t5_length=length,
            max_new_tokens=max_new_tokens,
        )
        uncond = None
        if do_cfg:
            uncond = self.encode_conditioning(
                negatives,
                None,
                batch_size=batch,
                device=device,
                t5_length=length,
                max_new_tokens=max_new_tokens,
            )

        # 4-8. AudioLDM 2's own denoising loop, VAE decoding and vocoder on those embeddings
        previous = dict(getattr(self, "_progress_bar_config", {}))
        if not progress:
            self.set_progress_bar_config(**{**previous, "disable": True})
        try:
            out = super().__call__(
                prompt=None,
                audio_length_in_s=audio_length_in_s,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                num_waveforms_per_prompt=num_waveforms_per_prompt,
                eta=eta,
                generator=generator,
                latents=latents,
                prompt_embeds=cond.prompt_embeds.contiguous(),
                attention_mask=cond.attention_mask.contiguous(),
                generated_prompt_embeds=cond.generated_prompt_embeds,
                negative_prompt_embeds=uncond.prompt_embeds.contiguous() if uncond else None,
                negative_attention_mask=uncond.attention_mask.contiguous() if uncond else None,
                negative_generated_prompt_embeds=uncond.generated_prompt_embeds if uncond else None,
                output_type="latent" if output_type == "latent" else "pt",
                return_dict=True,
                callback=callback,
                callback_steps=callback_steps,
            )
        finally:
            self._progress_bar_config = previous
        audio = out.audios
        sample_rate = int(self.vocoder.config.sampling_rate)
        parameters: dict[str, Any] = {
            "model": "art2mus",
            "mode": mode,
            "prompts": prompts,
            "negative_prompts": negatives if do_cfg else None,
            "support_prompt": support if prompts is None else None,
            "num_image_tokens": int(self.image_projection.config.num_tokens),
            "image_encoder": getattr(encoder, "name", None) if embeds is not None else None,
            "steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "num_waveforms_per_prompt": num_waveforms_per_prompt,
            "audio_length_in_s": audio_length_in_s,
            "scheduler": type(self.scheduler).__name__,
        }

        if output_type != "latent":
            parameters["audio_length_in_s"] = audio.shape[-1] / sample_rate

        # 9. Rank each input's waveforms
        scores = None
        if output_type != "latent" and rank_waveforms:
            audio, scores, criterion = self.rank_waveforms(
                audio, num_waveforms_per_prompt, image_embeds=embeds, prompts=prompts, encoder=encoder
            )
            parameters["ranked_by"] = criterion
        if output_type == "np":
            audio = audio.float().numpy()
        score_arr = scores.numpy() if scores is not None else None
        if not return_dict:
            return (audio,)
        return Art2MusPipelineOutput(
            audios=audio, sample_rate=sample_rate, scores=score_arr, parameters=parameters
        )
