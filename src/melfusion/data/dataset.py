"""Torch dataset of ⟨image, text, audio⟩ triplets for training.

Audio: mono mix, soxr resampling to `sample_rate`, then a crop (random or from the start) or zero pad to
`num_samples`. Only the window needed is read, so long recordings are cheap. Images: resize + centre
crop to `image_size` = (height, width), RGB in [-1, 1]. With several images per clip, one is drawn per
epoch. All randomness comes from (seed, epoch, index), so an item is the same on every run, worker and
rank; call `set_epoch` before each epoch (with persistent DataLoader workers, recreate the loader or
the workers keep their old epoch).

A file that fails at read time (vanished, corrupt) makes `__getitem__` return None and log a warning
(once per item); `collate_triplets` drops Nones and reports how many it dropped in
`batch["num_skipped"]` — sum it with a `SkipCounter` in the training loop (counters inside the dataset
would live in the DataLoader's worker processes).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch
from torch.utils.data import Dataset

from melfusion.data.check import MAX_PEAK
from melfusion.data.manifest import TripletRecord, read_manifest_with_problems
from melfusion.errors import MelfusionInputError
from melfusion.guidance.preprocess import preprocess_image

logger = logging.getLogger(__name__)

_RESAMPLE_MARGIN_S = 0.05  # extra audio read on each side of a window so the resampler's edges fall outside


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise MelfusionInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _file_ok(path: Path) -> str | None:
    """Cheap pre-check (stat only): None when the file exists and is not empty, else the reason."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return err.strerror or "unreadable"
    if not path.is_file():
        return "not a file"
    return None if st.st_size > 0 else "empty file"


def read_audio_window(
    path: str | os.PathLike[str],
    sample_rate: int,
    num_samples: int,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, int, int]:
    """Read `num_samples` of mono audio at `sample_rate` from the segment [start_s, end_s) of a file.

    With `rng`, the window starts at a uniformly drawn offset inside the segment (else at its start);
    segments shorter than the window are zero-padded at the end. Returns (audio (num_samples,) float32,
    offset in samples at `sample_rate` from the segment start, number of real (unpadded) samples).
    Raises MelfusionInputError for unreadable or corrupt files (NaN, infinite or absurdly large samples).
    """
    path = Path(path)
    try:
        f = sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MelfusionInputError(f"cannot read {path} as audio ({reason})") from None
    with f:
        rate, frames = f.samplerate, f.frames
        seg_first = min(frames, round((start_s or 0.0) * rate))
        seg_last = frames if end_s is None else min(frames, round(end_s * rate))
        seg_frames = seg_last - seg_first
        if seg_frames <= 0:
            raise MelfusionInputError(f"{path}: the segment {start_s}-{end_s} s holds no audio")
        # Positions on the output grid of the whole file (sample k <-> file time k / sample_rate).
        seg_first_out = math.ceil(seg_first * sample_rate / rate)
        seg_out = seg_last * sample_rate // rate - seg_first_out  # segment length at the target rate
        offset = 0
        if rng is not None and seg_out > num_samples:
            offset = int(rng.integers(0, seg_out - num_samples + 1))
        start_out = seg_first_out + offset
        first = start_out * rate // sample_rate  # file frame at or just before the window start
        need = math.ceil(num_samples * rate / sample_rate) + 1
        # Resampling: read a margin on each side (filter context, trimmed afterwards; it may reach
        # outside the segment) and start on a frame that falls exactly on the output grid, so the
        # window equals the same samples of the whole file resampled (no sub-sample jitter).
        step_in = rate // math.gcd(rate, sample_rate)
        margin = 0 if rate == sample_rate else math.ceil(_RESAMPLE_MARGIN_S * rate)
        lo = max(0, first - margin)
        if step_in <= rate // 10:
            lo -= lo % step_in
        hi = min(frames, first + need + margin)
        try:
            f.seek(lo)
            data = f.read(hi - lo, dtype="float32", always_2d=True)  # (T, C)
        except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as err:
            raise MelfusionInputError(f"{path}: decoding failed ({err})") from None
    if data.shape[0] == 0:
        raise MelfusionInputError(f"{path}: no samples could be read")
    if not np.isfinite(data).all():
        raise MelfusionInputError(f"{path}: contains NaN or infinite samples")
    peak = float(np.abs(data).max())
    if peak > MAX_PEAK:  # a float file of garbage values: training on it gives NaN losses
        raise MelfusionInputError(f"{path}: absurd amplitude (samples reach {peak:.3g}, full scale is 1)")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]  # (T,)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    mono = mono[max(0, start_out - round(lo * sample_rate / rate)) :]
    mono = mono[: min(num_samples, seg_out - offset)]
    length = int(mono.shape[0])
    out = np.zeros(num_samples, dtype=np.float32)
    out[:length] = mono
    return out, offset, length


