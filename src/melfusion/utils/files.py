"""Crash-safe file writes: write to a temporary sibling, then `os.replace` it onto the target."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: pair commits are not locked (see below)
    fcntl = None  # type: ignore[assignment]


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


# ---------------------------------------------------------------------------------------------------------
# Safe names for outputs derived from user data (manifest ids, reference stems)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_file_stem(name: str, max_bytes: int = 200) -> str:
    """`name` as one plain file name: its path components joined with "_" (empty, "." and ".." ones
    dropped), control characters replaced, no leading dot (never hidden, never a temporary's name), at most
    `max_bytes` of UTF-8. "" when nothing usable is left (e.g. ".." or "/")."""
    parts = [p.strip() for p in re.split(r"[/\\]+", _CONTROL.sub("_", name))]
    stem = "_".join(p for p in parts if p not in ("", ".", "..")).lstrip(".").strip()
    encoded = stem.encode("utf-8")
    if len(encoded) > max_bytes:
        stem = encoded[:max_bytes].decode("utf-8", errors="ignore").rstrip()
    return stem


# ---------------------------------------------------------------------------------------------------------
# Two files committed as a pair (audio + sidecar)
#
# Both temporaries (`.<name>.<token>.mfpair1|2<suffix>`, one token per commit) are created, written and
# fsynced while their writer holds their flock. Then, under an exclusive flock of the folder, `first` is
# renamed into place, then `second`. Cut off between the two renames, the folder holds the new `first`, the
# old `second` and `second`'s temporary (but not `first`'s): `recover_pairs` rolls that forward. Any other
# leftover (`first`'s temporary still there) is a commit that never happened: both temporaries are deleted.
# Temporaries whose writer still holds their lock are left alone. Without fcntl (Windows) nothing is locked
# and only temporaries older than an hour count as orphans.

_PAIR_TMP = re.compile(r"^\.(?P<target>.+)\.(?P<token>[0-9a-f]{12})\.mfpair(?P<role>[12])")
_UNLOCKED_ORPHAN_AGE_S = 3600.0


def pair_temporary(target: Path, token: str, role: int) -> Path:
    """The temporary of `target` in pair commit `token` (role 1: renamed first, 2: second)."""
    return target.with_name(f".{target.name}.{token}.mfpair{role}{target.suffix}")


def longest_temporary_name(target: str | os.PathLike[str]) -> str:
    """The name of `target`'s pair temporary (to check file-name length limits up front)."""
    return pair_temporary(Path(target), "0" * 12, 1).name


@contextlib.contextmanager
def _flock(fd: int, *, blocking: bool = True) -> Iterator[bool]:
    """Exclusive flock on `fd` for the block; yields False when non-blocking and held elsewhere. A lock the
    filesystem cannot take (some network mounts) is skipped: the protocol is then best effort."""
    if fcntl is None:
        yield True
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        yield False
        return
    except OSError:
        yield True
        return
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with _flock(fd):
            yield
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _is_live(path: Path) -> bool:
    """Whether a pair temporary's writer is still running (it holds the file's flock)."""
    if fcntl is None:
        try:
            return time.time() - path.stat().st_mtime < _UNLOCKED_ORPHAN_AGE_S
        except OSError:
            return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        with _flock(fd, blocking=False) as got:
            return not got
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _recover_locked(
    folder: Path, verify: Callable[[Path, Path], bool] | None, targets: set[str] | None
) -> int:
    groups: dict[str, dict[int, Path]] = {}
    try:
        names = [e.name for e in os.scandir(folder)]
    except OSError:
        return 0
    for name in names:
        m = _PAIR_TMP.match(name)
        if m is not None and (targets is None or m["target"] in targets):
            groups.setdefault(m["token"], {})[int(m["role"])] = folder / name
    changed = 0
    for temps in groups.values():
        if any(_is_live(p) for p in temps.values()):
            continue
        second_tmp = temps.get(2)
        if 1 not in temps and second_tmp is not None:  # cut off between the two renames: roll forward
            match = _PAIR_TMP.match(second_tmp.name)
            target = folder / match["target"] if match else None
            if target is not None and (verify is None or verify(second_tmp, target)):
                os.replace(second_tmp, target)
                changed += 1
                continue
        for role in (2, 1):  # a commit that never happened (or fails `verify`): drop it, `first`'s last
            if role in temps:
                _unlink(temps[role])
                changed += 1
    if changed:
        _fsync_folder(folder)
    return changed


def recover_pairs(
    folder: str | os.PathLike[str],
    verify: Callable[[Path, Path], bool] | None = None,
    targets: set[str] | None = None,
) -> int:
    """Finish or undo the pair commits cut off in `folder` (see the protocol above); returns how many
    temporaries were renamed or removed. `verify(second_tmp, second)` may veto a roll-forward (the
    temporary is then deleted); `targets` limits the work to pairs of those file names."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    with _folder_lock(folder):
        return _recover_locked(folder, verify, targets)


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


@contextlib.contextmanager
def atomic_pair(
    first: str | os.PathLike[str],
    second: str | os.PathLike[str],
    verify: Callable[[Path, Path], bool] | None = None,
) -> Iterator[tuple[Path, Callable[[bytes], None]]]:
    """Commit two files of one folder together (see the protocol above).

    Yields `(first_tmp, write_second)`: write `first`'s content to the path `first_tmp`, then call
    `write_second(data)` once. On leaving the block both are renamed into place; on an exception before the
    first rename nothing changes and the temporaries are removed. `verify` is passed to the recovery of
    earlier cut-off commits of these two names, which runs just before this one commits."""
    first, second = Path(first), Path(second)
    if first.parent != second.parent:
        raise ValueError(f"a pair must share a folder: {first} and {second}")
    folder = first.parent
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(6)
    tmp1, tmp2 = pair_temporary(first, token, 1), pair_temporary(second, token, 2)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd1 = os.open(tmp1, flags, 0o644)
    fds = [fd1]
    renamed = False
    try:
        with contextlib.ExitStack() as locks:
            locks.enter_context(_flock(fd1))
            fd2 = os.open(tmp2, flags, 0o644)
            fds.append(fd2)
            locks.enter_context(_flock(fd2))
            written: list[bool] = []

            def write_second(data: bytes) -> None:
                _write_fd(fd2, data)
                written.append(True)

            yield tmp1, write_second
            if not written:
                raise RuntimeError("atomic_pair: write_second was never called")
            _fsync_file(tmp1)
            with _folder_lock(folder):
                _recover_locked(folder, verify, {first.name, second.name})
                os.replace(tmp1, first)
                renamed = True
                os.replace(tmp2, second)
            _fsync_folder(folder)
    except BaseException:
        if not renamed:  # nothing committed: drop both, `first`'s last (see `_recover_locked`)
            _unlink(tmp2)
            _unlink(tmp1)
        # else: `second`'s temporary stays for `recover_pairs` to roll forward
        raise
    finally:
        for fd in fds:
            os.close(fd)
