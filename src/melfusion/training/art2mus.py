"""Art2Mus projection training (paper §5.2) with accelerate: everything frozen but the ImageProjectionLayer.

Per step, for a batch of ⟨artwork, (text,) music⟩ triplets:
  z_0   = VAE(mel(normalise(music))) · s                      (frozen AudioLDM 2 VAE; posterior cached)
  e     = E(artwork)                                          (frozen image encoder; embedding cached)
  LOA   = GPT-2([T5/CLAP text tokens if condition=image+text,] P(normalise(e)))   (frozen GPT-2, 8 tokens)
  ctx   = T5(support prompt) or T5(text)                      (frozen FLAN-T5)
  loss  = w(t) · ‖target − ε_θ(z_t, t; LOA, ctx)‖²             (frozen UNet; w = min-SNR-γ, γ = 5)
Only P (the projection) receives gradients: AdamW 2e-5, constant schedule with warmup, grad-clip 1.0.

Configs are YAML with a top-level `trainer: art2mus` and model/data/optim/train sections
(`configs/art2mus*.yaml`); `melfusion train --config ...` dispatches here (`is_art2mus_config`).
Checkpoints are safetensors + JSON folders written atomically (step-N/ + trainer_state.json, see
`training/loop.py`); `export` writes an `Art2MusPipeline` folder (safetensors).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from melfusion.audio.mel import MelConfig, mel_spectrogram
from melfusion.data.cache import FeatureCache, fingerprint, model_fingerprint
from melfusion.data.dataset import TripletDataset, collate_triplets
from melfusion.errors import MelfusionInputError
from melfusion.guidance.preprocess import tensor_sha256
from melfusion.pipelines.art2mus.constants import NEGATIVE_PROMPT, SUPPORT_PROMPT
from melfusion.training.loop import EpochSampler, Trainer, check_export_target, write_export
from melfusion.training.losses import diffusion_loss, diffusion_target, min_snr_weights
from melfusion.training.settings import (
    OptimSchedule,
    TrainSchedule,
    config_from_dict,
    config_trainer,
    load_typed_config,
)
from melfusion.utils.files import safe_file_stem

logger = logging.getLogger(__name__)
TRAINER_NAME = "art2mus"
CONDITIONS = ("image", "image+text")
IMAGE_ENCODERS = ("auto", "clip", "imagebind")


# ------------------------------------------------------------------------------------------ config


@dataclass
class Art2MusModelConfig:
    pretrained: str | None = (
        None  # Art2Mus or AudioLDM 2 pipeline folder; None → the tiny preset built in code
    )
    image_encoder: str = "auto"  # auto (the pipeline's) | clip | imagebind
    image_encoder_path: str | None = None  # CLIPVisionModelWithProjection folder, for image_encoder=clip
    weights_dir: str | None = None  # where imagebind_huge.pth lives (image_encoder=imagebind)
    num_image_tokens: int = 1  # 1 = Art2Mus, 4 = Art2Mus-4 (a fresh projection only)
    support_prompt: str = SUPPORT_PROMPT
    condition: str = "image"  # image (paper) | image+text (the record's text before the image tokens)
    tiny_audio_seconds: float = 0.64
    tiny_image_embed_dim: int = 24


@dataclass
class Art2MusDataConfig:
    train_manifest: str = ""
    val_manifest: str | None = None
    format: str = "auto"
    audio_seconds: float | None = None  # None → the model's default length (10.24 s for AudioLDM 2)
    normalize_audio: bool = True  # AudioLDM's normalize_wav: remove the mean, peak to 0.5
    num_workers: int = 0
    random_crop: bool = True
    check: bool = False


@dataclass
class Art2MusOptimConfig(OptimSchedule):
    lr: float = 2e-5  # paper §5.2
    warmup_steps: int = 500  # paper §5.2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8


@dataclass
class Art2MusTrainConfig(TrainSchedule):
    output_dir: str = "runs/art2mus"
    max_steps: int = 10000  # paper §5.2
    gradient_accumulation_steps: int = 4
    validate_every: int = 0
    gradient_checkpointing: bool = False
    min_snr_gamma: float | None = 5.0
    num_validation_samples: int = 2
    validation_inference_steps: int = 50
    validation_guidance_scale: float = 3.5
    negative_prompt: str = NEGATIVE_PROMPT
    use_cache: bool = True
    cache_dir: str | None = None


@dataclass
class Art2MusConfig:
    trainer: str = TRAINER_NAME
    model: Art2MusModelConfig = field(default_factory=Art2MusModelConfig)
    data: Art2MusDataConfig = field(default_factory=Art2MusDataConfig)
    optim: Art2MusOptimConfig = field(default_factory=Art2MusOptimConfig)
    train: Art2MusTrainConfig = field(default_factory=Art2MusTrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> Art2MusConfig:
        return config_from_dict(cls, data, source, TRAINER_NAME)

    def validate(self) -> None:
        m, t, o = self.model, self.train, self.optim
        if not self.data.train_manifest:
            raise MelfusionInputError("data.train_manifest is not set (give data.train_manifest=PATH)")
        if m.condition not in CONDITIONS:
            raise MelfusionInputError(f"model.condition must be one of {CONDITIONS}, got {m.condition!r}")
        if m.image_encoder not in IMAGE_ENCODERS:
            raise MelfusionInputError(f"model.image_encoder must be one of {IMAGE_ENCODERS}")
        if m.image_encoder == "imagebind" and not m.pretrained:
            raise MelfusionInputError(
                "model.image_encoder=imagebind needs model.pretrained (an AudioLDM 2 or Art2Mus folder); the "
                "tiny preset has its own CLIP encoder (image_encoder=auto)"
            )
        if m.num_image_tokens < 1:
            raise MelfusionInputError("model.num_image_tokens must be >= 1")
        if not m.support_prompt.strip():
            raise MelfusionInputError("model.support_prompt must not be empty")
        if t.max_steps < 1 or t.batch_size < 1 or t.gradient_accumulation_steps < 1:
            raise MelfusionInputError(
                "train.max_steps, train.batch_size and train.gradient_accumulation_steps must be >= 1"
            )
        if t.mixed_precision not in ("no", "fp16", "bf16"):
            raise MelfusionInputError(
                f"train.mixed_precision must be no, fp16 or bf16, got {t.mixed_precision!r}"
            )
        if t.min_snr_gamma is not None and t.min_snr_gamma <= 0:
            raise MelfusionInputError("train.min_snr_gamma must be > 0 (or null to disable)")
        if o.lr <= 0:
            raise MelfusionInputError("optim.lr must be > 0")
        if o.warmup_steps < 0:
            raise MelfusionInputError("optim.warmup_steps must be >= 0")
        if self.data.audio_seconds is not None and self.data.audio_seconds <= 0:
            raise MelfusionInputError("data.audio_seconds must be > 0")


def is_art2mus_config(path: str | os.PathLike[str] | None) -> bool:
    """Whether a YAML config file has `trainer: art2mus` (False for a missing or unreadable file)."""
    return config_trainer(path) == TRAINER_NAME


def load_art2mus_config(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None
) -> Art2MusConfig:
    """Defaults ← YAML file ← `section.key=value` overrides; relative manifest paths resolve against the
    config file's folder when they do not exist as given."""
    return load_typed_config(Art2MusConfig, TRAINER_NAME, path, overrides)


