"""MeLFusion training (paper Algorithm 1) with accelerate: one code path from a CPU to DDP/FSDP/DeepSpeed.

Per step, for a batch of ⟨image, text, music⟩:
  z^M_0 = VAE(mel(music)) · s                                  (frozen audio VAE)
  c     = T_M(text) (text → "" with prob. text_dropout)         (frozen text encoder)
  z^I_t = DDIM-inverted image latent at the step nearest t      (frozen image LDM, Alg. 1 line 1)
  K^I, V^I = decoder self-attention of ε_ψ(z^I_t, ∅, t)         (Alg. 1 line 7; row dropped w.p. image_dropout)
  loss  = ‖target − ε_θ(z^M_t, c, t; K^I, V^I, α)‖²             (Eq. 7; target ε or v; optional min-SNR-γ)
Only θ (music UNet) and α (synapse) receive gradients.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from melfusion.audio.mel import MelConfig, mel_spectrogram
from melfusion.data.balance import balanced_cells
from melfusion.data.cache import FeatureCache, fingerprint, model_fingerprint
from melfusion.data.dataset import TripletDataset, collate_triplets
from melfusion.errors import MelfusionInputError
from melfusion.guidance.conditioner import InversionTrajectory
from melfusion.guidance.preprocess import tensor_sha256
from melfusion.models.synapse import VisualSynapse
from melfusion.pipelines.melfusion import MeLFusionPipeline
from melfusion.training.config import ExperimentConfig, ModelConfig
from melfusion.training.loop import (
    BalancedEpochSampler,
    EpochSampler,
    Trainer,
    check_export_target,
    write_export,
)
from melfusion.training.losses import diffusion_loss, diffusion_target, min_snr_weights
from melfusion.utils.files import safe_file_stem

logger = logging.getLogger(__name__)


class Denoiser(torch.nn.Module):
    """The trainable part, music UNet ε_θ + synapse α, as one module so DDP/FSDP wrap both."""

    def __init__(self, unet: torch.nn.Module, synapse: VisualSynapse):
        super().__init__()
        self.unet = unet
        self.synapse = synapse

    def forward(
        self,
        noisy: torch.Tensor,  # (B, C, T', F')
        timesteps: torch.Tensor,  # (B,)
        text_states: torch.Tensor,  # (B, S, D)
        text_mask: torch.Tensor,  # (B, S) bool
        image_kv: list[tuple[torch.Tensor, torch.Tensor]] | None,  # per layer (B_img, N_l, C_l); None = none
        image_index: torch.Tensor,  # (B,) row → image row, -1 = none
    ) -> torch.Tensor:
        self.synapse.check_installed(self.unet)
        kwargs = self.synapse.attention_kwargs(image_kv, image_index, text_mask)
        return self.unet(
            noisy,
            timesteps,
            encoder_hidden_states=text_states,
            encoder_attention_mask=text_mask,
            cross_attention_kwargs=kwargs or None,
        ).sample


def mel_config_for(pipe: MeLFusionPipeline) -> MelConfig:
    """The mel front end matching the pipeline's vocoder."""
    vocoder = pipe.vocoder
    if hasattr(vocoder, "mel_config"):
        return vocoder.mel_config
    cfg = vocoder.config  # SpeechT5HifiGan (AudioLDM-S): STFT settings are AudioLDM's defaults
    return MelConfig(
        sample_rate=int(cfg.sampling_rate),
        hop_length=int(np.prod(cfg.upsample_rates)),
        n_mels=int(cfg.model_in_dim),
    )


def build_pipeline(config: ModelConfig, seed: int) -> MeLFusionPipeline:
    """The pipeline to train: a saved folder (``model.pretrained``; a packed embedded folder too) or the tiny
    preset, then the synapse re-initialisation options applied."""
    if config.pretrained:
        from melfusion.loading import check_model_folder, load_pipeline_folder

        check_model_folder(config.pretrained)
        pipe = load_pipeline_folder(config.pretrained)
        if config.audio_vae:
            pipe = swap_audio_vae(pipe, config.audio_vae)
        return reinit_synapse(pipe, config)
    from melfusion.models.tiny import build_tiny_components

    pipe = MeLFusionPipeline(
        **build_tiny_components(
            pretrained_text_encoder=config.tiny_pretrained_text_encoder,
            channels=tuple(config.tiny_channels),
            audio_seconds=config.tiny_audio_seconds,
            image_size=config.tiny_image_size,
            seed=seed,
            attention_head_dim=config.tiny_attention_head_dim,
            layers_per_block=config.tiny_layers_per_block,
            audio_vae=config.audio_vae,
            image_vae=config.image_vae,
            image_unet=config.image_unet,
        )
    )
    return reinit_synapse(pipe, config)


