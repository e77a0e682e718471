"""Triplet manifests: ⟨image(s), text, audio⟩ records read from the formats people hold.

Standard format (what `write_manifest` writes): JSON Lines, one object per line::

    {"id": "clip1", "image": "img/a.png", "text": "calm piano", "audio": "wav/a.wav"}
    {"image": ["img/b1.jpg", "img/b2.jpg"], "text": "...", "audio": "wav/b.flac", "start_s": 5, "end_s": 15}

`image` is a path or a list of paths (one is sampled per epoch); `id`, `start_s`, `end_s` (the segment
of the audio file to use) are optional; other keys are kept in `TripletRecord.extra`. Relative paths
resolve against the manifest's folder (or `audio_root` / `image_root`). A CSV/TSV with the same
columns is accepted (several images in one cell: a JSON list or `|`-separated). Aliases: `images`,
`image_path`, `img_path` for image; `caption`, `captions`, `prompt` for text; `audio_path`,
`location` for audio.

Readers for existing datasets (picked by `format=`, else detected from the extension and keys):
- `melfusion`: the MeLFusion / TANGO release's `.json` files — JSON Lines with `captions`, `location`
  (audio) and `img_path`. Paths there are relative to the training script's working directory:
  pass `audio_root` / `image_root` when that is not the manifest's folder.
- `extended_musiccaps`: MusicCaps rows (`ytid`, `start_s`, `end_s`, `caption`, `aspect_list`, ...)
  plus images: an image column (`image`, `images`, `img_path`, `image_path`, numbered `image_1`,
  `image_2`, ...) or, without one, files named `<ytid>.<ext>`, `<ytid>_<n>.<ext>` or
  `<ytid>-<n>.<ext>` in `image_root`.
- `melbench`: MeLBench CSV (`youtube_video_id`, `start_second`, `end_second`, `Annotation`, plus
  `image_path` once local).
For MusicCaps and MeLBench without an audio column, the clip is looked up in `audio_root` (or the
manifest's folder, or its `audio/` subfolder) as `<ytid>_<start>_<end>`, `<ytid>_<start>-<end>`,
`[<ytid>]-[<start>-<end>]`, `<ytid>_<start>` or `<ytid>` with a .wav/.flac/.mp3/.ogg extension. Their
YouTube start/end times go to `extra` (`youtube_start_s`, `youtube_end_s`), not to `start_s`/`end_s`:
the local files are the already-cut clips. Rows sharing a clip (same audio and text) are merged into
one record with several images for these three formats (`group_images`).

Error policy: a structural fault (a line that is not JSON, a line that is not an object, broken CSV
quoting, duplicate CSV columns, an unreadable or non-UTF-8 file) stops reading with a
`MelfusionInputError` naming `file:line` and the fix: the rest of the file cannot be trusted. A content
fault in one row (a missing or empty field, a bad number, end <= start, a wrong field count, a
duplicate id) skips that row with a warning naming `file:line`; `read_manifest_with_problems` returns
them. `on_error="raise"` makes those errors too. No valid row at all (e.g. a CSV without the needed
columns) is an error quoting the first problems. Files are not opened here: `melfusion.data.check`
does that.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from melfusion.errors import MelfusionInputError
from melfusion.utils.files import atomic_write_text

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "melfusion", "extended_musiccaps", "melbench")
_FORMAT_ALIASES = {
    "json": "jsonl",
    "tsv": "csv",
    "musiccaps": "extended_musiccaps",
    "extended-musiccaps": "extended_musiccaps",
    "melfusion-json": "melfusion",
    "melfusion_json": "melfusion",
}
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# Standard columns and their accepted aliases (first present wins).
IMAGE_KEYS = ("image", "images", "image_path", "image_paths", "img_path", "img", "artwork")
TEXT_KEYS = ("text", "caption", "captions", "prompt", "description", "annotation")
AUDIO_KEYS = ("audio", "audio_path", "location", "music", "music_path", "file", "filename")
_MAX_LOGGED = 10


@dataclass
class TripletRecord:
    """One ⟨image(s), text, audio⟩ triplet; paths are absolute. `start_s`/`end_s`: the segment of the
    audio file to use (None = from the start / to the end)."""

    id: str
    images: list[Path]
    text: str
    audio: Path | None  # None only when read with require_audio=False (generation needs no reference)
    start_s: float | None = None
    end_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> Path:
        """The first image."""
        return self.images[0]


@dataclass(frozen=True)
class RowProblem:
    """A row skipped while reading: `where` is `file:line` (or `file:item N` for a JSON array)."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class _RowError(ValueError):
    """A content fault in one row: the row is skipped (or raised with on_error='raise')."""


