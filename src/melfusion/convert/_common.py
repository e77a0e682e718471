"""Helpers shared by the checkpoint converters: reading weight files safely, strict loading, hub mode."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from melfusion.errors import MelfusionInputError

_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (HF_HUB_OFFLINE, read at call time)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency of diffusers
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MelfusionInputError(f"cannot read {path}: {err}; re-download the file") from err
    if not isinstance(data, dict):
        raise MelfusionInputError(f"{path} holds a JSON {type(data).__name__}, not an object; re-download it")
    return data


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} from a .safetensors file or a .bin/.pt torch pickle (``weights_only=True``).

    A .bin whose top level is ``{"state_dict": {...}}`` (Lightning style) is unwrapped.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as err:  # safetensors raises its own SafetensorError
            raise MelfusionInputError(f"cannot read {path}: {err}; re-download the file") from err
    data: Any = None
    try:
        try:
            # mmap keeps multi-GB checkpoints out of RAM; legacy (non-zip) pickles do not support it.
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except (RuntimeError, ValueError) as err:
            if "mmap" not in str(err) and zipfile.is_zipfile(path):
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise MelfusionInputError(
            f"{path} is not a plain tensor state dict (weights_only load refused: {str(err).splitlines()[0]}); "
            "only tensor checkpoints are loaded, never arbitrary pickles"
        ) from err
    except (OSError, RuntimeError, EOFError, ValueError) as err:
        raise MelfusionInputError(f"cannot read {path}: {err}; re-download the file") from err
    if isinstance(data, Mapping) and set(data) == {"state_dict"} and isinstance(data["state_dict"], Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping):
        raise MelfusionInputError(f"{path} holds a {type(data).__name__}, not a state dict of tensors")
    bad = [k for k, v in data.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise MelfusionInputError(
            f"{path} has non-tensor entries (e.g. {bad[0]!r}); expected a flat state dict"
        )
    return dict(data)


def _examples(names: Iterable[str], n: int = 3) -> str:
    names = sorted(names)
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


@contextlib.contextmanager
def _empty_weights() -> Any:
    """Build modules with parameters on the meta device (no random init); buffers stay real."""
    try:
        from accelerate import init_empty_weights
    except ImportError:  # pragma: no cover - accelerate is a dependency
        yield
        return
    with init_empty_weights(include_buffers=False):
        yield


def build_empty(factory: Any) -> Any:
    """``factory()`` with parameters allocated on the meta device; fill them with ``assign_state_dict``."""
    with _empty_weights():
        return factory()


def assign_state_dict(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str, source: str
) -> None:
    """Strictly load ``state_dict`` into ``model`` (assigning tensors, so meta parameters become real).

    Any missing or unexpected key, or a shape mismatch, is a ``MelfusionInputError`` naming examples.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_examples(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_examples(unexpected)})")
        raise MelfusionInputError(
            f"{source}: the {what} weights do not match its config: {'; '.join(parts)}; "
            "check that the folder is an unmodified checkpoint of the expected model"
        )
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} vs config {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise MelfusionInputError(
            f"{source}: {len(wrong)} {what} weights have the wrong shape for its config "
            f"(e.g. {wrong[0]}); the config does not describe these weights"
        )
    model.load_state_dict(dict(state_dict), strict=True, assign=True)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:  # pragma: no cover - only if a module keeps state outside its state_dict
        raise RuntimeError(f"{what}: tensors left uninitialised after loading: {_examples(leftover)}")


def finish_module(module: torch.nn.Module, torch_dtype: torch.dtype | None) -> torch.nn.Module:
    """Cast floating tensors to ``torch_dtype`` (default float32) where they differ; eval mode."""
    dtype = torch_dtype or torch.float32
    tensors = [*module.parameters(), *module.buffers()]
    if any(t.is_floating_point() and t.dtype != dtype for t in tensors):
        if getattr(module, "_keep_in_fp32_modules", None):
            module.to(dtype=dtype)  # the model's own override keeps its fp32 modules
        else:  # plain cast; skips diffusers' warning about an empty keep-in-fp32 list
            torch.nn.Module.to(module, dtype=dtype)
    return module.eval()