class TripletDataset(Dataset):
    """Items: dict(id, text, index, audio (num_samples,) float32, audio_length, audio_offset, audio_path,
    pixel_values (3, H, W) in [-1, 1], image_index, image_path). `load_audio=False` /
    `load_images=False` leave out the decoded tensors (when cached features replace them)."""

    def __init__(
        self,
        records: Sequence[TripletRecord],
        *,
        sample_rate: int,
        num_samples: int,
        image_size: tuple[int, int] | int,
        random_crop: bool = True,
        seed: int = 0,
        load_audio: bool = True,
        load_images: bool = True,
    ) -> None:
        self.sample_rate = _positive_int(sample_rate, "sample_rate")
        self.num_samples = _positive_int(num_samples, "num_samples")
        if isinstance(image_size, numbers.Integral):
            image_size = (int(image_size), int(image_size))
        if not (isinstance(image_size, Sequence) and len(image_size) == 2):
            raise MelfusionInputError(f"image_size must be (height, width), got {image_size!r}")
        self.image_size = (
            _positive_int(image_size[0], "image height"),
            _positive_int(image_size[1], "image width"),
        )
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise MelfusionInputError(f"seed must be an integer >= 0, got {seed!r}")
        self.seed = int(seed)
        self.random_crop = bool(random_crop)
        self.load_audio = load_audio
        self.load_images = load_images
        self.epoch = 0
        self.num_failed = 0  # in this process only; use batch["num_skipped"] across workers
        self._failed_ids: set[str] = set()

        # Drop items whose audio or every image is missing/empty now; they could never load.
        self.records: list[TripletRecord] = []
        dropped: list[str] = []
        for r in records:
            reason = _file_ok(r.audio)
            images = [p for p in r.images if _file_ok(p) is None]
            if reason is None and images:
                self.records.append(
                    r if len(images) == len(r.images) else dataclasses.replace(r, images=images)
                )
            else:
                what = f"audio {r.audio} {reason}" if reason else f"no image of {len(r.images)} exists"
                dropped.append(f"{r.id}: {what}")
        self.dropped = dropped
        if dropped:
            logger.warning(
                "dropped %d of %d item(s) with missing files, e.g. %s", len(dropped), len(records), dropped[0]
            )
        if not self.records:
            example = f" (e.g. {dropped[0]})" if dropped else ""
            raise MelfusionInputError(
                f"no usable item among {len(records)} record(s){example}; run `melfusion data check MANIFEST` "
                "to list what is wrong"
            )

    @classmethod
    def from_manifest(
        cls,
        path: str | os.PathLike[str],
        *,
        format: str = "auto",
        audio_root: str | os.PathLike[str] | None = None,
        image_root: str | os.PathLike[str] | None = None,
        check: bool = False,
        **kwargs: Any,
    ) -> TripletDataset:
        """Read a manifest (skipping invalid rows) and build the dataset; `check=True` first opens every
        file (`check_manifest`) and keeps only usable items."""
        records, problems = read_manifest_with_problems(
            path, format, audio_root=audio_root, image_root=image_root
        )
        if problems:
            logger.warning("skipped %d invalid manifest row(s), e.g. %s", len(problems), problems[0])
        if check:
            from melfusion.data.check import check_manifest

            report = check_manifest(records, sample_rate=kwargs.get("sample_rate", 16000), progress=False)
            if report.problems:
                logger.warning("data check: %s", report.counts)
            records = report.usable
        return cls(records, **kwargs)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the crops and images of `epoch` (deterministic given seed, epoch and index)."""
        self.epoch = int(epoch)

    def _rngs(self, index: int) -> tuple[np.random.Generator, np.random.Generator]:
        seq = np.random.SeedSequence([self.seed, self.epoch, index])
        image_seq, crop_seq = seq.spawn(2)  # independent streams: image choice never shifts the crop
        return np.random.default_rng(image_seq), np.random.default_rng(crop_seq)

    def image_index(self, index: int) -> int:
        """Which of item `index`'s images this epoch uses."""
        n = len(self.records[index].images)
        return 0 if n == 1 else int(self._rngs(index)[0].integers(0, n))

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        record = self.records[index]
        image_rng, crop_rng = self._rngs(index)
        n_images = len(record.images)
        image_index = 0 if n_images == 1 else int(image_rng.integers(0, n_images))
        image_path = record.images[image_index]
        item: dict[str, Any] = {
            "id": record.id,
            "text": record.text,
            "index": index,
            "audio_path": str(record.audio),
            "image_index": image_index,
            "image_path": str(image_path),
        }
        try:
            if self.load_audio:
                audio, offset, length = read_audio_window(
                    record.audio,
                    self.sample_rate,
                    self.num_samples,
                    start_s=record.start_s,
                    end_s=record.end_s,
                    rng=crop_rng if self.random_crop else None,
                )
                item.update(audio=torch.from_numpy(audio), audio_offset=offset, audio_length=length)
            if self.load_images:
                pixels = preprocess_image(image_path, *self.image_size)  # (1, 3, H, W)
                item["pixel_values"] = pixels[0]
        except (MelfusionInputError, OSError, ValueError, RuntimeError, sf.LibsndfileError) as err:
            self.num_failed += 1
            first = record.id not in self._failed_ids
            self._failed_ids.add(record.id)
            logger.log(logging.WARNING if first else logging.DEBUG, "skipping item %s: %s", record.id, err)
            return None
        return item

    @property
    def collate_fn(self) -> functools.partial:
        """`collate_triplets` that knows this dataset's shapes (an all-bad batch gives 0-size tensors)."""
        return functools.partial(
            collate_triplets,
            num_samples=self.num_samples if self.load_audio else None,
            image_size=self.image_size if self.load_images else None,
        )