def _as_config(config: Art2MusConfig | dict[str, Any] | str | os.PathLike[str]) -> Art2MusConfig:
    if isinstance(config, Art2MusConfig):
        return config
    if isinstance(config, dict):
        return Art2MusConfig.from_dict(config)
    return load_art2mus_config(config)


# ----------------------------------------------------------------------------------- small helpers


def normalize_waveform(audio: torch.Tensor) -> torch.Tensor:
    """AudioLDM's `normalize_wav` per row of (B, T): remove the mean, scale the peak to 0.5."""
    audio = audio - audio.mean(dim=-1, keepdim=True)
    return audio / (audio.abs().amax(dim=-1, keepdim=True) + 1e-8) * 0.5


def build_art2mus_pipeline(config: Art2MusModelConfig, seed: int = 0):
    """The pipeline a config names: a folder (Art2Mus or AudioLDM 2) or the tiny preset."""
    from melfusion.pipelines.art2mus import Art2MusPipeline, build_tiny_art2mus_components

    if not config.pretrained:
        return Art2MusPipeline(
            **build_tiny_art2mus_components(
                seed=seed,
                num_image_tokens=config.num_image_tokens,
                image_embed_dim=config.tiny_image_embed_dim,
                audio_seconds=config.tiny_audio_seconds,
            ),
        )
    path = Path(config.pretrained)
    if not (path / "model_index.json").is_file():
        raise MelfusionInputError(
            f"model.pretrained {path}: not a pipeline folder (no model_index.json); give an Art2Mus or "
            "AudioLDM 2 folder saved with save_pretrained"
        )
    extra: dict[str, Any] = {
        "num_image_tokens": config.num_image_tokens,
        "support_prompt": config.support_prompt,
    }
    if config.image_encoder == "clip" and config.image_encoder_path:
        from transformers import CLIPVisionModelWithProjection

        from melfusion.encoders.clip import _image_processor_class

        extra["image_encoder"] = CLIPVisionModelWithProjection.from_pretrained(config.image_encoder_path)
        extra["image_processor"] = _image_processor_class().from_pretrained(config.image_encoder_path)
    return Art2MusPipeline.from_pretrained(str(path), local_files_only=True, **extra)