# ----------------------------------------------------------------------------------------- raw rows


def _json_rows(path: Path, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, object) for a JSON Lines file, or for a JSON array / {"data": [...]} document."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from _json_document_rows(path, text)
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if lineno == 1 or not line.strip().startswith("{"):
                # maybe a pretty-printed document rather than JSON Lines
                try:
                    json.loads(text)
                except json.JSONDecodeError:
                    pass
                else:
                    yield from _json_document_rows(path, text)
                    return
            # a bad line is one bad row (reported and skipped), not the end of the file
            obj = {
                "__error__": f"not valid JSON ({err.msg}, column {err.colno}); each line must hold one JSON "
                'object, e.g. {"image": "a.png", "text": "calm piano", "audio": "a.wav"}'
            }
        if not isinstance(obj, dict):
            obj = {
                "__error__": f"expected a JSON object per line, got {type(obj).__name__}; write one "
                '{"image": ..., "text": ..., "audio": ...} object per line'
            }
        yield f"{path}:{lineno}", obj


def _json_document_rows(path: Path, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise MelfusionInputError(
            f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno}); fix the file or write "
            "it as JSON Lines (one object per line)"
        ) from None
    if isinstance(doc, dict):
        lists = [
            v for k, v in doc.items() if k in ("data", "rows", "records", "items") and isinstance(v, list)
        ]
        doc = lists[0] if lists else [doc]
    if not isinstance(doc, list):
        raise MelfusionInputError(f"{path}: expected a list of objects, got {type(doc).__name__}")
    for i, obj in enumerate(doc, start=1):
        if not isinstance(obj, dict):
            raise MelfusionInputError(
                f"{path}:item {i}: expected a JSON object, got {type(obj).__name__}; every item of the "
                "list must be an object with image, text and audio"
            )
        yield f"{path}:item {i}", obj