def collate_triplets(
    batch: Sequence[dict[str, Any] | None],
    *,
    num_samples: int | None = None,
    image_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Drop None items; stack tensors (audio (B, T), pixel_values (B, 3, H, W)), ints to int64 tensors,
    everything else (id, text, paths) to lists. `num_skipped`: how many items were dropped. When all
    are dropped, the batch is empty (B = 0; with `num_samples` / `image_size`, 0-size tensors)."""
    items = [b for b in batch if b is not None]
    out: dict[str, Any] = {"num_skipped": len(batch) - len(items)}
    if not items:
        out.update(id=[], text=[])
        if num_samples is not None:
            out["audio"] = torch.zeros(0, num_samples)
        if image_size is not None:
            out["pixel_values"] = torch.zeros(0, 3, *image_size)
        return out
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], numbers.Integral) and not isinstance(values[0], bool):
            out[key] = torch.tensor(values, dtype=torch.long)
        else:
            out[key] = values
    return out


class SkipCounter:
    """Running count of items dropped by `collate_triplets`, kept where batches are consumed.

    `update(batch)` each step; `total` to log; `state_dict` / `load_state_dict` for checkpoints.
    """

    def __init__(self) -> None:
        self.total = 0
        self.batches = 0

    def update(self, batch: dict[str, Any]) -> int:
        n = int(batch.get("num_skipped", 0))
        self.total += n
        self.batches += 1
        return n

    def state_dict(self) -> dict[str, int]:
        return {"total": self.total, "batches": self.batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.total = int(state.get("total", 0))
        self.batches = int(state.get("batches", 0))