# ----------------------------------------------------------------------------------------- trainer


class Art2MusTrainer(Trainer):
    tracker_name = "art2mus"

    """`Art2MusTrainer(config).train(resume=None)`, `save_checkpoint()`, `export(path=None)`."""

    def __init__(
        self,
        config: Art2MusConfig | dict[str, Any] | str | os.PathLike[str],
        accelerator: Accelerator | None = None,
        pipeline: Any = None,
    ):
        config = _as_config(config)
        config.validate()
        self.config = config
        t, m = config.train, config.model
        self.setup_accelerator(accelerator)
        device = self.accelerator.device

        # Components: all frozen except the projection
        pipe = pipeline if pipeline is not None else build_art2mus_pipeline(m, t.seed)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(device)
        for name, module in pipe.components.items():
            if isinstance(module, torch.nn.Module) and name != "image_projection":
                module.requires_grad_(False)
                module.eval()
        pipe.image_projection.requires_grad_(True)
        pipe.image_projection.train()
        if t.gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
        kind = pipe.config.image_encoder_type if m.image_encoder == "auto" else m.image_encoder
        if kind == "imagebind":
            from melfusion.pipelines.art2mus.image_encoders import ImageBindImageEncoder

            pipe.set_image_encoder(ImageBindImageEncoder.from_pretrained(m.weights_dir, device=device))
        elif kind == "clip":
            from melfusion.pipelines.art2mus.image_encoders import ClipImageEncoder

            if pipe.image_encoder is None or pipe.image_processor is None:
                raise MelfusionInputError(
                    "model.image_encoder=clip but the pipeline has no CLIP vision model: set "
                    "model.image_encoder_path to a CLIPVisionModelWithProjection folder"
                )
            pipe.set_image_encoder(ClipImageEncoder(pipe.image_encoder, pipe.image_processor))
        self.image_encoder = pipe.get_image_encoder()
        self.noise_scheduler = pipe.scheduler
        voc = pipe.vocoder.config
        self.mel_config = MelConfig(
            sample_rate=int(voc.sampling_rate),
            hop_length=int(np.prod(voc.upsample_rates)),
            n_mels=int(voc.model_in_dim),
        )

        # Data: audio windows a whole number of latent frames long; images by path (embedded, cached)
        seconds = (
            config.data.audio_seconds
            or (pipe.unet.config.sample_size * pipe.vae_scale_factor * self.mel_config.hop_length)
            / self.mel_config.sample_rate
        )
        frames = self.mel_config.num_frames(seconds)
        frames = max(pipe.vae_scale_factor, frames - frames % pipe.vae_scale_factor)
        self.num_samples = frames * self.mel_config.hop_length
        self.train_set = self._dataset(config.data.train_manifest, random_crop=config.data.random_crop)
        self.val_set = (
            self._dataset(config.data.val_manifest, random_crop=False) if config.data.val_manifest else None
        )
        self.sampler = EpochSampler(len(self.train_set), seed=t.seed)
        self.loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_size=t.batch_size,
            sampler=self.sampler,
            num_workers=config.data.num_workers,
            collate_fn=collate_triplets,
            generator=torch.Generator().manual_seed(t.seed),
        )

        # Optimiser over the projection only
        o = config.optim
        self.projection = pipe.image_projection
        self.optimizer = torch.optim.AdamW(
            self.projection.parameters(),
            lr=o.lr,
            betas=(o.adam_beta1, o.adam_beta2),
            eps=o.adam_epsilon,
            weight_decay=o.weight_decay,
        )
        self.projection = self.setup_optimization(self.projection, self.optimizer)

        self.cache = FeatureCache((t.cache_dir or self.output_dir / "cache") if t.use_cache else None)
        self._image_memo: dict[str, torch.Tensor] = {}
        self._fp_audio = model_fingerprint(pipe.vae)
        self._support: tuple[torch.Tensor, torch.Tensor] | None = None
        self.num_skipped = 0

    # --------------------------------------------------------------------------------------- data
    def _dataset(self, manifest: str, random_crop: bool) -> TripletDataset:
        records = self.read_records(manifest)
        return TripletDataset(
            records,
            sample_rate=self.mel_config.sample_rate,
            num_samples=self.num_samples,
            image_size=32,  # unused: images are embedded from their files
            random_crop=random_crop,
            seed=self.config.train.seed,
            load_images=False,
        )

    # ------------------------------------------------------------------------------ frozen parts
    @torch.no_grad()
    def image_embeddings(self, paths: list[str]) -> torch.Tensor:
        """Frozen encoder embeddings (B, D) of image files (memory + disk cache, keyed by content)."""
        from melfusion.guidance.preprocess import load_image

        out = []
        for path in paths:
            key = (
                self.cache.file_key(path, {"encoder": self.image_encoder.cache_id})
                if self.cache.enabled
                else f"{path}"
            )
            if key not in self._image_memo:

                def compute(path=path) -> dict[str, torch.Tensor]:
                    emb = self.image_encoder.encode_images([load_image(path)])[0]
                    return {"embedding": emb.float().cpu()}

                item = (
                    self.cache.get_or_compute("art2mus_image_embedding", key, compute)
                    if self.cache.enabled
                    else compute()
                )
                self._image_memo[key] = item["embedding"].float()
            out.append(self._image_memo[key])
        return torch.stack(out).to(self.accelerator.device)

    @torch.no_grad()
    def encode_audio(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) waveforms → VAE posterior (mean, logvar), each (B, C, T', F')."""
        if self.config.data.normalize_audio:
            audio = normalize_waveform(audio)
        mel = mel_spectrogram(audio.to(self.accelerator.device), self.mel_config)  # (B, frames, n_mels)
        vae = self.pipe.vae
        dist = vae.encode(mel.unsqueeze(1).to(vae.dtype)).latent_dist
        return dist.mean, dist.logvar

    @torch.no_grad()
    def audio_latents(self, audio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Posterior samples × scaling factor, (B, C, T', F'); posteriors cached per clip content."""
        device = self.accelerator.device
        if self.cache.enabled:
            means, logvars = [], []
            for i in range(audio.shape[0]):
                key = fingerprint(
                    [
                        tensor_sha256(audio[i]),
                        self._fp_audio,
                        self.mel_config.to_dict(),
                        self.config.data.normalize_audio,
                    ]
                )

                def compute(i=i) -> dict[str, torch.Tensor]:
                    mean, logvar = self.encode_audio(audio[i : i + 1])
                    return {"mean": mean[0].cpu(), "logvar": logvar[0].cpu()}

                item = self.cache.get_or_compute("art2mus_audio_latents", key, compute)
                means.append(item["mean"])
                logvars.append(item["logvar"])
            mean, logvar = torch.stack(means).to(device), torch.stack(logvars).to(device)
        else:
            mean, logvar = self.encode_audio(audio)
        noise = (
            torch.randn(mean.shape, generator=generator).to(device, mean.dtype)
            if generator is not None
            else torch.randn_like(mean)
        )
        return (mean + torch.exp(0.5 * logvar) * noise) * self.pipe.vae.config.scaling_factor

    @torch.no_grad()
    def support_context(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """T5 states of the support prompt (computed once), expanded to (B, S, Dt) and (B, S)."""
        if self._support is None:
            states = self.pipe.encode_text([self.config.model.support_prompt], self.accelerator.device)
            self._support = (states.t5, states.t5_mask)
        t5, mask = self._support
        return t5.expand(batch_size, -1, -1), mask.expand(batch_size, -1)

    # --------------------------------------------------------------------------------------- step
    def conditioning(
        self, image_embeds: torch.Tensor, texts: list[str], projection: torch.nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(LOA (B, 8, L), T5 context (B, S, Dt), its mask) with gradients into the projection."""
        pipe = self.pipe
        x = image_embeds.float()
        if pipe.config.normalize_image_embeds:
            x = F.normalize(x, dim=-1)
        tokens = (projection or self.projection)(x)  # (B, N, L)
        if self.config.model.condition == "image+text":
            states = pipe.encode_text(texts, self.accelerator.device)
            text_tokens, text_mask = pipe.project_text(states)
            loa = pipe.language_of_audio(text_tokens, text_mask, tokens)
            return loa, states.t5, states.t5_mask
        loa = pipe.language_of_audio(None, None, tokens)
        t5, mask = self.support_context(x.shape[0])
        return loa, t5, mask

    def compute_loss(
        self,
        batch: dict[str, Any],
        generator: torch.Generator | None = None,
        projection: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        """The min-SNR-weighted diffusion loss of one batch (deterministic with `generator`)."""
        device = self.accelerator.device
        bsz = len(batch["text"])
        latents = self.audio_latents(batch["audio"], generator)
        num_t = self.noise_scheduler.config.num_train_timesteps
        if generator is None:
            timesteps = torch.randint(0, num_t, (bsz,), device=device)
            noise = torch.randn_like(latents)
        else:
            timesteps = torch.randint(0, num_t, (bsz,), generator=generator).to(device)
            noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
        image_embeds = self.image_embeddings(batch["image_path"])
        with self.accelerator.autocast():
            loa, t5, mask = self.conditioning(image_embeds, batch["text"], projection)
            noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
            pred = self.pipe.unet(
                noisy,
                timesteps,
                encoder_hidden_states=loa,
                encoder_hidden_states_1=t5,
                encoder_attention_mask_1=mask,
                return_dict=False,
            )[0]
        target = diffusion_target(self.noise_scheduler, latents, noise, timesteps)
        weights = None
        if self.config.train.min_snr_gamma is not None:
            weights = min_snr_weights(self.noise_scheduler, timesteps, self.config.train.min_snr_gamma)
        return diffusion_loss(pred, target, weights)

    # Training loop, checkpoints and resume: Trainer (training/loop.py).
    def _loop_model(self) -> torch.nn.Module:
        return self.projection

    def _trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.pipe.image_projection.parameters() if p.requires_grad]

    def _checkpoint_state(self) -> dict[str, Any]:
        return {"trainer": TRAINER_NAME}

    # --------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def validation_loss(self, dataset: TripletDataset | None = None, seed: int = 1234) -> float:
        """Mean loss over a dataset (default: the validation set) with fixed noise and timesteps."""
        dataset = dataset or self.val_set
        if dataset is None:
            return math.nan
        gen = torch.Generator().manual_seed(seed)
        projection = self.accelerator.unwrap_model(self.projection)
        projection.eval()
        losses = []
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.config.train.batch_size, collate_fn=collate_triplets
        )
        try:
            for batch in loader:
                if len(batch["text"]):
                    losses.append(float(self.compute_loss(batch, generator=gen, projection=projection)))
        finally:
            projection.train()
        return float(np.mean(losses)) if losses else math.nan

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Held-out loss and a few generated clips under <output>/validation/step-N."""
        acc = self.accelerator
        result: dict[str, float] = {}
        if not acc.is_main_process or self.val_set is None:
            acc.wait_for_everyone()
            return result
        result["val_loss"] = self.validation_loss()
        from melfusion.audio.io import save_audio

        t = self.config.train
        out = self.output_dir / "validation" / f"step-{self.global_step:07d}"
        self.pipe.image_projection.eval()
        try:
            for i in range(min(t.num_validation_samples, len(self.val_set))):
                rec = self.val_set.records[i]
                res = self.pipe(
                    image_embeds=self.image_embeddings([str(rec.image)]),
                    prompt=rec.text if self.config.model.condition == "image+text" else None,
                    support_prompt=self.config.model.support_prompt,
                    negative_prompt=t.negative_prompt,
                    num_inference_steps=t.validation_inference_steps,
                    guidance_scale=t.validation_guidance_scale,
                    audio_length_in_s=self.num_samples / self.mel_config.sample_rate,
                    generator=torch.Generator().manual_seed(i),
                    progress=False,
                )
                save_audio(
                    out / f"{i:02d}_{safe_file_stem(rec.id)}.wav",
                    res.audios[0],
                    res.sample_rate,
                    metadata={**res.parameters, "step": self.global_step},
                )
        finally:
            self.pipe.image_projection.train()
        acc.log(result, step=self.global_step)
        acc.wait_for_everyone()
        return result

    # ------------------------------------------------------------------------------------- export
    def export(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the trained `Art2MusPipeline` folder (safetensors) atomically; refuses a target whose
        replacement would destroy files (`check_export_target`)."""
        acc = self.accelerator
        path = Path(path or self.output_dir / "final")
        check_export_target(path, self.output_dir, export_inputs(self.config))  # on every rank: all raise
        acc.wait_for_everyone()
        if acc.is_main_process:

            def write(tmp: Path) -> None:
                self.pipe.save_pretrained(tmp, safe_serialization=True)

            about = {"trainer": TRAINER_NAME, "step": self.global_step}
            write_export(path, self.output_dir, write, about, export_inputs(self.config))
        acc.wait_for_everyone()
        return path


def export_inputs(config: Art2MusConfig) -> list[str | os.PathLike[str] | None]:
    """Folders this run reads, which an export must never replace."""
    m, t = config.model, config.train
    cache = (t.cache_dir or Path(t.output_dir) / "cache") if t.use_cache else None
    return [m.pretrained, m.image_encoder_path, m.weights_dir, cache]


def run_art2mus(args: Any) -> int:
    """`melfusion train` for an Art2Mus config (args: config, overrides, resume, export, no_export)."""
    config = load_art2mus_config(args.config, getattr(args, "overrides", None))
    config.validate()
    if not getattr(args, "no_export", False):  # before training: a refused target must not cost the run
        out = config.train.output_dir
        check_export_target(getattr(args, "export", None) or Path(out) / "final", out, export_inputs(config))
    import transformers

    transformers.logging.set_verbosity_error()
    trainer = Art2MusTrainer(config)
    history = trainer.train(resume=getattr(args, "resume", None))
    if trainer.config.train.checkpoint_every:
        trainer.save_checkpoint()
    if not getattr(args, "no_export", False):
        path = trainer.export(getattr(args, "export", None))
        if trainer.accelerator.is_main_process:
            print(f"exported Art2Mus pipeline to {path}")
    if trainer.accelerator.is_main_process and history:
        print(f"step {history[-1]['step']}: loss {history[-1]['loss']:.4f}")
    trainer.accelerator.end_training()
    return 0
