"""Training configuration: dataclasses, YAML files and ``section.key=value`` command-line overrides."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from melfusion.errors import MelfusionInputError


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


@dataclass
class DataConfig:
    train_manifest: str = ""
    val_manifest: str | None = None
    format: str = "auto"
    audio_seconds: float | None = None  # None → the model's default length
    num_workers: int = 0
    random_crop: bool = True
    check: bool = False  # open every file before training (melfusion data check)


@dataclass
class OptimConfig:
    lr_unet: float = 3e-5
    lr_alpha: float = 1e-5  # paper Table 3
    weight_decay: float = 1e-2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    lr_scheduler: str = "constant_with_warmup"  # any diffusers.optimization.get_scheduler name
    warmup_steps: int = 0
    max_grad_norm: float = 1.0


@dataclass
class TrainConfig:
    output_dir: str = "runs/melfusion"
    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_checkpointing: bool = False
    train_unet: bool = True
    train_alpha: bool = True
    text_dropout: float = 0.1  # CFG dropout: prompt replaced by ""
    image_dropout: float = 0.1  # CFG dropout: no visual features for the row
    min_snr_gamma: float | None = None  # 5.0 in both seeds' code
    ema_decay: float | None = 0.999
    inversion_steps: int = 50  # resolution of each image's DDIM inversion trajectory
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    validate_every: int = 500
    num_validation_samples: int = 2
    validation_inference_steps: int = 25
    log_every: int = 10
    use_cache: bool = True
    cache_dir: str | None = None  # default: <output_dir>/cache
    report_to: str = "tensorboard"  # tensorboard | none (tensorboard only when installed)


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
        if o.lr_unet <= 0 or o.lr_alpha <= 0:
            raise MelfusionInputError("optim.lr_unet and optim.lr_alpha must be > 0")


_SECTIONS = {f.name: f.type for f in dataclasses.fields(ExperimentConfig)}


def _section_class(name: str) -> type:
    return {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig}[name]


def _coerce_number(value: Any) -> Any:
    """YAML 1.1 reads "1e-5" as a string; numbers in any spelling become int/float."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def _assign(cfg: ExperimentConfig, dotted: str, value: Any, source: str) -> None:
    value = _coerce_number(value)
    parts = dotted.split(".")
    if len(parts) != 2 or parts[0] not in _SECTIONS:
        raise MelfusionInputError(
            f"{source}: unknown setting {dotted!r}; use SECTION.KEY with SECTION in {sorted(_SECTIONS)}"
        )
    section = getattr(cfg, parts[0])
    names = {f.name for f in dataclasses.fields(section)}
    if parts[1] not in names:
        raise MelfusionInputError(
            f"{source}: {parts[0]} has no setting {parts[1]!r}; known: {', '.join(sorted(names))}"
        )
    current = getattr(section, parts[1])
    if isinstance(current, str) and isinstance(value, bool):  # YAML 1.1 reads a bare no/yes as a boolean
        value = "yes" if value else "no"
    if isinstance(current, bool) and not isinstance(value, bool):
        raise MelfusionInputError(f"{source}: {dotted} must be true or false, got {value!r}")
    if isinstance(current, int | float) and not isinstance(current, bool) and value is not None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise MelfusionInputError(f"{source}: {dotted} must be a number, got {value!r}")
        if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float):
            if not value.is_integer():
                raise MelfusionInputError(f"{source}: {dotted} must be an integer, got {value!r}")
            value = int(value)
    setattr(section, parts[1], value)


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.max_steps=10"`` → ("train.max_steps", 10); values are parsed as YAML scalars."""
    if "=" not in text:
        raise MelfusionInputError(
            f"override {text!r} must look like section.key=value, e.g. train.max_steps=100"
        )
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Defaults ← YAML file (``{model: {...}, data: {...}, optim: {...}, train: {...}}``) ← overrides."""
    cfg = ExperimentConfig()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise MelfusionInputError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise MelfusionInputError(f"config file {p} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise MelfusionInputError(f"config file {p} must hold a mapping of sections")
        for section, values in data.items():
            if not isinstance(values, dict):
                raise MelfusionInputError(f"{p}: section {section!r} must be a mapping")
            for key, value in values.items():
                _assign(cfg, f"{section}.{key}", value, str(p))
    for text in overrides or []:
        key, value = parse_override(text)
        _assign(cfg, key, value, "override")
    # relative data paths in a config file are relative to that file
    if path is not None:
        base = Path(path).resolve().parent
        for section, name in (
            ("data", "train_manifest"),
            ("data", "val_manifest"),
            ("model", "audio_vae"),
            ("model", "image_vae"),
            ("model", "image_unet"),
        ):
            value = getattr(getattr(cfg, section), name)
            if value and not Path(value).is_absolute() and not Path(value).exists():
                candidate = base / value
                if candidate.exists():
                    setattr(getattr(cfg, section), name, str(candidate))
    return cfg
