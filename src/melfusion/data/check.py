"""Open every file a manifest names and classify what is wrong, without stopping at the first problem.

Kinds of problem (per file, so one item can have several):
- `missing`: the path does not exist.
- `unreadable`: it exists but cannot be opened as audio / an image (empty file, no permission, a
  directory, not a format soundfile / Pillow reads, e.g. text saved as .wav).
- `corrupt`: the format is recognised but decoding fails (truncated or damaged data, NaN samples), or the
  decoded samples reach an absurd amplitude (peak above `MAX_PEAK`, full scale being 1).
- `silent`: audio whose RMS level over the used segment is below `silence_dbfs` (dB re full scale), or a
  constant (DC) signal: its level around its mean is below `silence_dbfs`.
- `too_short`: audio whose used segment lasts less than `min_seconds`.
- `invalid_row`: a manifest row the reader skipped (see `melfusion.data.manifest`).
An item is usable when its audio has no problem and at least one of its images opens; the `usable`
records keep only their good images.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from melfusion.data.manifest import RowProblem, TripletRecord

MISSING = "missing"
UNREADABLE = "unreadable"
CORRUPT = "corrupt"
SILENT = "silent"
TOO_SHORT = "too_short"
INVALID_ROW = "invalid_row"
LOW_SAMPLE_RATE = "low_sample_rate"  # a note, not a problem
PROBLEM_KINDS = (MISSING, UNREADABLE, CORRUPT, SILENT, TOO_SHORT, INVALID_ROW)
_BLOCK = 1 << 16  # audio frames read per block
MAX_PEAK = 1e3  # decoded samples beyond ±1000 × full scale are garbage (e.g. a float WAV of 1e30s), not audio


@dataclass(frozen=True)
class Problem:
    """One problem: `modality` is "audio", "image" or "row"; `item_id` is None for invalid rows."""

    item_id: str | None
    kind: str
    modality: str
    path: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class CheckReport:
    num_items: int
    usable: list[TripletRecord]
    problems: list[Problem]
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[Problem] = field(default_factory=list)  # usable, but worth knowing (low sample rate)
    usable_seconds: float = 0.0  # total duration of the usable items' audio segments

    @property
    def num_usable(self) -> int:
        return len(self.usable)

    @property
    def ok(self) -> bool:
        """At least one usable item."""
        return bool(self.usable)

    @property
    def counts(self) -> dict[str, int]:
        """Problems per kind (every kind listed, zeros included)."""
        c = Counter(p.kind for p in self.problems)
        return {kind: c.get(kind, 0) for kind in PROBLEM_KINDS}

    @property
    def reasons(self) -> dict[str, list[str]]:
        """item id -> its problems as text ("audio missing: ..."); invalid rows under their location."""
        out: dict[str, list[str]] = {}
        for p in self.problems:
            key = p.item_id if p.item_id is not None else (p.path or "?")
            out.setdefault(key, []).append(f"{p.modality} {p.kind.replace('_', ' ')}: {p.reason}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_items": self.num_items,
            "num_usable": self.num_usable,
            "num_unusable": self.num_items - self.num_usable,
            "counts": self.counts,
            "settings": self.settings,
            "usable_seconds": self.usable_seconds,
            "usable_ids": [r.id for r in self.usable],
            "problems": [p.to_dict() for p in self.problems],
            "notes": [p.to_dict() for p in self.notes],
        }

    @property
    def file_counts(self) -> dict[str, int]:
        """Distinct files (rows, for invalid_row) per kind: a bad image shared by 3 items counts once."""
        files: dict[str, set[str | None]] = {kind: set() for kind in PROBLEM_KINDS}
        for p in self.problems:
            files[p.kind].add(p.path)
        return {kind: len(paths) for kind, paths in files.items()}

    def summary_table(self) -> str:
        """Items usable / not, then per kind of problem: problems (item x file) and distinct files."""
        width = max(len("unusable items"), *(len(k) + 2 for k in PROBLEM_KINDS))
        lines = [
            f"{'items':<{width}}  {self.num_items:>8}",
            f"{'usable items':<{width}}  {self.num_usable:>8}",
            f"{'unusable items':<{width}}  {self.num_items - self.num_usable:>8}",
            f"{'usable audio':<{width}}  {self.usable_seconds / 60:>7.1f}m",
            "",
            f"{'problem':<{width}}  {'problems':>8}  {'files':>6}",
            f"{'-' * width}  {'-' * 8}  {'-' * 6}",
        ]
        files = self.file_counts
        for kind, n in self.counts.items():
            lines.append(f"{kind.replace('_', ' '):<{width}}  {n:>8}  {files[kind]:>6}")
        if self.notes:
            rate = self.settings.get("sample_rate")
            lines.append(f"\nnote: {len(self.notes)} usable item(s) recorded below {rate} Hz (upsampled)")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------- file checks


def _exists_problem(path: Path) -> tuple[str, str] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return MISSING, "no such file"
    except PermissionError:
        return UNREADABLE, "permission denied"
    except OSError as err:
        return UNREADABLE, err.strerror or str(err)
    if path.is_dir():
        return UNREADABLE, "is a directory"
    if st.st_size == 0:
        return UNREADABLE, "empty file (0 bytes)"
    return None


def check_image(path: Path) -> tuple[str, str] | None:
    """(kind, reason) or None when the image decodes fully."""
    problem = _exists_problem(path)
    if problem:
        return problem
    try:
        with Image.open(path) as im:
            fmt = im.format
            try:
                im.load()
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
                return CORRUPT, f"{fmt} data does not decode ({err})"
            if im.width == 0 or im.height == 0:
                return CORRUPT, "image has zero size"
    except PermissionError:
        return UNREADABLE, "permission denied"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return UNREADABLE, f"not an image Pillow reads ({type(err).__name__})"
    except Image.DecompressionBombError:
        return UNREADABLE, "image too large to open safely (decompression bomb guard)"
    return None


@dataclass(frozen=True)
class AudioFacts:
    sample_rate: int
    channels: int
    frames: int
    seconds: float  # of the used segment
    rms_dbfs: float  # of the used segment; -inf for digital silence
    peak: float = 0.0  # largest |sample| of the used segment
    ac_dbfs: float | None = None  # level around each channel's mean (RMS less the DC offset); None: unknown
    dc_offset: float = 0.0  # mean sample value (over all channels)


_WAV_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _truncated_wav(f: sf.SoundFile) -> str | None:
    """libsndfile shortens a truncated WAV silently; its log still shows the announced data size."""
    if f.format not in ("WAV", "WAVEX", "RF64"):
        return None
    m = _WAV_DATA.search(f.extra_info or "")
    if not m:
        return None
    announced, present = int(m.group(1)), int(m.group(2))
    if present < announced < 0xFFFFFFF0:  # streamed WAVs announce 0 or 0xFFFFFFFF: not truncation
        return f"truncated: the header announces {announced} data bytes, the file holds {present}"
    return None


def probe_audio(
    path: Path, start_s: float | None = None, end_s: float | None = None
) -> AudioFacts | tuple[str, str]:
    """Stream through the file (bounded memory): AudioFacts, or (kind, reason) when it cannot be read."""
    problem = _exists_problem(path)
    if problem:
        return problem
    try:
        f = sf.SoundFile(path)
    except PermissionError:
        return UNREADABLE, "permission denied"
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return UNREADABLE, f"not audio soundfile reads ({reason})"
    with f:
        rate, channels, frames = f.samplerate, f.channels, f.frames
        if rate <= 0:
            return CORRUPT, f"invalid sample rate {rate}"
        truncated = _truncated_wav(f)
        if truncated:
            return CORRUPT, truncated
        first = min(frames, round((start_s or 0.0) * rate))
        last = frames if end_s is None else min(frames, round(end_s * rate))
        total_sq, read, peak = 0.0, 0, 0.0
        # per channel running mean and sum of squared deviations, combined block by block (Chan et al.)
        mean = np.zeros(channels, dtype=np.float64)
        m2 = np.zeros(channels, dtype=np.float64)
        try:
            if first > 0:
                f.seek(first)
            remaining = max(0, last - first)
            while remaining > 0:
                block = f.read(min(_BLOCK, remaining), dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                if not np.isfinite(block).all():
                    return CORRUPT, "contains NaN or infinite samples"
                block64 = block.astype(np.float64)
                peak = max(peak, float(np.abs(block64).max()))
                if peak > MAX_PEAK:
                    return CORRUPT, f"absurd amplitude: samples reach {peak:.3g} (full scale is 1)"
                total_sq += float(np.square(block64).sum())
                n = block.shape[0]
                block_mean = block64.mean(axis=0)
                delta = block_mean - mean
                m2 += np.square(block64 - block_mean).sum(axis=0) + np.square(delta) * read * n / (read + n)
                mean += delta * n / (read + n)
                read += n
                remaining -= n
        except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as err:
            return (
                CORRUPT,
                f"decoding failed after {read} frames ({str(err).splitlines()[0] if str(err) else err})",
            )
        if read < last - first:
            return (
                CORRUPT,
                f"truncated: the header announces {frames} frames, only {first + read} could be read",
            )
    rms_sq = total_sq / (read * channels) if read else 0.0
    ac_sq = float(m2.sum()) / (read * channels) if read else 0.0
    return AudioFacts(
        rate,
        channels,
        frames,
        read / rate,
        _dbfs(rms_sq),
        peak=peak,
        ac_dbfs=_dbfs(ac_sq),
        dc_offset=float(mean.mean()) if read else 0.0,
    )


def _dbfs(mean_square: float) -> float:
    return 10.0 * math.log10(mean_square) if mean_square > 0 else -math.inf


def _check_audio(
    record: TripletRecord, min_seconds: float, silence_dbfs: float
) -> tuple[tuple[str, str] | None, AudioFacts | None]:
    facts = probe_audio(record.audio, record.start_s, record.end_s)
    if isinstance(facts, tuple):
        return facts, None
    return _classify_audio(record, facts, min_seconds, silence_dbfs), facts


def _classify_audio(
    record: TripletRecord, facts: AudioFacts, min_seconds: float, silence_dbfs: float
) -> tuple[str, str] | None:
    if record.start_s is not None and record.start_s * facts.sample_rate >= facts.frames:
        return (
            TOO_SHORT,
            f"start_s {record.start_s:g} is past the end of the {facts.frames / facts.sample_rate:.2f} s file",
        )
    if facts.seconds < min_seconds:
        return TOO_SHORT, f"{facts.seconds:.2f} s < {min_seconds:g} s"
    if facts.rms_dbfs < silence_dbfs:
        level = "digital silence" if facts.rms_dbfs == -math.inf else f"RMS {facts.rms_dbfs:.1f} dBFS"
        return SILENT, f"{level} < {silence_dbfs:g} dBFS"
    if facts.ac_dbfs is not None and facts.ac_dbfs < silence_dbfs:
        level = "no variation" if facts.ac_dbfs == -math.inf else f"{facts.ac_dbfs:.1f} dBFS around it"
        return (
            SILENT,
            f"constant DC offset {facts.dc_offset:.3g} with {level} (< {silence_dbfs:g} dBFS): no signal",
        )
    return None


def check_manifest(
    records: Sequence[TripletRecord],
    *,
    sample_rate: int = 16000,
    min_seconds: float = 1.0,
    silence_dbfs: float = -60.0,
    progress: bool = True,
    num_workers: int = 4,
    row_problems: Iterable[RowProblem] = (),
) -> CheckReport:
    """Open every audio file and image of `records` (each distinct file once) and classify problems.

    `sample_rate`: the model's rate; usable audio recorded below it is listed in `notes`
    (`low_sample_rate`: it will be upsampled and lacks the top band), without making it unusable.
    `num_workers` threads read files in parallel (I/O bound). `row_problems`: rows the manifest
    reader skipped, counted as `invalid_row`.
    """
    if min_seconds < 0:
        raise ValueError(f"min_seconds must be >= 0, got {min_seconds}")
    problems = [Problem(None, INVALID_ROW, "row", p.where, p.reason) for p in row_problems]

    # Each distinct file (audio: with its segment) is checked once, even when several items share it.
    audio_keys = {(r.audio, r.start_s, r.end_s): r for r in records}
    image_paths = list(dict.fromkeys(p for r in records for p in r.images))
    jobs: list[tuple[Any, Callable[[], Any]]] = [
        (key, lambda r=r: _check_audio(r, min_seconds, silence_dbfs)) for key, r in audio_keys.items()
    ]
    jobs += [(path, lambda p=path: check_image(p)) for path in image_paths]
    results: dict[Any, Any] = {}
    bar = tqdm(total=len(jobs), desc="checking files", unit="file", disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        for (key, _), result in zip(jobs, pool.map(lambda job: job[1](), jobs)):
            results[key] = result
            bar.update()
    bar.close()

    usable: list[TripletRecord] = []
    notes: list[Problem] = []
    usable_seconds = 0.0
    for r in records:
        audio_problem, facts = results[(r.audio, r.start_s, r.end_s)]
        if audio_problem:
            problems.append(Problem(r.id, audio_problem[0], "audio", str(r.audio), audio_problem[1]))
        good_images = []
        for p in r.images:
            image_problem = results[p]
            if image_problem:
                problems.append(Problem(r.id, image_problem[0], "image", str(p), image_problem[1]))
            else:
                good_images.append(p)
        if not audio_problem and good_images:
            usable.append(
                r if len(good_images) == len(r.images) else dataclasses.replace(r, images=good_images)
            )
            usable_seconds += facts.seconds
            if facts.sample_rate < sample_rate:
                reason = f"recorded at {facts.sample_rate} Hz < {sample_rate} Hz (upsampled)"
                notes.append(Problem(r.id, LOW_SAMPLE_RATE, "audio", str(r.audio), reason))
    settings = {
        "sample_rate": sample_rate,
        "min_seconds": min_seconds,
        "silence_dbfs": silence_dbfs,
    }
    return CheckReport(
        num_items=len(records),
        usable=usable,
        problems=problems,
        settings=settings,
        notes=notes,
        usable_seconds=usable_seconds,
    )


def describe_unusable(report: CheckReport, source: str | os.PathLike[str] | None = None) -> str:
    """One-line explanation for a report with no usable item."""
    counts = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in report.counts.items() if n)
    where = f" in {source}" if source is not None else ""
    return (
        f"none of the {report.num_items} item(s){where} is usable ({counts or 'no items'}); fix the files listed "
        "above, or pass --audio-root / --image-root when relative paths point elsewhere"
    )
