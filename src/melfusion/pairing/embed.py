"""Folder scanning and cached, resumable embedding of image and audio files for the pairing tool.

Each file's embedding is stored in a `FeatureCache` (safetensors, one small file per input, keyed by the
file's content hash and the encoder's `cache_id`) as soon as its batch is computed, so an interrupted or
failed run keeps what it did and the next run only embeds what is missing. A file that cannot be used
(a `.png` that is not an image, a broken audio file) stops the run with an error naming it — after the
embeddings computed so far are written — unless `skip_bad` is set, which leaves such files out and
lists them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from melfusion.data.cache import FeatureCache
from melfusion.data.manifest import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS
from melfusion.errors import MelfusionInputError
from melfusion.pairing.encoders import PairingEncoder, check_audio_file, check_image_file

logger = logging.getLogger(__name__)

KINDS = {"image": "pair_image_embedding", "audio": "pair_audio_embedding"}
_EXTENSIONS = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS}
_WHAT = {"image": "image", "audio": "music"}


@dataclass
class EmbeddedFiles:
    """paths[i] ↔ embeddings[i] (raw encoder output, float32); `skipped`: (path, reason) left out."""

    paths: list[Path]
    embeddings: np.ndarray
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    cached: int = 0
    computed: int = 0


def scan_folder(folder: str | os.PathLike[str], kind: str) -> tuple[list[Path], list[Path]]:
    """(files with the kind's extensions, other files) under `folder`, recursively, sorted by relative path.

    Raises MelfusionInputError when the folder is missing or holds no file of that kind.
    """
    root = Path(folder).expanduser()
    what = _WHAT[kind]
    if not root.exists():
        raise MelfusionInputError(f"{what} folder not found: {root}")
    if not root.is_dir():
        raise MelfusionInputError(f"{what} folder {root} is a file; give a folder of {what} files")
    wanted, others = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            (wanted if p.suffix.lower() in _EXTENSIONS[kind] else others).append(p)
    wanted.sort(key=lambda p: p.relative_to(root).as_posix())
    others.sort(key=lambda p: p.relative_to(root).as_posix())
    if not wanted:
        exts = ", ".join(_EXTENSIONS[kind])
        detail = (
            f"; it holds {len(others)} other file(s), e.g. {others[0].name}" if others else "; it is empty"
        )
        raise MelfusionInputError(f"no {what} files in {root} (looked for {exts}){detail}")
    if others:
        logger.warning(
            "ignoring %d file(s) in %s that are not %s files, e.g. %s",
            len(others),
            root,
            what,
            others[0].name,
        )
    return wanted, others


def record_ids(paths: Sequence[Path], root: Path) -> dict[Path, str]:
    """Manifest ids: the path under `root` without its extension (with it where two files would clash)."""
    stems = {p: p.relative_to(root).with_suffix("").as_posix() for p in paths}
    counts: dict[str, int] = {}
    for stem in stems.values():
        counts[stem] = counts.get(stem, 0) + 1
    return {p: stem if counts[stem] == 1 else p.relative_to(root).as_posix() for p, stem in stems.items()}


def _as_numpy(x: object) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def embed_files(
    paths: Sequence[Path],
    kind: str,
    encoder: PairingEncoder,
    cache: FeatureCache,
    *,
    batch_size: int = 16,
    skip_bad: bool = False,
    progress: bool = True,
    checker: Callable[[Path], None] | None = None,
) -> EmbeddedFiles:
    """Embed `paths` ("image" or "audio") with `encoder`, reusing and filling `cache` (see module doc)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be 'image' or 'audio', got {kind!r}")
    cache_kind = KINDS[kind]
    config = {"encoder": encoder.cache_id, "kind": kind}
    check = (
        checker
        or getattr(encoder, f"check_{kind}", None)
        or (check_image_file if kind == "image" else check_audio_file)
    )
    embed_fn = encoder.embed_image_files if kind == "image" else encoder.embed_audio_files
    results: dict[int, np.ndarray] = {}
    skipped: list[tuple[Path, str]] = []
    pending: list[tuple[int, Path, str]] = []  # (position, path, cache key)
    stats = {"cached": 0, "computed": 0}
    bar = tqdm(total=len(paths), desc=f"embedding {_WHAT[kind]}", unit="file", disable=not progress)

    def store(i: int, key: str, emb: np.ndarray) -> None:
        if cache.enabled:
            cache.put(cache_kind, key, {"embedding": torch.from_numpy(np.ascontiguousarray(emb))})
        results[i] = emb
        stats["computed"] += 1

    def run_encoder(items: list[tuple[int, Path, str]]) -> np.ndarray:
        embs = _as_numpy(embed_fn([p for _, p, _ in items]))
        if embs.ndim != 2 or embs.shape[0] != len(items):
            raise MelfusionInputError(
                f"encoder {encoder.name} returned shape {embs.shape} for {len(items)} {kind} file(s)"
            )
        return embs

    def flush() -> None:
        """Embed and store the pending files; a file the encoder fails on is isolated, then reported."""
        batch = list(pending)
        pending.clear()
        if not batch:
            return
        bad: list[tuple[Path, str]] = []
        try:
            done = list(zip(batch, run_encoder(batch)))
        except MelfusionInputError:
            raise
        except Exception:  # retry one by one to find the file that broke the batch
            done = []
            for item in batch:
                try:
                    done.append((item, run_encoder([item])[0]))
                except MelfusionInputError:
                    raise
                except Exception as err:
                    bad.append((item[1], f"the encoder failed on it ({type(err).__name__}: {err})"))
        for (i, _, key), emb in done:
            store(i, key, emb)
        bar.update(len(batch))
        for path, reason in bad:
            if not skip_bad:
                raise _BadFile(path, reason)
            skipped.append((path, reason))

    try:
        for i, path in enumerate(paths):
            try:
                key = cache.file_key(path, config)
            except OSError as err:
                reason = f"unreadable ({err.strerror or err})"
                if not skip_bad:
                    raise _BadFile(path, reason) from None
                skipped.append((path, reason))
                bar.update()
                continue
            hit = cache.get(cache_kind, key) if cache.enabled else None
            if hit is not None:
                results[i] = hit["embedding"].float().numpy()
                stats["cached"] += 1
                bar.update()
                continue
            try:
                check(path)
            except MelfusionInputError as err:
                if not skip_bad:
                    raise _BadFile(path, str(err)) from None
                skipped.append((path, str(err)))
                bar.update()
                continue
            pending.append((i, path, key))
            if len(pending) >= batch_size:
                flush()
        flush()
    except _BadFile as bad:
        try:
            flush()  # keep the good files of the unfinished batch
        except _BadFile as other:  # the first error is the one to report
            logger.debug("another unusable file in the same batch: %s", other)
        bar.close()
        kept = stats["computed"] + stats["cached"]
        where = f"cached in {cache.root}" if cache.enabled else "not cached (no cache folder)"
        msg = (
            f"{bad.reason if str(bad.path) in bad.reason else f'{bad.path}: {bad.reason}'}; "
            f"{kept} {_WHAT[kind]} embedding(s) done so far are {where}. Remove or fix the file and run "
            "again to resume, or pass --skip-bad to leave unusable files out"
        )
        raise MelfusionInputError(msg) from None
    bar.close()
    if skipped:
        logger.warning(
            "left out %d unusable %s file(s), e.g. %s: %s", len(skipped), kind, skipped[0][0], skipped[0][1]
        )
    order = sorted(results)
    if not order:
        raise MelfusionInputError(f"no usable {_WHAT[kind]} file among {len(paths)} (e.g. {skipped[0][1]})")
    return EmbeddedFiles(
        paths=[Path(paths[i]) for i in order],
        embeddings=np.stack([results[i] for i in order]).astype(np.float32),
        skipped=skipped,
        cached=stats["cached"],
        computed=stats["computed"],
    )


class _BadFile(Exception):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
