"""Typed ``section.key`` settings shared by the trainers that carry a ``trainer:`` key in their YAML
(Art2Mus, the embedded-model components): YAML reading, typed assignment, overrides, relative paths."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from melfusion.errors import MelfusionInputError

C = TypeVar("C")


@dataclass
class TrainSchedule:
    """The ``train`` settings every trainer has (the loop, checkpoints, logging); each trainer's ``train``
    section extends it and may change its defaults."""

    output_dir: str = "runs/train"
    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | fp16 | bf16
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    validate_every: int = 500
    log_every: int = 10
    report_to: str = "tensorboard"  # tensorboard | none (tensorboard only when installed)


@dataclass
class OptimSchedule:
    """The ``optim`` settings every trainer has: AdamW's weight decay, the learning-rate schedule (any
    ``diffusers.optimization.get_scheduler`` name) and gradient clipping."""

    weight_decay: float = 1e-2
    lr_scheduler: str = "constant_with_warmup"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0


def read_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise MelfusionInputError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise MelfusionInputError(f"config file {p} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise MelfusionInputError(f"config file {p} must hold a mapping of sections")
    return data


def config_trainer(path: str | os.PathLike[str] | None) -> str | None:
    """The ``trainer:`` value of a YAML config file (None for none, a missing or an unreadable file)."""
    if path is None:
        return None
    try:
        value = read_yaml_mapping(path).get("trainer")
    except MelfusionInputError:
        return None
    return str(value) if value is not None else None


def _sections(cfg: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(cfg) if f.name != "trainer"]


def _coerce(value: Any) -> Any:
    if isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def assign_setting(cfg: Any, dotted: str, value: Any, source: str) -> None:
    """``cfg.<section>.<key> = value`` checked against the dataclass field's annotation."""
    sections = _sections(cfg)
    parts = dotted.split(".")
    if len(parts) != 2 or parts[0] not in sections:
        raise MelfusionInputError(
            f"{source}: unknown setting {dotted!r}; use SECTION.KEY with SECTION in {sorted(sections)}"
        )
    section = getattr(cfg, parts[0])
    fields = {f.name: f for f in dataclasses.fields(section)}
    if parts[1] not in fields:
        raise MelfusionInputError(
            f"{source}: {parts[0]} has no setting {parts[1]!r}; known: {', '.join(sorted(fields))}"
        )
    annotation = str(fields[parts[1]].type)  # "int", "float | None", "str", "bool", "list[int]", ...
    base = annotation.split("|")[0].strip()
    if value is None:
        if "None" not in annotation:
            raise MelfusionInputError(f"{source}: {dotted} cannot be null")
    elif base == "bool":
        if not isinstance(value, bool):
            raise MelfusionInputError(f"{source}: {dotted} must be true or false, got {value!r}")
    elif base in ("int", "float"):
        value = _coerce(value)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise MelfusionInputError(f"{source}: {dotted} must be a number, got {value!r}")
        if base == "int":
            if isinstance(value, float) and not value.is_integer():
                raise MelfusionInputError(f"{source}: {dotted} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
    elif base == "str":
        if isinstance(value, bool):  # YAML 1.1 reads a bare no/yes as a boolean
            value = "yes" if value else "no"
        if isinstance(value, dict | list):
            raise MelfusionInputError(f"{source}: {dotted} must be a string, got {value!r}")
        value = str(value)
    elif base.startswith("list"):
        if not isinstance(value, list | tuple):
            raise MelfusionInputError(f"{source}: {dotted} must be a list, e.g. [32, 64], got {value!r}")
        value = [_coerce(v) for v in value]
    setattr(section, parts[1], value)


def config_from_dict(cls: type[C], data: dict[str, Any], source: str, trainer_name: str) -> C:
    cfg = cls()
    sections = _sections(cfg)
    for key, value in (data or {}).items():
        if key == "trainer":
            if value != trainer_name:
                raise MelfusionInputError(f"{source}: trainer must be {trainer_name!r}, got {value!r}")
            continue
        if key not in sections:
            raise MelfusionInputError(
                f"{source}: unknown section {key!r}; use trainer, {', '.join(sections)}"
            )
        if not isinstance(value, dict):
            raise MelfusionInputError(f"{source}: section {key!r} must be a mapping")
        for name, item in value.items():
            assign_setting(cfg, f"{key}.{name}", item, source)
    return cfg


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


def load_typed_config(
    cls: type[C],
    trainer_name: str,
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    path_settings: tuple[tuple[str, str], ...] = (("data", "train_manifest"), ("data", "val_manifest")),
) -> C:
    """Defaults ← YAML file ← ``section.key=value`` overrides. Relative paths named in ``path_settings``
    resolve against the config file's folder when they do not exist as given."""
    cfg = (
        config_from_dict(cls, read_yaml_mapping(path), str(path), trainer_name) if path is not None else cls()
    )
    for text in overrides or []:
        key, value = parse_override(text)
        if key == "trainer":
            continue
        assign_setting(cfg, key, value, "override")
    if path is not None:
        base = Path(path).resolve().parent
        for section, name in path_settings:
            value = getattr(getattr(cfg, section), name)
            if (
                value
                and not Path(value).is_absolute()
                and not Path(value).exists()
                and (base / value).exists()
            ):
                setattr(getattr(cfg, section), name, str(base / value))
    return cfg
