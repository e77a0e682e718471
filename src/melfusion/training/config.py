"""Training configuration: dataclasses, YAML files and ``section.key=value`` command-line overrides."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from melfusion.errors import MelfusionInputError
from melfusion.training.settings import OptimSchedule, TrainSchedule, load_typed_config


@dataclass
class ModelConfig:
    pretrained: str | None = None  # a MeLFusionPipeline folder; None → the tiny preset built in code
    tiny_pretrained_text_encoder: bool = True  # tiny preset: MiniLM weights (True) or a random tiny BERT
    tiny_audio_seconds: float = 5.12
    tiny_image_size: int = 32
    tiny_channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    tiny_attention_head_dim: int = 4
    tiny_layers_per_block: int = 1
    # tiny preset: trained stage-1 parts (diffusers model folders from `trainer: component` configs)
    audio_vae: str | None = None
    image_vae: str | None = None
    image_unet: str | None = None
    # Visual synapse re-initialisation (applied after building or loading the pipeline). The authors'
    # α = (2σ(a) − 1)/ρ starts at 0 (ρ = 5); a model trained from scratch in a few thousand steps never
    # learns to read image features that way; configs/embedded/synapse.yaml tries restarting α at 0.25.
    synapse_rho: float | None = None  # rebuild the synapse with this ρ (|α| < 1/ρ); None keeps it
    alpha_init: float | None = None  # set every α to this value; None keeps the built/loaded α
    # Learned per-layer linear map on the image K/V before the mix (identity at init; not in the paper,
    # see models/synapse.py). True/False rebuilds the synapse with/without it; None keeps it.
    synapse_image_projection: bool | None = None
    # Read the image features at this fixed image timestep for every music timestep (not in the paper, see
    # models/synapse.py); -1 = the music step's own timestep (paper); None keeps the loaded synapse's setting.
    synapse_image_timestep: int | None = None


@dataclass
class DataConfig:
    train_manifest: str = ""
    val_manifest: str | None = None
    format: str = "auto"
    audio_seconds: float | None = None  # None → the model's default length
    num_workers: int = 0
    random_crop: bool = True
    check: bool = False  # open every file before training (melfusion data check)
    # Balanced epochs (melfusion.data.balance): within each group of these record fields (e.g. [genre,
    # instrument]) every value of each `balance_over` field (e.g. [mode, tempo_class]) gets equal mass
    balance_within: list[str] = field(default_factory=list)
    balance_over: list[str] = field(default_factory=list)


@dataclass
class OptimConfig(OptimSchedule):
    lr_unet: float = 3e-5
    lr_alpha: float = 1e-5  # paper Table 3
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8


@dataclass
class TrainConfig(TrainSchedule):
    output_dir: str = "runs/melfusion"
    gradient_checkpointing: bool = False
    train_unet: bool = True
    train_alpha: bool = True
    text_dropout: float = 0.1  # CFG dropout: prompt replaced by ""
    image_dropout: float = 0.1  # CFG dropout: no visual features for the row
    min_snr_gamma: float | None = None  # 5.0 in both seeds' code
    ema_decay: float | None = 0.999
    inversion_steps: int = 50  # resolution of each image's DDIM inversion trajectory
    num_validation_samples: int = 2
    validation_inference_steps: int = 25
    use_cache: bool = True
    cache_dir: str | None = None  # default: <output_dir>/cache


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        t, o = self.train, self.optim
        if not self.data.train_manifest:
            raise MelfusionInputError("data.train_manifest is not set (give data.train_manifest=PATH)")
        if self.data.balance_within and not self.data.balance_over:
            raise MelfusionInputError(
                "data.balance_within is set but data.balance_over is empty: name the fields to balance, "
                "e.g. data.balance_over=[mode,tempo_class]"
            )
        if t.max_steps < 1 or t.batch_size < 1 or t.gradient_accumulation_steps < 1:
            raise MelfusionInputError(
                "train.max_steps, train.batch_size and gradient_accumulation_steps must be >= 1"
            )
        if t.mixed_precision not in ("no", "fp16", "bf16"):
            raise MelfusionInputError(
                f"train.mixed_precision must be no, fp16 or bf16, got {t.mixed_precision!r}"
            )
        if not (t.train_unet or t.train_alpha):
            raise MelfusionInputError("nothing to train: set train.train_unet or train.train_alpha to true")
        for name in ("text_dropout", "image_dropout"):
            if not 0.0 <= getattr(t, name) <= 1.0:
                raise MelfusionInputError(f"train.{name} must be in [0, 1]")
        if t.min_snr_gamma is not None and t.min_snr_gamma <= 0:
            raise MelfusionInputError("train.min_snr_gamma must be > 0 (or null to disable)")
        if t.ema_decay is not None and not 0.0 < t.ema_decay < 1.0:
            raise MelfusionInputError("train.ema_decay must be in (0, 1) (or null to disable)")
        m = self.model
        if m.synapse_rho is not None and m.synapse_rho <= 0:
            raise MelfusionInputError(f"model.synapse_rho must be > 0, got {m.synapse_rho}")
        if m.alpha_init is not None:
            rho = m.synapse_rho
            if rho is not None and not abs(m.alpha_init) < 1 / rho:
                raise MelfusionInputError(
                    f"model.alpha_init={m.alpha_init} is outside |α| < 1/ρ = {1 / rho:g}: lower it or "
                    "lower model.synapse_rho"
                )
        if o.lr_unet <= 0 or o.lr_alpha <= 0:
            raise MelfusionInputError("optim.lr_unet and optim.lr_alpha must be > 0")


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Defaults ← YAML file (``{model: {...}, data: {...}, optim: {...}, train: {...}}``) ← overrides.
    Relative data and stage-1 model paths in a config file are relative to that file."""
    return load_typed_config(
        ExperimentConfig,
        "melfusion",
        path,
        overrides,
        path_settings=(
            ("data", "train_manifest"),
            ("data", "val_manifest"),
            ("model", "pretrained"),
            ("model", "audio_vae"),
            ("model", "image_vae"),
            ("model", "image_unet"),
        ),
    )
