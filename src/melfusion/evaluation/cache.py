"""Embedding cache keyed by (embedder identity, SHA-256 of the file's content or of the text).

Layout: `<root>/<embedder cache_id>/<key[:2]>/<key>.npz`, written atomically (temporary file in the same
folder, then os.replace), so a killed run never leaves a truncated entry and concurrent runs are safe.
Renaming or moving a file keeps its cache entry; editing it does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_CACHE_DIR = Path("~/.cache/melfusion/embeddings")
_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(("text:" + text).encode("utf-8")).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class EmbeddingCache:
    """get/put of dicts of arrays; `root=None` disables caching."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root).expanduser() if root is not None else None
        self.hits = 0
        self.misses = 0

    def _path(self, namespace: str, key: str) -> Path:
        assert self.root is not None
        return self.root / namespace / key[:2] / f"{key}.npz"

    def get(self, namespace: str, key: str) -> dict[str, np.ndarray] | None:
        if self.root is None:
            self.misses += 1
            return None
        path = self._path(namespace, key)
        try:
            with np.load(path, allow_pickle=False) as data:
                out = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError):
            self.misses += 1
            return None
        self.hits += 1
        return out

    def put(self, namespace: str, key: str, arrays: dict[str, np.ndarray]) -> None:
        if self.root is None:
            return
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        atomic_write_bytes(self._path(namespace, key), buf.getvalue())
