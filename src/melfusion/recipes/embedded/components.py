"""Stage-1 trainers of the embedded model family: the mel audio VAE, the image VAE and the small image LDM.

MeLFusion's music LDM (``training/trainer.py``) needs three frozen parts that the full-size path takes from
TANGO/AudioLDM and Stable Diffusion. The embedded default has no such checkpoints, so it trains them here:

- ``audio_vae``  AutoencoderKL on log-mel spectrograms (B, 1, frames, n_mels), loss L1 + kl_weight · KL;
- ``image_vae``  AutoencoderKL on images in [-1, 1], same loss;
- ``image_unet`` UNet2DConditionModel (the music UNet's layout, so the synapse maps layer l to layer l) on
  the image VAE's latents, ε-prediction, conditioned on the all-MiniLM-L6-v2 states of the null prompt: the
  synapse only ever runs the image LDM on ∅ (DDIM inversion and K/V capture), so the image side is an
  unconditional LDM in text-to-image clothes.

Data come from any triplet manifest (the audio of each row for ``audio_vae``, its first image otherwise),
are decoded once into memory (bad files reported and skipped) and trained with the shared loop
(``training/loop.py``: accumulation, atomic checkpoints, exact resume). ``export`` writes a diffusers model
folder (safetensors); VAEs get ``scaling_factor`` = 1 / std of their latents, as Stable Diffusion's.

    melfusion train --config configs/embedded/audio-vae.yaml [section.key=value ...] [--resume latest]
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
from diffusers import AutoencoderKL, DDIMScheduler
from tqdm.auto import tqdm

from melfusion.audio.mel import MelConfig, mel_spectrogram
from melfusion.data.dataset import read_audio_window
from melfusion.errors import MelfusionInputError
from melfusion.guidance.preprocess import load_image, preprocess_image
from melfusion.models.tiny import build_vae
from melfusion.training.loop import (
    SILENCE_DBFS,
    EpochSampler,
    Trainer,
    check_export_target,
    write_export,
)
from melfusion.training.settings import OptimSchedule, TrainSchedule, config_trainer, load_typed_config

logger = logging.getLogger(__name__)

TRAINER_NAME = "component"
COMPONENTS = ("audio_vae", "image_vae", "image_unet")


@dataclass
class ComponentModelConfig:
    component: str = "audio_vae"  # audio_vae | image_vae | image_unet
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64, 64])
    layers_per_block: int = 1
    latent_channels: int = 8  # VAEs
    kl_weight: float = 1e-5  # VAEs: weight of the per-element KL against the per-element L1
    attention_head_dim: int = 8  # image_unet
    image_vae: str | None = None  # image_unet: folder of the trained image VAE
    prediction_type: str = "epsilon"  # image_unet
    audio_seconds: float = 5.12  # audio_vae: clip length
    crop_frames: int | None = (
        128  # audio_vae: train on random windows of this many mel frames (convolutional)
    )
    image_size: int = 32  # image_vae / image_unet
    # audio_vae: mel bands (16 kHz, hop 160, fmax 8 kHz otherwise; 64 = AudioLDM-S). The VAE's sample_size
    # records it, so the music stage (models.tiny.build_tiny_components) builds the matching front end.
    n_mels: int = 64


@dataclass
class ComponentDataConfig:
    train_manifest: str = ""
    val_manifest: str | None = None
    format: str = "auto"
    max_items: int | None = None  # use only the first N rows (quick runs)


@dataclass
class ComponentOptimConfig(OptimSchedule):
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100


@dataclass
class ComponentTrainConfig(TrainSchedule):
    output_dir: str = "runs/component"
    batch_size: int = 16
    keep_checkpoints: int = 2
    log_every: int = 50
    report_to: str = "none"


@dataclass
class ComponentConfig:
    trainer: str = TRAINER_NAME
    model: ComponentModelConfig = field(default_factory=ComponentModelConfig)
    data: ComponentDataConfig = field(default_factory=ComponentDataConfig)
    optim: ComponentOptimConfig = field(default_factory=ComponentOptimConfig)
    train: ComponentTrainConfig = field(default_factory=ComponentTrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        m, t = self.model, self.train
        if m.component not in COMPONENTS:
            raise MelfusionInputError(f"model.component must be one of {COMPONENTS}, got {m.component!r}")
        if not self.data.train_manifest:
            raise MelfusionInputError("data.train_manifest is not set (give data.train_manifest=PATH)")
        if m.component == "image_unet" and not m.image_vae:
            raise MelfusionInputError(
                "model.image_vae is not set: an image_unet trains on the latents of a trained image VAE "
                "(give model.image_vae=FOLDER, the output of the image_vae stage)"
            )
        if not m.block_out_channels or any(int(c) % 8 for c in m.block_out_channels):
            raise MelfusionInputError("model.block_out_channels must be a non-empty list of multiples of 8")
        factor = 2 ** (len(m.block_out_channels) - 1)
        bad_mels = isinstance(m.n_mels, bool) or int(m.n_mels) < factor or int(m.n_mels) % factor
        if m.component == "audio_vae" and bad_mels:
            raise MelfusionInputError(
                f"model.n_mels={m.n_mels} must be a positive multiple of the VAE's downsampling factor {factor} "
                f"({len(m.block_out_channels)} blocks); use e.g. 64 or 128"
            )
        if t.max_steps < 1 or t.batch_size < 1 or t.gradient_accumulation_steps < 1:
            raise MelfusionInputError("train.max_steps, train.batch_size, gradient_accumulation_steps >= 1")
        if t.mixed_precision not in ("no", "fp16", "bf16"):
            raise MelfusionInputError(
                f"train.mixed_precision must be no, fp16 or bf16, not {t.mixed_precision!r}"
            )


def is_component_config(path: str | os.PathLike[str] | None) -> bool:
    return config_trainer(path) == TRAINER_NAME


def load_component_config(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None
) -> ComponentConfig:
    return load_typed_config(
        ComponentConfig,
        TRAINER_NAME,
        path,
        overrides,
        path_settings=(("data", "train_manifest"), ("data", "val_manifest"), ("model", "image_vae")),
    )


# ------------------------------------------------------------------------------------------ models
def vae_factor(vae: AutoencoderKL) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


class _InMemory(torch.utils.data.Dataset):
    """Decoded training inputs (N, C, H, W); ``set_epoch`` for the shared loop (order lives in the sampler)."""

    def __init__(self, x: torch.Tensor, ids: list[str]):
        self.x, self.ids = x, ids

    def __len__(self) -> int:
        return len(self.x)

    def set_epoch(self, epoch: int) -> None:
        pass

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.x[i], "text": ""}


class ComponentTrainer(Trainer):
    tracker_name = "melfusion-component"

    def __init__(self, config: ComponentConfig, accelerator: Accelerator | None = None):
        config.validate()
        self.config = config
        m, t = config.model, config.train
        self.setup_accelerator(accelerator)
        self.mel_config = MelConfig(n_mels=int(m.n_mels))
        device = self.accelerator.device
        self.image_vae: AutoencoderKL | None = None
        self.null_embeds: torch.Tensor | None = None
        if m.component == "audio_vae":
            self.net = build_vae(
                1, m.block_out_channels, m.latent_channels, m.layers_per_block, int(m.n_mels)
            )
        elif m.component == "image_vae":
            self.net = build_vae(3, m.block_out_channels, m.latent_channels, m.layers_per_block, m.image_size)
        else:
            from melfusion.models.tiny import build_unet, load_minilm

            self.image_vae = (
                AutoencoderKL.from_pretrained(m.image_vae).to(device).eval().requires_grad_(False)
            )
            tokenizer, text_encoder = load_minilm(True)
            with torch.no_grad():
                ids = tokenizer([""], padding="max_length", max_length=8, return_tensors="pt")
                self.null_embeds = text_encoder(**ids).last_hidden_state.to(device)  # (1, 8, 384)
            self.net = build_unet(
                sample_size=m.image_size // vae_factor(self.image_vae),
                in_channels=self.image_vae.config.latent_channels,
                block_out_channels=m.block_out_channels,
                cross_attention_dim=self.null_embeds.shape[-1],
                attention_head_dim=m.attention_head_dim,
                layers_per_block=m.layers_per_block,
            )
            self.noise_scheduler = DDIMScheduler(prediction_type=m.prediction_type, **_sd_scheduler())
        self.net.train()
        self.num_skipped = 0
        self.train_set = self._load(config.data.train_manifest)
        self.val_set = self._load(config.data.val_manifest) if config.data.val_manifest else None
        self.sampler = EpochSampler(len(self.train_set), seed=t.seed)
        self.loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_size=t.batch_size,
            sampler=self.sampler,
            generator=torch.Generator().manual_seed(t.seed),
        )
        o = config.optim
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        self.net = self.setup_optimization(self.net, self.optimizer)

    # ------------------------------------------------------------------------------------------ data
    def _load(self, manifest: str) -> _InMemory:
        """Decode every row once: mel (1, frames, n_mels) or pixels (3, S, S); bad files skipped, counted."""
        m = self.config.model
        records = self.read_records(manifest)
        if self.config.data.max_items:
            records = records[: self.config.data.max_items]
        frames = self.mel_config.num_frames(m.audio_seconds)
        num_samples = self.mel_config.num_samples(frames)
        items, ids, bad = [], [], []
        silent = short = 0
        for rec in tqdm(
            records, desc=f"load {Path(manifest).name}", disable=not self.accelerator.is_local_main_process
        ):
            try:
                if m.component == "audio_vae":
                    audio, _, length = read_audio_window(
                        rec.audio,
                        self.mel_config.sample_rate,
                        num_samples,
                        start_s=rec.start_s,
                        end_s=rec.end_s,
                    )
                    short += length < num_samples
                    silent += float(audio[: max(length, 1)].std()) <= 10 ** (SILENCE_DBFS / 20)
                    mel = mel_spectrogram(torch.from_numpy(audio)[None], self.mel_config)[:, :frames]
                    items.append(mel)  # (1, frames, n_mels)
                else:
                    items.append(preprocess_image(load_image(rec.images[0]), m.image_size, m.image_size)[0])
                ids.append(rec.id)
            except Exception as err:  # a bad file is reported and skipped, not a crash an hour in
                bad.append(f"{rec.id}: {err}")
        if bad:
            logger.warning("skipped %d unreadable item(s) in %s, e.g. %s", len(bad), manifest, bad[0])
        self.num_skipped += len(bad)
        if not items or silent == len(items):
            raise MelfusionInputError(
                f"no usable item in {manifest} ({len(bad)} unreadable, {silent} silent): nothing to train "
                f"on; run `melfusion data check {manifest}` to list them, then fix or drop them"
            )
        if silent or short:
            logger.warning(
                "%s: of %d item(s), %d are silent (below %g dBFS) and %d shorter than the %.2f s window "
                "(zero-padded); run `melfusion data check` to drop them",
                manifest,
                len(items),
                silent,
                SILENCE_DBFS,
                short,
                m.audio_seconds,
            )
        return _InMemory(torch.stack(items), ids)

    def _trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def _loop_model(self) -> torch.nn.Module:
        return self.net

    # ------------------------------------------------------------------------------------------ loss
    def compute_loss(
        self,
        batch: dict[str, Any],
        generator: torch.Generator | None = None,
        model: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        net = model or self.net
        x = batch["x"].to(self.accelerator.device)
        crop = self.config.model.crop_frames
        if self.config.model.component == "audio_vae" and crop and crop < x.shape[-2]:
            start = int(torch.randint(0, x.shape[-2] - crop + 1, (1,), generator=generator))
            x = x[..., start : start + crop, :]  # (B, 1, crop, n_mels)
        if self.config.model.component != "image_unet":
            posterior = net.encode(x).latent_dist
            z = posterior.sample(generator) if generator is not None else posterior.sample()
            rec = net.decode(z).sample
            kl = posterior.kl().mean() / z[0].numel()  # per latent element
            return F.l1_loss(rec, x) + self.config.model.kl_weight * kl
        with torch.no_grad():
            latents = (
                self.image_vae.encode(x).latent_dist.sample(generator) * self.image_vae.config.scaling_factor
            )
        bsz = latents.shape[0]
        n_train = self.noise_scheduler.config.num_train_timesteps
        t = torch.randint(0, n_train, (bsz,), generator=generator).to(latents.device)
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        target = (
            noise
            if self.noise_scheduler.config.prediction_type == "epsilon"
            else (self.noise_scheduler.get_velocity(latents, noise, t))
        )
        pred = net(noisy, t, encoder_hidden_states=self.null_embeds.expand(bsz, -1, -1)).sample
        return F.mse_loss(pred, target)

    @torch.no_grad()
    def validation_loss(self) -> float:
        if self.val_set is None:
            return math.nan
        net = self.accelerator.unwrap_model(self.net)
        net.eval()
        gen = torch.Generator().manual_seed(1234)
        losses = []
        for i in range(0, len(self.val_set), self.config.train.batch_size):
            x = self.val_set.x[i : i + self.config.train.batch_size]
            losses.append(float(self.compute_loss({"x": x}, generator=gen, model=net)))
        net.train()
        return float(np.mean(losses))

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        result = {}
        if self.accelerator.is_main_process:
            result["val_loss"] = self.validation_loss()
            logger.info("step %d: val_loss %.4f", self.global_step, result["val_loss"])
            self.history.append({"step": self.global_step, **result})
            self.accelerator.log(result, step=self.global_step)
        self.accelerator.wait_for_everyone()
        return result

    # ---------------------------------------------------------------------------------------- export
    @torch.no_grad()
    def latent_std(self, max_items: int = 512) -> float:
        net = self.accelerator.unwrap_model(self.net).eval()
        x = self.train_set.x[:max_items].to(self.accelerator.device)
        z = torch.cat([net.encode(x[i : i + 32]).latent_dist.mode() for i in range(0, len(x), 32)])
        return float(z.std())

    def export(self, path: str | os.PathLike | None = None) -> Path:
        """The trained component as a diffusers model folder (safetensors), written atomically; refuses a
        target whose replacement would destroy files (`check_export_target`)."""
        acc = self.accelerator
        path = Path(path or self.output_dir / "final")
        check_export_target(path, self.output_dir, export_inputs(self.config))  # on every rank: all raise
        acc.wait_for_everyone()
        if acc.is_main_process:
            net = acc.unwrap_model(self.net)
            if self.config.model.component != "image_unet":
                net.register_to_config(scaling_factor=1.0 / max(self.latent_std(), 1e-6))

            def write(tmp: Path) -> None:
                net.save_pretrained(tmp, safe_serialization=True)

            about = {
                "trainer": TRAINER_NAME,
                "component": self.config.model.component,
                "step": self.global_step,
            }
            write_export(path, self.output_dir, write, about, export_inputs(self.config))
        acc.wait_for_everyone()
        return path


def export_inputs(config: ComponentConfig) -> list[str | None]:
    """Folders this run reads, which an export must never replace."""
    return [config.model.image_vae]


def _sd_scheduler() -> dict[str, Any]:
    from melfusion.models.tiny import SD_LIKE_SCHEDULER

    return dict(SD_LIKE_SCHEDULER)


def run_component(args: Any) -> int:
    """`melfusion train --config X.yaml` with `trainer: component`."""
    config = load_component_config(args.config, args.overrides)
    if not args.no_export:  # before training: a refused target must not cost the run
        check_export_target(
            args.export or Path(config.train.output_dir) / "final",
            config.train.output_dir,
            export_inputs(config),
        )
    trainer = ComponentTrainer(config)
    trainer.train(resume=args.resume)
    if config.train.checkpoint_every:
        trainer.save_checkpoint()
    if trainer.val_set is not None:
        trainer.validate()
    if not args.no_export:
        path = trainer.export(args.export)
        if trainer.accelerator.is_main_process:
            print(f"exported {config.model.component} to {path}")
    losses = [h["loss"] for h in trainer.history if "loss" in h]
    if trainer.accelerator.is_main_process and losses:
        print(f"step {trainer.global_step}: loss {np.mean(losses[-50:]):.4f}")
    trainer.accelerator.end_training()
    return 0