def _csv_rows(path: Path, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    lines = text.splitlines(keepends=True)
    if path.suffix.lower() == ".tsv":
        delimiter = "\t"
    elif path.suffix.lower() == ".csv":
        delimiter = ","
    else:
        try:
            delimiter = csv.Sniffer().sniff("".join(lines[:5]), delimiters=",\t;").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as err:
        raise MelfusionInputError(f"{path}:1: cannot parse the CSV header ({err})") from None
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise MelfusionInputError(f"{path}:1: duplicate column names {dupes}; rename them")
    prev_line = reader.line_num
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise MelfusionInputError(
                f"{path}:{reader.line_num}: malformed CSV ({err}); check the quoting of that row"
            ) from None
        where = f"{path}:{prev_line + 1}"
        prev_line = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            yield where, {"__error__": f"has {len(values)} fields, the header has {len(header)}"}
            continue
        yield where, dict(zip(header, values))


def _load_rows(path: Path) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """('json' | 'csv', rows) of a manifest file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise MelfusionInputError(f"manifest {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise MelfusionInputError(f"manifest {path} is a directory; give the manifest file") from None
    except UnicodeDecodeError as err:
        raise MelfusionInputError(
            f"manifest {path} is not UTF-8 text ({err.reason} at byte {err.start}); re-save it as UTF-8"
        ) from None
    except OSError as err:
        raise MelfusionInputError(f"cannot read manifest {path} ({err.strerror})") from None
    kind = "csv" if path.suffix.lower() in (".csv", ".tsv") else "json"
    if kind == "json" and path.suffix.lower() not in (".json", ".jsonl", ".ndjson"):
        kind = "json" if text.lstrip()[:1] in ("{", "[") else "csv"
    rows = list(_json_rows(path, text) if kind == "json" else _csv_rows(path, text))
    return kind, rows


def _detect(kind: str, rows: list[tuple[str, dict[str, Any]]]) -> str:
    keys: set[str] = set()
    for _, row in rows[:20]:
        keys.update(k.lower() for k in row if isinstance(k, str))
    if {"text", "audio"} <= keys and keys & {"image", "images"}:  # standard (also what we write)
        return "csv" if kind == "csv" else "jsonl"
    if "youtube_video_id" in keys:
        return "melbench"
    if "ytid" in keys:
        return "extended_musiccaps"
    if "location" in keys and ("captions" in keys or "img_path" in keys):
        return "melfusion"
    return "csv" if kind == "csv" else "jsonl"


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format `read_manifest(path, format="auto")` would use (one of FORMATS)."""
    kind, rows = _load_rows(Path(path))
    return _detect(kind, rows)


# ------------------------------------------------------------------------------------ value parsing


def _get(row: dict[str, Any], keys: Iterable[str]) -> tuple[str | None, Any]:
    lower = {k.lower(): k for k in row if isinstance(k, str)}
    for key in keys:
        if key in lower:
            value = row[lower[key]]
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            return lower[key], value
    return None, None


def _as_text(value: Any, what: str) -> str:
    if isinstance(value, list):  # several captions: the first is the text
        value = next((v for v in value if isinstance(v, str) and v.strip()), None)
    if not isinstance(value, str) or not value.strip():
        raise _RowError(f"{what} must be a non-empty string, got {value!r}")
    return value.strip()


def _as_paths(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                value = json.loads(s)
            except json.JSONDecodeError:
                raise _RowError(f"{what} looks like a JSON list but does not parse: {s[:60]!r}") from None
        else:
            value = [p.strip() for p in s.split("|")] if "|" in s else [s]
    if not isinstance(value, list) or not value:
        raise _RowError(f"{what} must be a path or a non-empty list of paths, got {value!r}")
    out = []
    for v in value:
        if not isinstance(v, str) or not v.strip():
            raise _RowError(f"{what} holds {v!r}, not a path")
        out.append(v.strip())
    return out


def _as_seconds(value: Any, what: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise _RowError(f"{what} must be a number of seconds, got {value!r}")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise _RowError(f"{what} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise _RowError(f"{what} must be a finite number >= 0, got {value!r}")
    return seconds


def _resolve(path: str, base: Path) -> Path:
    p = Path(os.path.expanduser(path))
    return Path(os.path.normpath(p if p.is_absolute() else base / p))


def _seconds_tag(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _extra(row: dict[str, Any], used: Iterable[str | None]) -> dict[str, Any]:
    skip = {u for u in used if u} | {"__error__"}
    return {k: v for k, v in row.items() if isinstance(k, str) and k not in skip}


class _FileIndex:
    """Files of a few folders by stem (lazily listed once), for ytid-based look-ups."""

    def __init__(self, folders: list[Path], extensions: tuple[str, ...]) -> None:
        self.folders = folders
        self.extensions = extensions
        self._by_stem: dict[str, list[Path]] | None = None

    def _index(self) -> dict[str, list[Path]]:
        if self._by_stem is None:
            self._by_stem = {}
            for folder in self.folders:
                try:
                    entries = sorted(os.scandir(folder), key=lambda e: e.name)
                except OSError:
                    continue
                for entry in entries:
                    p = Path(entry.path)
                    if p.suffix.lower() in self.extensions and entry.is_file():
                        self._by_stem.setdefault(p.stem, []).append(p)
        return self._by_stem

    def find(self, stems: Iterable[str]) -> Path | None:
        index = self._index()
        for stem in stems:
            if stem in index:
                return index[stem][0]
        return None

    def numbered(self, stem: str) -> list[Path]:
        """`<stem>.<ext>`, then `<stem>_<n>` / `<stem>-<n>` in numeric order."""
        index = self._index()
        pattern = re.compile(re.escape(stem) + r"[_\-.](?:img)?(\d+)$")
        found = list(index.get(stem, []))
        numbered = [(int(m.group(1)), p) for s, ps in index.items() if (m := pattern.match(s)) for p in ps]
        return found + [p for _, p in sorted(numbered)]


# ------------------------------------------------------------------------------------------ readers


@dataclass
class _Context:
    path: Path
    audio_base: Path
    image_base: Path
    audio_index: _FileIndex
    image_index: _FileIndex
    require_audio: bool = True
    require_image: bool = True


def _standard(row: dict[str, Any], ctx: _Context) -> TripletRecord:
    ikey, images = _get(row, IMAGE_KEYS)
    tkey, text = _get(row, TEXT_KEYS)
    akey, audio = _get(row, AUDIO_KEYS)
    wanted = (
        ("image", images if ctx.require_image else ""),
        ("text", text),
        ("audio", audio if ctx.require_audio else ""),
    )
    missing = [n for n, v in wanted if v is None]
    if missing:
        raise _RowError(
            f"missing or empty {', '.join(missing)} (columns: {', '.join(map(str, row)) or 'none'})"
        )
    record_id = row.get("id")
    return TripletRecord(
        id=str(record_id).strip() if record_id not in (None, "") else "",
        images=[_resolve(p, ctx.image_base) for p in _as_paths(images, "image")]
        if images is not None
        else [],
        text=_as_text(text, "text"),
        audio=_resolve(_as_paths(audio, "audio")[0], ctx.audio_base) if audio is not None else None,
        start_s=_as_seconds(row.get("start_s"), "start_s"),
        end_s=_as_seconds(row.get("end_s"), "end_s"),
        extra=_extra(row, (ikey, tkey, akey, "id", "start_s", "end_s")),
    )


def _melfusion(row: dict[str, Any], ctx: _Context) -> TripletRecord:
    found = {key: _get(row, (key,)) for key in ("captions", "location", "img_path")}
    for key, (_, value) in found.items():
        if value is None:
            raise _RowError(f"missing {key!r} (a MeLFusion record has captions, location and img_path)")
    captions, location, img = (value for _, value in found.values())
    extra = _extra(row, ("id", *(name for name, _ in found.values())))
    if isinstance(captions, list):
        extra["texts"] = captions
    record_id = row.get("id")
    return TripletRecord(
        id=str(record_id) if record_id not in (None, "") else "",
        images=[_resolve(p, ctx.image_base) for p in _as_paths(img, "img_path")],
        text=_as_text(captions, "captions"),
        audio=_resolve(_as_paths(location, "location")[0], ctx.audio_base),
        extra=extra,
    )


def _clip_audio(ytid: str, start: float | None, end: float | None, ctx: _Context) -> Path:
    stems = []
    if start is not None:
        s = _seconds_tag(start)
        if end is not None:
            e = _seconds_tag(end)
            stems += [f"{ytid}_{s}_{e}", f"{ytid}_{s}-{e}", f"[{ytid}]-[{s}-{e}]"]
        stems.append(f"{ytid}_{s}")
    stems.append(ytid)
    found = ctx.audio_index.find(stems)
    return found if found is not None else ctx.audio_base / f"{ytid}.wav"  # `check` reports it missing


def _youtube_clip(
    row: dict[str, Any],
    ctx: _Context,
    *,
    id_key: str,
    start_key: str,
    end_key: str,
    text_keys: tuple[str, ...],
) -> TripletRecord:
    ykey, ytid = _get(row, (id_key,))
    if ytid is None:
        raise _RowError(f"missing {id_key!r}")
    ytid = str(ytid).strip()
    start = _as_seconds(row.get(start_key), start_key)
    end = _as_seconds(row.get(end_key), end_key)
    tkey, text = _get(row, text_keys)
    if text is None:
        raise _RowError(f"missing {' or '.join(repr(k) for k in text_keys)}")
    akey, audio = _get(row, ("audio", "audio_path", "location", "wav", "file"))
    audio_path = (
        _resolve(_as_paths(audio, akey or "audio")[0], ctx.audio_base)
        if audio is not None
        else _clip_audio(ytid, start, end, ctx)
    )
    image_keys = [
        k for k in row if isinstance(k, str) and re.fullmatch(r"(image|img)(_path)?s?(_?\d+)?", k.lower())
    ]
    images: list[str] = []
    for key in sorted(image_keys, key=lambda k: (len(k), k)):
        value = row[key]
        if value is not None and not (isinstance(value, str) and not value.strip()):
            images += _as_paths(value, key)
    image_paths = [_resolve(p, ctx.image_base) for p in images]
    if not image_paths:
        image_paths = ctx.image_index.numbered(ytid)
    if not image_paths:
        raise _RowError(
            f"no image for {ytid}: add an image_path column or put {ytid}.png / {ytid}_1.png ... in the image "
            "folder (--image-root)"
        )
    tag = (
        ytid
        if start is None
        else f"{ytid}_{_seconds_tag(start)}" + (f"_{_seconds_tag(end)}" if end is not None else "")
    )
    extra = _extra(row, (ykey, start_key, end_key, tkey, akey, *image_keys))
    extra.update(ytid=ytid, youtube_start_s=start, youtube_end_s=end)
    return TripletRecord(
        id=tag, images=image_paths, text=_as_text(text, tkey or "text"), audio=audio_path, extra=extra
    )


def _musiccaps(row: dict[str, Any], ctx: _Context) -> TripletRecord:
    return _youtube_clip(
        row,
        ctx,
        id_key="ytid",
        start_key="start_s",
        end_key="end_s",
        text_keys=("caption", "captions", "text"),
    )


def _melbench(row: dict[str, Any], ctx: _Context) -> TripletRecord:
    return _youtube_clip(
        row,
        ctx,
        id_key="youtube_video_id",
        start_key="start_second",
        end_key="end_second",
        text_keys=("annotation", "caption", "text"),
    )


_READERS = {
    "jsonl": _standard,
    "csv": _standard,
    "melfusion": _melfusion,
    "extended_musiccaps": _musiccaps,
    "melbench": _melbench,
}


def _group(records: list[TripletRecord], wheres: list[str]) -> tuple[list[TripletRecord], list[str]]:
    """Merge records of the same clip (audio, segment, text) into one with all their images."""
    out: dict[tuple[Any, ...], TripletRecord] = {}
    out_where: dict[tuple[Any, ...], str] = {}
    for record, where in zip(records, wheres):
        key = (record.audio, record.start_s, record.end_s, record.text)
        if key in out:
            merged = out[key]
            merged.images += [p for p in record.images if p not in merged.images]
        else:
            out[key] = dataclasses.replace(record, images=list(record.images), extra=dict(record.extra))
            out_where[key] = where
    return list(out.values()), list(out_where.values())


def _assign_ids(
    records: list[TripletRecord], wheres: list[str], problems: list[RowProblem], on_error: str
) -> list[TripletRecord]:
    """Explicit ids must be unique (a repeat is a row problem); missing ids become the audio stem (the
    image's without audio), with `~2`, `~3` ... on collisions."""
    seen: set[str] = set()
    kept: list[TripletRecord] = []
    explicit = {r.id for r in records if r.id}
    for record, where in zip(records, wheres):
        if record.id:
            if record.id in seen:
                _problem(problems, where, f"duplicate id {record.id!r}; ids must be unique", on_error)
                continue
        else:
            base = (record.audio.stem if record.audio is not None else record.images[0].stem) or "item"
            candidate, n = base, 1
            while candidate in seen or candidate in explicit:
                n += 1
                candidate = f"{base}~{n}"
            record.id = candidate
        seen.add(record.id)
        kept.append(record)
    return kept


def _problem(problems: list[RowProblem], where: str, reason: str, on_error: str) -> None:
    if on_error == "raise":
        raise MelfusionInputError(f"{where}: {reason}; fix the row, or read with on_error='skip' to skip it")
    problems.append(RowProblem(where, reason))


def read_manifest_with_problems(
    path: str | os.PathLike[str],
    format: str = "auto",
    *,
    audio_root: str | os.PathLike[str] | None = None,
    image_root: str | os.PathLike[str] | None = None,
    group_images: bool | None = None,
    on_error: Literal["skip", "raise"] = "skip",
    require_audio: bool = True,
    require_image: bool = True,
) -> tuple[list[TripletRecord], list[RowProblem]]:
    """Like `read_manifest`, but returns the skipped rows instead of logging them; an empty record list
    is returned (not raised) when no row is valid. ``require_image=False``: rows of the standard format
    without an image are kept (``images == []``; e.g. the prompts of a CLAP-score evaluation)."""
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    fmt = _FORMAT_ALIASES.get(format.lower(), format.lower())
    if fmt != "auto" and fmt not in FORMATS:
        raise MelfusionInputError(
            f"unknown manifest format {format!r}; choose auto or one of {', '.join(FORMATS)}"
        )
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    kind, rows = _load_rows(path)
    if fmt == "auto":
        fmt = _detect(kind, rows)
    audio_base = Path(os.path.abspath(os.path.expanduser(audio_root))) if audio_root else path.parent
    image_base = Path(os.path.abspath(os.path.expanduser(image_root))) if image_root else path.parent
    ctx = _Context(
        path=path,
        audio_base=audio_base,
        image_base=image_base,
        audio_index=_FileIndex([audio_base, audio_base / "audio"], AUDIO_EXTENSIONS),
        image_index=_FileIndex([image_base, image_base / "images"], IMAGE_EXTENSIONS),
        require_audio=require_audio,
        require_image=require_image,
    )
    reader = _READERS[fmt]
    problems: list[RowProblem] = []
    records: list[TripletRecord] = []
    wheres: list[str] = []
    for where, row in rows:
        try:
            if "__error__" in row:
                raise _RowError(row["__error__"])
            record = reader(row, ctx)
            if record.start_s is not None and record.end_s is not None and record.end_s <= record.start_s:
                raise _RowError(f"end_s ({record.end_s}) must be greater than start_s ({record.start_s})")
        except _RowError as err:
            _problem(problems, where, str(err), on_error)
            continue
        records.append(record)
        wheres.append(where)
    if group_images if group_images is not None else fmt in ("melfusion", "extended_musiccaps", "melbench"):
        records, wheres = _group(records, wheres)
    records = _assign_ids(records, wheres, problems, on_error)
    problems.sort(key=_where_order)
    return records, problems


def _where_order(problem: RowProblem) -> int:
    tail = problem.where.rsplit(":", 1)[-1]
    digits = "".join(ch for ch in tail if ch.isdigit())
    return int(digits) if digits else 0


def read_manifest(
    path: str | os.PathLike[str],
    format: str = "auto",
    *,
    audio_root: str | os.PathLike[str] | None = None,
    image_root: str | os.PathLike[str] | None = None,
    group_images: bool | None = None,
    on_error: Literal["skip", "raise"] = "skip",
    require_audio: bool = True,
) -> list[TripletRecord]:
    """Read a triplet manifest (see the module docstring for formats and the error policy).

    `format`: "auto" (extension + keys) or one of FORMATS. `audio_root` / `image_root`: base folders
    for relative paths (default: the manifest's folder). `group_images`: merge rows of the same clip
    (default: on for the MeLFusion, Extended MusicCaps and MeLBench readers). `require_audio=False`: rows of
    the standard JSONL/CSV format may leave out the audio (generation needs no reference). Skipped rows are
    logged.
    """
    records, problems = read_manifest_with_problems(
        path,
        format,
        audio_root=audio_root,
        image_root=image_root,
        group_images=group_images,
        on_error=on_error,
        require_audio=require_audio,
    )
    for problem in problems[:_MAX_LOGGED]:
        logger.warning("skipped manifest row %s", problem)
    if problems:
        logger.warning("skipped %d invalid row(s) of %s (%d kept)", len(problems), path, len(records))
    if not records:
        detail = "; ".join(str(p) for p in problems[:3]) or "the file has no rows"
        raise MelfusionInputError(
            f"manifest {path} has no valid triplet ({detail}); each row needs an image, a text and an audio path"
        )
    return records


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive (Windows)
        return str(path)


def write_manifest(path: str | os.PathLike[str], records: Iterable[TripletRecord]) -> Path:
    """Write records in the standard JSONL format, paths relative to the manifest's folder, atomically."""
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    base = path.parent
    lines = []
    for record in records:
        images = [_relative(p, base) for p in record.images]
        obj: dict[str, Any] = {
            k: v
            for k, v in record.extra.items()
            if k not in ("id", "image", "text", "audio", "start_s", "end_s")
        }
        obj.update(id=record.id, image=images[0] if len(images) == 1 else images, text=record.text)
        obj["audio"] = _relative(record.audio, base)
        if record.start_s is not None:
            obj["start_s"] = record.start_s
        if record.end_s is not None:
            obj["end_s"] = record.end_s
        try:
            lines.append(json.dumps(obj, ensure_ascii=False, default=os.fspath))
        except (TypeError, ValueError) as err:
            raise MelfusionInputError(
                f"record {record.id!r} has extra data that is not JSON ({err})"
            ) from None
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


# ----------------------------------------------------------------------------------------- image folders
def read_prompts_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Per-image prompts for a folder of images: a JSON object ``{"a.png": "calm piano", ...}``, or a text
    file with one ``<image file name><TAB><prompt>`` per line (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise MelfusionInputError(f"could not read the prompts file {path} ({err})") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as err:
            raise MelfusionInputError(f"{path} is not valid JSON ({err})") from None
        bad = [k for k, v in data.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            raise MelfusionInputError(f"{path}: the prompt for {bad[0]!r} is not a non-empty string")
        return {str(k): v.strip() for k, v in data.items()}
    prompts: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, prompt = line.partition("\t")
        if not sep or not name.strip() or not prompt.strip():
            raise MelfusionInputError(
                f"{path}:{n}: expected '<image file name><TAB><prompt>', got {line[:60]!r} (or give a JSON "
                'object {"a.png": "calm piano"})'
            )
        prompts[name.strip()] = prompt.strip()
    return prompts


def read_image_dir(
    folder: str | os.PathLike[str], text: str | None = None, prompts: dict[str, str] | None = None
) -> list[TripletRecord]:
    """One record per image file directly in ``folder`` (IMAGE_EXTENSIONS, sorted by name), id = the file
    name's stem (the whole name when two stems clash), text = ``prompts[file name]`` or else ``text``. No
    reference audio. Images named in ``prompts`` but missing, or images with no prompt, are errors."""
    folder = Path(os.path.abspath(os.path.expanduser(os.fspath(folder))))
    if not folder.is_dir():
        raise MelfusionInputError(f"--image-dir {folder} is not a folder")
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
        key=lambda p: p.name,
    )
    if not files:
        raise MelfusionInputError(
            f"no image in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)} files directly inside it)"
        )
    prompts = prompts or {}
    unknown = sorted(set(prompts) - {p.name for p in files})
    if unknown:
        raise MelfusionInputError(
            f"the prompts file names {len(unknown)} image(s) not in {folder}, e.g. {unknown[0]!r}"
        )
    missing = [p.name for p in files if p.name not in prompts and not (text and text.strip())]
    if missing:
        raise MelfusionInputError(
            f"{len(missing)} image(s) have no prompt, e.g. {missing[0]!r}; give --text for them (one prompt "
            "for all) or list them in the prompts file"
        )
    stems = [p.stem.casefold() for p in files]
    return [
        TripletRecord(
            id=p.stem if stems.count(p.stem.casefold()) == 1 else p.name,
            images=[p],
            text=prompts.get(p.name, text or "").strip(),
            audio=None,
        )
        for p in files
    ]