def swap_audio_vae(pipe: MeLFusionPipeline, folder: str | Path) -> MeLFusionPipeline:
    """``model.pretrained`` + ``model.audio_vae``: the pretrained pipeline on another trained audio VAE (e.g.
    more mel bands), to fine-tune θ onto its latents. The vocoder becomes a Griffin-Lim on the VAE's band count
    (its ``sample_size``; the other STFT settings are kept) and the UNet's ``sample_size`` the new latent grid at
    the same clip length. The latent channel count must match the UNet's."""
    from diffusers import AutoencoderKL

    from melfusion.models.vocoder import GriffinLimVocoder

    if not (Path(folder) / "config.json").is_file():
        raise MelfusionInputError(
            f"model.audio_vae={folder}: no config.json there; pass a trained audio VAE folder (its final/)"
        )
    vae = AutoencoderKL.from_pretrained(folder, torch_dtype=pipe.unet.dtype).eval()
    unet = pipe.unet
    if vae.config.latent_channels != unet.config.in_channels or vae.config.in_channels != 1:
        raise MelfusionInputError(
            f"model.audio_vae={folder}: a {vae.config.in_channels}-channel mel VAE with "
            f"{vae.config.latent_channels} latent channels does not fit this music UNet "
            f"({unet.config.in_channels} latent channels); train the VAE with latent_channels="
            f"{unet.config.in_channels}"
        )
    if not isinstance(vae.config.sample_size, int):
        raise MelfusionInputError(
            f"model.audio_vae={folder}: its config has no integer sample_size (the mel band count)"
        )
    mel = dataclasses.replace(mel_config_for(pipe), n_mels=int(vae.config.sample_size))
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if mel.n_mels % factor:
        raise MelfusionInputError(
            f"model.audio_vae={folder}: {mel.n_mels} mel bands are not a multiple of {factor}"
        )
    size = unet.config.sample_size
    latent_frames = (size if isinstance(size, int) else size[0]) * pipe.vae_scale_factor // factor
    unet.register_to_config(sample_size=(latent_frames, mel.n_mels // factor))
    old_vocoder = pipe.vocoder
    extra = {}
    if isinstance(old_vocoder, GriffinLimVocoder):
        extra = {k: old_vocoder.config[k] for k in ("n_iter", "momentum", "nnls_iter")}
    components = {**pipe.components, "vae": vae, "vocoder": GriffinLimVocoder(**mel.to_dict(), **extra)}
    return MeLFusionPipeline(
        **components, default_image_guidance_scale=pipe.config.get("default_image_guidance_scale")
    )


def reinit_synapse(pipe: MeLFusionPipeline, config: ModelConfig) -> MeLFusionPipeline:
    """Apply ``model.synapse_rho``, ``model.synapse_image_projection`` and ``model.synapse_image_timestep`` (a
    new synapse with the same wiring and α sharing; α values are kept where they fit, an existing projection is
    kept) and ``model.alpha_init``."""
    old = pipe.synapse
    current = (
        old.config.rho,
        bool(old.config.get("image_projection", False)),
        old.config.get("image_timestep"),
    )
    rho, projection, image_t = current
    if config.synapse_rho is not None:
        rho = float(config.synapse_rho)
    if config.synapse_image_projection is not None:
        projection = bool(config.synapse_image_projection)
    if config.synapse_image_timestep is not None:
        image_t = None if config.synapse_image_timestep < 0 else int(config.synapse_image_timestep)
    if (rho, projection, image_t) != current:
        synapse = VisualSynapse.from_config(
            old.config, rho=rho, image_projection=projection, image_timestep=image_t
        )
        if config.alpha_init is None:  # keep the α values when they fit the new range
            alphas = old.alphas().detach()
            synapse.set_alphas(alphas.clamp(-0.99 / synapse.config.rho, 0.99 / synapse.config.rho))
        if old.image_null_prompt_embeds is not None:
            synapse.image_null_prompt_embeds = old.image_null_prompt_embeds.clone()
        if projection and old.image_k_proj is not None:
            synapse.image_k_proj.load_state_dict(old.image_k_proj.state_dict())
            synapse.image_v_proj.load_state_dict(old.image_v_proj.state_dict())
        pipe.register_modules(synapse=synapse)
        synapse.install(pipe.unet)
    if config.alpha_init is not None:
        try:
            pipe.synapse.set_alphas(float(config.alpha_init))
        except ValueError as err:
            raise MelfusionInputError(
                f"model.alpha_init={config.alpha_init} does not fit this synapse ({err}); lower it or set "
                "model.synapse_rho"
            ) from None
    return pipe


class MeLFusionTrainer(Trainer):
    tracker_name = "melfusion"

    def __init__(self, config: ExperimentConfig, accelerator: Accelerator | None = None):
        config.validate()
        self.config = config
        t = config.train
        self.setup_accelerator(accelerator)
        device = self.accelerator.device

        # Components: frozen parts in eval mode, no grad; trainable θ and α
        pipe = build_pipeline(config.model, t.seed)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(device)
        for frozen in (
            pipe.text_encoder,
            pipe.vae,
            pipe.vocoder,
            pipe.image_unet,
            pipe.image_vae,
            pipe.image_text_encoder,
        ):
            if frozen is None:  # no image text encoder: the model stores ∅
                continue
            frozen.requires_grad_(False)
            frozen.eval()
        pipe.unet.train()
        pipe.unet.requires_grad_(t.train_unet)
        pipe.synapse.requires_grad_(t.train_alpha)
        if t.gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
        self.noise_scheduler = pipe.scheduler
        self.mel_config = mel_config_for(pipe)
        # The image branch: the same conditioner and grid spacing the pipeline samples with (Alg. 1 line 1)
        self.conditioner = pipe.image_conditioner(device)
        self.image_grid = self.conditioner.inversion_grid(t.inversion_steps)
        if pipe.synapse.config.get("image_timestep") is not None:  # inference inverts on this same grid
            pipe.synapse.register_to_config(image_inversion_grid=self.image_grid.tolist())

        # Data
        seconds = config.data.audio_seconds or pipe.default_audio_length_in_s
        frames, _ = pipe._num_frames(seconds)
        self.num_samples = frames * self.mel_config.hop_length
        self.train_set = self._dataset(config.data.train_manifest, random_crop=config.data.random_crop)
        self.val_set = (
            self._dataset(config.data.val_manifest, random_crop=False) if config.data.val_manifest else None
        )
        self.sampler_summary: str | None = None  # set by _train_sampler for balanced epochs
        self.sampler = self._train_sampler()
        self.loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_size=t.batch_size,
            sampler=self.sampler,
            drop_last=False,
            num_workers=config.data.num_workers,
            collate_fn=collate_triplets,
            # own generator: creating an iterator draws a worker base seed, which must not consume the
            # global RNG (else a resumed run, which creates one more iterator, draws different noise)
            generator=torch.Generator().manual_seed(t.seed),
        )

        # Optimiser: separate learning rates for θ and α (paper Table 3: α at 1e-5); the optional image
        # projection of the synapse trains with θ (it is part of the synapse module, so it follows train_alpha)
        self.model = Denoiser(pipe.unet, pipe.synapse)
        groups = []
        if t.train_unet:
            groups.append({"params": list(pipe.unet.parameters()), "lr": config.optim.lr_unet})
        if t.train_alpha:
            groups.append({"params": [pipe.synapse.alpha_logits], "lr": config.optim.lr_alpha})
            if pipe.synapse.projection_parameters():
                groups.append({"params": pipe.synapse.projection_parameters(), "lr": config.optim.lr_unet})
        o = config.optim
        self.optimizer = torch.optim.AdamW(
            groups, betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_epsilon, weight_decay=o.weight_decay
        )
        self.model = self.setup_optimization(self.model, self.optimizer)
        self.ema: EMAModel | None = None
        if t.ema_decay is not None:
            self.ema = EMAModel(self._trainable_parameters(), decay=t.ema_decay)
            self.ema.to(device)  # saved by the loop as safetensors + JSON (`_checkpoint_objects`)

        self.cache = FeatureCache((t.cache_dir or self.output_dir / "cache") if t.use_cache else None)
        self._trajectories: dict[str, InversionTrajectory] = {}
        self._fp_image = model_fingerprint(pipe.image_unet) + model_fingerprint(pipe.image_vae)
        self._fp_audio = model_fingerprint(pipe.vae)
        self._fp_text = model_fingerprint(pipe.text_encoder)
        self.num_skipped = 0

    # --------------------------------------------------------------------------------------------- data
    def _train_sampler(self) -> EpochSampler:
        """Every training item once per epoch, or a mood-balanced subset per epoch (data.balance_over)."""
        d, seed = self.config.data, self.config.train.seed
        if not d.balance_over:
            return EpochSampler(len(self.train_set), seed=seed)
        cells = balanced_cells(self.train_set.records, d.balance_within, d.balance_over)
        if cells.epoch_size == 0:
            raise MelfusionInputError(
                f"data.balance_over={d.balance_over} within {d.balance_within}: no group of "
                f"{d.train_manifest} can be balanced (each needs every value of every balanced field)"
            )
        dropped = ", ".join("/".join(g) for g in cells.dropped_groups[:5])
        self.sampler_summary = (
            f"balanced epochs: {cells.epoch_size} of {len(self.train_set)} training items per epoch; "
            f"{len(cells.dropped_groups)} of {cells.num_groups} groups cannot be balanced and are left out"
            + (f" ({dropped}{' ...' if len(cells.dropped_groups) > 5 else ''})" if dropped else "")
        )
        logger.info(self.sampler_summary)
        return BalancedEpochSampler(cells.cells, cells.sizes, seed=seed)

    def _dataset(self, manifest: str, random_crop: bool) -> TripletDataset:
        records = self.read_records(manifest)
        return TripletDataset(
            records,
            sample_rate=self.mel_config.sample_rate,
            num_samples=self.num_samples,
            image_size=self.pipe.image_resolution,
            random_crop=random_crop,
            seed=self.config.train.seed,
        )

    def _trainable_parameters(self) -> list[torch.nn.Parameter]:
        model = self.accelerator.unwrap_model(self.model)
        return [p for p in model.parameters() if p.requires_grad]

    # ----------------------------------------------------------------------------------- frozen parts
    @torch.no_grad()
    def encode_audio(self, audio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, T) waveforms → (B, C, T', F') latents sampled from the VAE posterior × scaling factor (the
        posterior noise from ``generator`` when given, else the global RNG)."""
        mel = mel_spectrogram(audio.to(self.accelerator.device), self.mel_config)  # (B, frames, n_mels)
        vae = self.pipe.vae
        dist = vae.encode(mel.unsqueeze(1).to(vae.dtype)).latent_dist
        return dist.sample(generator) * vae.config.scaling_factor

    def _audio_key(self, audio: torch.Tensor) -> str:
        return fingerprint([tensor_sha256(audio), self._fp_audio, self.mel_config.to_dict()])

    @torch.no_grad()
    def encode_audio_cached(
        self, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if not self.cache.enabled:
            return self.encode_audio(batch["audio"], generator)
        means, logvars = [], []
        for i in range(len(batch["text"])):
            key = self._audio_key(batch["audio"][i])

            def compute(i=i) -> dict[str, torch.Tensor]:
                mel = mel_spectrogram(batch["audio"][i : i + 1].to(self.accelerator.device), self.mel_config)
                dist = self.pipe.vae.encode(mel.unsqueeze(1).to(self.pipe.vae.dtype)).latent_dist
                return {"mean": dist.mean[0].cpu(), "logvar": dist.logvar[0].cpu()}

            item = self.cache.get_or_compute("audio_latents", key, compute)
            means.append(item["mean"])
            logvars.append(item["logvar"])
        params = torch.cat([torch.stack(means), torch.stack(logvars)], dim=1).to(self.accelerator.device)
        dist = DiagonalGaussianDistribution(params)  # (B, 2C, T', F') → posterior over (B, C, T', F')
        return dist.sample(generator) * self.pipe.vae.config.scaling_factor

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts → (B, S, D) states and (B, S) mask; with the cache, per prompt (unpadded) then padded."""
        device = self.accelerator.device
        if not self.cache.enabled:
            return self.pipe.encode_text(texts, device)
        items = []
        for text in texts:
            key = fingerprint(["text", text, self._fp_text])
            got = self.cache.get_text_states(key)
            if got is None:
                states, mask = self.pipe.encode_text([text], device)
                got = (states[0].cpu(), mask[0].cpu())
                self.cache.put_text_states(key, got[0], got[1].to(torch.uint8))
            items.append((got[0], got[1].bool()))
        seq = max(s.shape[0] for s, _ in items)
        states = torch.zeros(len(items), seq, items[0][0].shape[-1], dtype=items[0][0].dtype)
        mask = torch.zeros(len(items), seq, dtype=torch.bool)
        for i, (st, m) in enumerate(items):
            states[i, : st.shape[0]] = st
            mask[i, : m.shape[0]] = m
        return states.to(device, self.pipe.unet.dtype), mask.to(device)

    @torch.no_grad()
    def trajectory(self, pixels: torch.Tensor) -> InversionTrajectory:
        """(3, H, W) image → its DDIM inversion trajectory (memory + disk cache)."""
        key = self._trajectory_key(pixels)
        if key in self._trajectories:  # memoised only with caching on; off = Alg. 1 line 1 at every step
            return self._trajectories[key]

        def compute() -> dict[str, torch.Tensor]:
            (traj,) = self.conditioner.invert(self.conditioner.encode(pixels[None]), self.image_grid)
            return {"timesteps": traj.timesteps, "latents": traj.latents}

        item = (
            self.cache.get_or_compute("image_trajectory", key, compute) if self.cache.enabled else compute()
        )
        traj = InversionTrajectory(item["timesteps"].long(), item["latents"])
        if self.cache.enabled:
            self._trajectories[key] = traj
        return traj

    def _trajectory_key(self, pixels: torch.Tensor) -> str:
        sched = {k: v for k, v in dict(self.pipe.image_scheduler.config).items() if not k.startswith("_")}
        return fingerprint([tensor_sha256(pixels), self._fp_image, self.image_grid.tolist(), sched])

    @torch.no_grad()
    def precompute(self, batch_size: int = 64) -> int:
        """Fill the feature cache for the training and validation sets in batches before training: each image's
        DDIM trajectory (one batched inversion instead of one per image, Alg. 1 line 1) and, without random
        crops, each clip's audio latent posterior. Returns the number of items with anything computed."""
        if not self.cache.enabled:
            return 0
        sets = [self.train_set] + ([self.val_set] if self.val_set is not None else [])
        loader = torch.utils.data.DataLoader(
            torch.utils.data.ConcatDataset(sets),
            batch_size=batch_size,
            shuffle=False,
            collate_fn=collate_triplets,
        )
        device, vae, done = self.accelerator.device, self.pipe.vae, 0
        bar = tqdm(loader, desc="precompute features", disable=not self.accelerator.is_local_main_process)
        for batch in bar:
            if len(batch["text"]) == 0:
                continue
            keys = [self._trajectory_key(px) for px in batch["pixel_values"]]
            todo = [i for i, k in enumerate(keys) if self.cache.get("image_trajectory", k) is None]
            computed = set(todo)
            if todo:
                pixels = batch["pixel_values"][todo]
                trajs = self.conditioner.invert(self.conditioner.encode(pixels), self.image_grid)
                for i, traj in zip(todo, trajs):
                    self.cache.put(
                        "image_trajectory", keys[i], {"timesteps": traj.timesteps, "latents": traj.latents}
                    )
            if not self.config.data.random_crop:
                akeys = [self._audio_key(a) for a in batch["audio"]]
                todo = [i for i, k in enumerate(akeys) if self.cache.get("audio_latents", k) is None]
                if todo:
                    mel = mel_spectrogram(batch["audio"][todo].to(device), self.mel_config)
                    dist = vae.encode(mel.unsqueeze(1).to(vae.dtype)).latent_dist
                    for j, i in enumerate(todo):
                        self.cache.put(
                            "audio_latents",
                            akeys[i],
                            {"mean": dist.mean[j].cpu(), "logvar": dist.logvar[j].cpu()},
                        )
                    computed.update(todo)
            done += len(computed)
        return done

    @torch.no_grad()
    def image_features(
        self, pixel_values: torch.Tensor, timesteps: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """K^I, V^I of ε_ψ(z^I_t, ∅, t) for each row (Alg. 1 line 7), per layer (B, N_l, C_l)."""
        timesteps = self.pipe.synapse.image_timestep_for(timesteps)  # the music t, or the fixed option's
        return self.conditioner.features_on([self.trajectory(px) for px in pixel_values], timesteps)

    # ------------------------------------------------------------------------------------------ step
    def compute_loss(
        self,
        batch: dict[str, Any],
        generator: torch.Generator | None = None,
        dropout: bool = True,
        model: torch.nn.Module | None = None,
        use_image: bool = True,
    ) -> torch.Tensor:
        """Eq. 7 on one batch. With ``generator`` the noise, timesteps and dropout are deterministic (validation);
        ``use_image=False`` drops every row's visual features (the text-only half of the image-gain probe)."""
        device = self.accelerator.device
        t_cfg = self.config.train
        bsz = len(batch["text"])
        latents = self.encode_audio_cached(batch, generator)
        if generator is None:
            timesteps = torch.randint(
                0, self.noise_scheduler.config.num_train_timesteps, (bsz,), device=device
            )
            noise = torch.randn_like(latents)
            drop_text = torch.rand(bsz) < (t_cfg.text_dropout if dropout else 0.0)
            drop_image = torch.rand(bsz) < (t_cfg.image_dropout if dropout else 0.0)
        else:  # deterministic (validation loss)
            timesteps = torch.randint(
                0, self.noise_scheduler.config.num_train_timesteps, (bsz,), generator=generator
            ).to(device)
            noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
            drop_text = drop_image = torch.zeros(bsz, dtype=torch.bool)
        texts = ["" if d else txt for txt, d in zip(batch["text"], drop_text.tolist())]
        states, mask = self.encode_text(texts)
        kv = self.image_features(batch["pixel_values"].to(device), timesteps) if use_image else None
        image_index = torch.arange(bsz, device=device)
        image_index[drop_image.to(device)] = -1
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        target = diffusion_target(self.noise_scheduler, latents, noise, timesteps)
        pred = (model or self.model)(noisy, timesteps, states, mask, kv, image_index)
        weights = None
        if t_cfg.min_snr_gamma is not None:
            weights = min_snr_weights(self.noise_scheduler, timesteps, t_cfg.min_snr_gamma)
        return diffusion_loss(pred, target, weights)

    # Training loop, checkpoints and resume: Trainer (training/loop.py). Hooks used here:
    def _loop_model(self) -> torch.nn.Module:
        return self.model

    def _after_sync_step(self, params: list[torch.nn.Parameter]) -> None:
        if self.ema is not None:
            self.ema.step(params)

    def _checkpoint_objects(self) -> dict[str, Any]:
        return {"ema": self.ema} if self.ema is not None else {}

    def _after_load_checkpoint(self) -> None:
        if self.ema is not None:
            params, shadow = self._trainable_parameters(), self.ema.shadow_params
            if len(shadow) != len(params) or any(s.shape != p.shape for s, p in zip(shadow, params)):
                raise ValueError(
                    f"its EMA holds {len(shadow)} tensors that do not fit the {len(params)} trained"
                )
            self.ema.to(self.accelerator.device)  # the shadow weights are read onto the CPU

    # ------------------------------------------------------------------------------------ validation
    @torch.no_grad()
    def validation_loss(self, use_image: bool = True) -> float:
        """Mean held-out loss under fixed noise/timesteps; ``use_image=False`` withholds the image from every
        row, so ``validation_loss(False) - validation_loss()`` measures how much the model reads the image."""
        assert self.val_set is not None
        gen = torch.Generator().manual_seed(1234)
        losses = []
        model = self.accelerator.unwrap_model(self.model)  # main process only: no DDP collectives
        model.eval()
        loader = torch.utils.data.DataLoader(
            self.val_set, batch_size=self.config.train.batch_size, collate_fn=collate_triplets
        )
        for batch in loader:
            if len(batch["text"]):
                loss = self.compute_loss(
                    batch, generator=gen, dropout=False, model=model, use_image=use_image
                )
                losses.append(float(loss))
        model.train()
        return float(np.mean(losses)) if losses else math.nan

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Held-out loss and a few generated clips (+ spectrogram PNGs) under <output>/validation/step-N."""
        acc = self.accelerator
        result: dict[str, float] = {}
        if not acc.is_main_process or self.val_set is None:
            acc.wait_for_everyone()
            return result
        result["val_loss"] = self.validation_loss()
        result["val_loss_no_image"] = self.validation_loss(use_image=False)
        result["val_image_gain"] = result["val_loss_no_image"] - result["val_loss"]  # > 0: the image is used
        result.update({f"alpha_{i}": float(a) for i, a in enumerate(self.pipe.synapse.alphas())})
        out = self.output_dir / "validation" / f"step-{self.global_step:07d}"
        from melfusion.utils.files import atomic_write_json

        atomic_write_json(out / "metrics.json", {"step": self.global_step, **result})
        tqdm.write(
            f"validation at step {self.global_step}: " + ", ".join(f"{k} {v:.5g}" for k, v in result.items())
        )
        self.model.eval()
        with self._ema_weights():
            from melfusion.audio.io import save_audio

            for i in range(min(self.config.train.num_validation_samples, len(self.val_set))):
                rec = self.val_set.records[i]
                res = self.pipe(
                    rec.images[0],
                    rec.text,
                    num_inference_steps=self.config.train.validation_inference_steps,
                    generator=torch.Generator().manual_seed(i),
                    progress=False,
                    audio_length_in_s=self.num_samples / self.mel_config.sample_rate,
                )
                save_audio(
                    out / f"{i:02d}_{safe_file_stem(rec.id)}.wav",
                    res.audios[0],
                    res.sample_rate,
                    metadata={**res.parameters, "step": self.global_step},
                )
                _save_spectrogram_png(
                    res.audios[0], self.mel_config, out / f"{i:02d}_{safe_file_stem(rec.id)}.png"
                )
                for tracker in acc.trackers:
                    if tracker.name == "tensorboard":
                        tracker.writer.add_audio(f"val/{i}", res.audios[0], self.global_step, res.sample_rate)
        self.model.train()
        acc.log(result, step=self.global_step)
        acc.wait_for_everyone()
        return result

    def _ema_weights(self):
        ema, params = self.ema, self._trainable_parameters()

        class _Swap:
            def __enter__(self_inner):
                if ema is not None:
                    ema.store(params)
                    ema.copy_to(params)

            def __exit__(self_inner, *exc):
                if ema is not None:
                    ema.restore(params)

        return _Swap()

    # ---------------------------------------------------------------------------------------- export
    def export(self, path: str | os.PathLike | None = None, use_ema: bool = True) -> Path:
        """Write the trained pipeline folder (safetensors), atomically; ``MeLFusionPipeline.from_pretrained``
        loads it. Refuses a target whose replacement would destroy files (`check_export_target`)."""
        acc = self.accelerator
        path = Path(path or self.output_dir / "final")
        check_export_target(path, self.output_dir, export_inputs(self.config))  # on every rank: all raise
        acc.wait_for_everyone()
        if acc.is_main_process:
            self.pipe.store_image_null_prompt()  # inference then needs no image text encoder

            def write(tmp: Path) -> None:
                # ∅ is stored, so the image text encoder is not written (for the embedded model it is the music
                # text encoder again: a second copy of MiniLM)
                keep = {
                    "image_text_encoder": self.pipe.image_text_encoder,
                    "image_tokenizer": self.pipe.image_tokenizer,
                }
                self.pipe.register_modules(image_text_encoder=None, image_tokenizer=None)
                try:
                    with self._ema_weights() if use_ema else nullcontext():
                        self.pipe.save_pretrained(tmp, safe_serialization=True)
                finally:
                    self.pipe.register_modules(**keep)

            about = {
                "trainer": "melfusion",
                "step": self.global_step,
                "ema": use_ema and self.ema is not None,
            }
            write_export(path, self.output_dir, write, about, export_inputs(self.config))
        acc.wait_for_everyone()
        return path


def export_inputs(config: ExperimentConfig) -> list[str | os.PathLike | None]:
    """Folders this run reads, which an export must never replace."""
    m, t = config.model, config.train
    cache = (t.cache_dir or Path(t.output_dir) / "cache") if t.use_cache else None
    return [m.pretrained, m.audio_vae, m.image_vae, m.image_unet, cache]


def _save_spectrogram_png(audio: np.ndarray, mel: MelConfig, path: Path) -> None:
    from PIL import Image

    from melfusion.utils.files import atomic_path

    spec = mel_spectrogram(torch.as_tensor(audio)[None], mel)[0].T.flip(0).numpy()  # (n_mels, frames)
    lo, hi = np.percentile(spec, 2), np.percentile(spec, 99.5)
    img = (np.clip((spec - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 4)).save(tmp, format="PNG")
