"""On-disk cache of features from frozen models (audio VAE latents, text encoder states, an image's
inverted latent trajectory / visual guidance), as safetensors files.

Keys: `cache_key(content_hash, config)` = sha256 of the input's content hash (file bytes or text) and
the canonical JSON of everything that shapes the output (model fingerprint, sample rate, crop, dtype,
...). Editing a file or changing the config gives a new key; moving a file keeps it.

Layout: `<root>/<kind>/<key[:2]>/<key>.safetensors`. Writes go to a unique temporary file in the same
folder and are moved into place with `os.replace`, so readers never see a partial file and processes
(DDP ranks, DataLoader workers, a second run) may write the same key at once: the last complete file
wins and all are equal. A damaged file (truncated, not safetensors, another key's content) reads as a
miss and the next `put` replaces it. What is on disk is reused by the next run: resumable by
construction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from melfusion.utils.files import atomic_path, sha256_file

logger = logging.getLogger(__name__)

AUDIO_LATENTS = "audio_latents"
TEXT_STATES = "text_states"
FORMAT_VERSION = "1"
_META_KIND = "melfusion.cache.kind"
_META_KEY = "melfusion.cache.key"
_META_VERSION = "melfusion.cache.version"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# -------------------------------------------------------------------------------------------- keys


def _canonical(obj: Any) -> Any:
    """JSON-ready, deterministic form of configs: dataclasses, mappings, Paths, tensors, arrays, dtypes."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, torch.Tensor | np.ndarray):
        arr = (
            obj.detach().cpu().contiguous().numpy()
            if isinstance(obj, torch.Tensor)
            else np.ascontiguousarray(obj)
        )
        digest = hashlib.sha256(arr.tobytes()).hexdigest()
        return {"__array__": digest, "dtype": str(arr.dtype), "shape": list(arr.shape)}
    if isinstance(obj, np.generic):
        return _canonical(obj.item())
    if isinstance(obj, torch.dtype | torch.device):
        return str(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__type__": type(obj).__name__, **_canonical(dataclasses.asdict(obj))}
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted((_canonical(v) for v in obj), key=lambda v: json.dumps(v, sort_keys=True))
    if hasattr(obj, "to_dict") and callable(obj.to_dict):  # diffusers / transformers configs
        return _canonical(obj.to_dict())
    raise TypeError(
        f"cannot fingerprint a {type(obj).__name__}; pass plain data (dict, list, numbers, strings, tensors)"
    )


def fingerprint(obj: Any) -> str:
    """sha256 hex of the canonical JSON of `obj` (key order and tuple/list spelling do not matter)."""
    text = json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def text_sha256(text: str) -> str:
    """Content hash of a text prompt (namespaced so it never equals a file's hash)."""
    return hashlib.sha256(("text:" + text).encode("utf-8")).hexdigest()


def cache_key(content_hash: str, config: Any) -> str:
    """sha256(content hash + canonical JSON of config): the key of one cached feature."""
    text = content_hash + "\n" + json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_fingerprint(model: torch.nn.Module, *, include_weights: bool = True) -> str:
    """Fingerprint of a frozen model: its config (when it has one) and, by default, its weights."""
    config = getattr(model, "config", None)
    parts: dict[str, Any] = {"class": type(model).__name__}
    if config is not None:
        with contextlib.suppress(TypeError):
            cfg = dict(config) if isinstance(config, Mapping) else config
            if isinstance(cfg, dict):  # drop bookkeeping such as _name_or_path: where it was loaded from
                cfg = {k: v for k, v in cfg.items() if not str(k).startswith("_")}
            parts["config"] = _canonical(cfg)
    if include_weights:
        h = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(str(tensor.dtype).encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        parts["weights"] = h.hexdigest()
    return fingerprint(parts)


# ------------------------------------------------------------------------------------------- cache


class FeatureCache:
    """get / put of dicts of tensors under (kind, key). `root=None` disables it (always a miss)."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root).expanduser() if root is not None else None
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.corrupt = 0
        self._file_hashes: dict[tuple[str, int, int], str] = {}

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def path(self, kind: str, key: str) -> Path:
        if self.root is None:
            raise RuntimeError("this FeatureCache is disabled (root=None)")
        for name, value in (("kind", kind), ("key", key)):
            if not isinstance(value, str) or not _NAME.match(value) or len(value) < 3 and name == "key":
                raise ValueError(f"cache {name} must match [A-Za-z0-9_.-]+ (key: >= 3 chars), got {value!r}")
        return self.root / kind / key[:2] / f"{key}.safetensors"

    # ---- keys

    def file_hash(self, path: str | os.PathLike[str]) -> str:
        """sha256 of a file's bytes, memoised per (path, size, mtime) for this process."""
        p = os.path.realpath(os.fspath(path))
        st = os.stat(p)
        memo = (p, st.st_size, st.st_mtime_ns)
        if memo not in self._file_hashes:
            self._file_hashes[memo] = sha256_file(p)
        return self._file_hashes[memo]

    def file_key(self, path: str | os.PathLike[str], config: Any) -> str:
        """Key of a feature computed from a file's content under `config`."""
        return cache_key(self.file_hash(path), config)

    @staticmethod
    def text_key(text: str, config: Any) -> str:
        """Key of a feature computed from a text under `config`."""
        return cache_key(text_sha256(text), config)

    # ---- storage

    def get_with_metadata(self, kind: str, key: str) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
        """(tensors, metadata) or None on a miss (absent, or damaged: counted in `corrupt`)."""
        if self.root is None:
            self.misses += 1
            return None
        path = self.path(kind, key)
        try:
            with safe_open(path, framework="pt") as f:  # validates the header against the file size
                metadata = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        except FileNotFoundError:
            self.misses += 1
            return None
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            self._damaged(path, err)
            return None
        if metadata.get(_META_KIND, kind) != kind or metadata.get(_META_KEY, key) != key:
            self._damaged(path, "holds another entry")
            return None
        self.hits += 1
        user = {k: v for k, v in metadata.items() if not k.startswith("melfusion.cache.")}
        return tensors, user

    def _damaged(self, path: Path, why: Any) -> None:
        self.corrupt += 1
        self.misses += 1
        logger.warning("cache entry %s is damaged (%s); it will be recomputed", path, why)

    def get(self, kind: str, key: str) -> dict[str, torch.Tensor] | None:
        got = self.get_with_metadata(kind, key)
        return None if got is None else got[0]

    def has(self, kind: str, key: str) -> bool:
        """Whether a file exists for (kind, key) (not validated; `get` validates)."""
        return self.root is not None and self.path(kind, key).is_file()

    def put(
        self,
        kind: str,
        key: str,
        tensors: Mapping[str, torch.Tensor],
        metadata: Mapping[str, Any] | None = None,
    ) -> Path | None:
        """Store tensors (moved to CPU, contiguous) atomically. Metadata values that are not strings are
        stored as JSON. Returns the file path (None when disabled)."""
        if self.root is None:
            return None
        path = self.path(kind, key)
        if not tensors:
            raise ValueError("nothing to cache: tensors is empty")
        prepared: dict[str, torch.Tensor] = {}
        seen_ptrs: set[int] = set()
        for name, t in tensors.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"cache values must be tensors; {name!r} is a {type(t).__name__}")
            t = t.detach().to("cpu").contiguous()
            if t.numel() and t.data_ptr() in seen_ptrs:  # safetensors refuses shared storage
                t = t.clone()
            if t.numel():
                seen_ptrs.add(t.data_ptr())
            prepared[str(name)] = t
        meta = {
            str(k): v if isinstance(v, str) else json.dumps(v, default=os.fspath)
            for k, v in (metadata or {}).items()
        }
        meta.update({_META_KIND: kind, _META_KEY: key, _META_VERSION: FORMAT_VERSION})
        with atomic_path(path) as tmp:
            save_file(prepared, tmp, metadata=meta)
        self.writes += 1
        return path

    def get_or_compute(
        self,
        kind: str,
        key: str,
        fn: Callable[[], Mapping[str, torch.Tensor]],
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The cached tensors, or `fn()` computed, stored and returned (as computed, on its device)."""
        cached = self.get(kind, key)
        if cached is not None:
            return cached
        computed = dict(fn())
        self.put(kind, key, computed, metadata)
        return computed

    # ---- the three kinds the trainer caches

    def get_audio_latents(self, key: str) -> torch.Tensor | None:
        got = self.get(AUDIO_LATENTS, key)
        return None if got is None else got["latents"]

    def put_audio_latents(
        self, key: str, latents: torch.Tensor, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Audio VAE latents of one clip, e.g. (C, T', F') or the posterior (mean, logvar) stacked."""
        self.put(AUDIO_LATENTS, key, {"latents": latents}, metadata)

    def get_text_states(self, key: str) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        got = self.get(TEXT_STATES, key)
        return None if got is None else (got["hidden_states"], got.get("attention_mask"))

    def put_text_states(
        self,
        key: str,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Text encoder states (S, D) (and its (S,) mask) of one prompt."""
        tensors = {"hidden_states": hidden_states}
        if attention_mask is not None:
            tensors["attention_mask"] = attention_mask
        self.put(TEXT_STATES, key, tensors, metadata)

    # ---- housekeeping

    @property
    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "writes": self.writes, "corrupt": self.corrupt}

    def reset_stats(self) -> None:
        self.hits = self.misses = self.writes = self.corrupt = 0

    def remove_stale_temporaries(self, older_than_s: float = 3600.0) -> int:
        """Delete temporary files left by killed writers (older than `older_than_s`); returns the count."""
        if self.root is None or not self.root.is_dir():
            return 0
        removed, now = 0, time.time()
        for tmp in self.root.glob("*/*/.*.tmp.safetensors"):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > older_than_s:
                    tmp.unlink()
                    removed += 1
        return removed
