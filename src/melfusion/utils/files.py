"""Crash-safe file writes: write to a temporary sibling, then `os.replace` it onto the target."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _fsync_file(path: Path) -> None:
    # Best effort: flush the temp file's data to disk before it replaces the target.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path` (same suffix); on success move it onto `path`.

    On an exception the temporary file is removed and an existing `path` is left untouched.
    The temporary name keeps the suffix so writers that infer the format (soundfile) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically; return the path."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding=encoding) as f:
        f.write(text)
    return path


def _json_default(obj: Any) -> Any:
    # Common non-JSON types in metadata: paths, numpy scalars/arrays, tensors.
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def dumps_json(obj: Any) -> str:
    """The JSON text `atomic_write_json` writes (indent 2, sorted keys, trailing newline)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write `obj` as JSON (indent 2, sorted keys) atomically; return the path.

    Serialisation happens before anything touches the disk, so a bad object leaves no file behind.
    """
    return atomic_write_text(path, dumps_json(obj))


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
