"""Read the images and texts that go with each clip from a triplet manifest (CSV, TSV, JSONL or JSON).

The project's triplet reader (`melfusion.data.manifest`: its standard format and the MeLFusion,
Extended MusicCaps and MeLBench files) is used when it reads the file; a manifest it rejects (e.g. one
with prompts but no images, enough for the CLAP score) is read here with the simple column rules below.
One row per triplet. The row's key is the stem of its audio file name (its `id` also matches), so it
pairs with generated and reference files of the same name. Recognised columns (first present wins):
    audio:  audio, audio_path, location, music, music_path, file, filename, name, id
    text:   text, prompt, caption, captions, description, annotation
    image:  image, image_path, img_path, img, artwork
Relative image paths are resolved against the manifest's folder.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from melfusion.errors import MelfusionInputError
from melfusion.evaluation.pairing import pair_key

AUDIO_COLUMNS = ("audio", "audio_path", "location", "music", "music_path", "file", "filename", "name", "id")
TEXT_COLUMNS = ("text", "prompt", "caption", "captions", "description", "annotation")
IMAGE_COLUMNS = ("image", "image_path", "img_path", "img", "artwork")


@dataclass(frozen=True)
class ManifestRow:
    key: str
    text: str | None = None
    image: Path | None = None


@dataclass(frozen=True)
class Manifest:
    path: Path
    rows: dict[str, ManifestRow]
    aliases: dict[str, str] = field(default_factory=dict)  # other names (ids) → row key

    def lookup(self, key: str) -> ManifestRow | None:
        """The row for a file stem: by audio stem, else by id."""
        row = self.rows.get(key)
        if row is None and key in self.aliases:
            row = self.rows[self.aliases[key]]
        return row

    @property
    def has_texts(self) -> bool:
        return any(r.text for r in self.rows.values())

    @property
    def has_images(self) -> bool:
        return any(r.image is not None for r in self.rows.values())


def _records(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise MelfusionInputError(f"cannot read manifest {path}: {err.strerror}") from None
    try:
        if suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if suffix == ".json":
            data = json.loads(text)
            return list(data.values()) if isinstance(data, dict) else list(data)
    except json.JSONDecodeError as err:
        raise MelfusionInputError(f"manifest {path} is not valid JSON: {err}") from None
    if suffix in (".csv", ".tsv"):
        return list(csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ","))
    raise MelfusionInputError(f"manifest {path} must be .csv, .tsv, .jsonl or .json")


def _first(record: dict[str, Any], columns: tuple[str, ...]) -> Any:
    lowered = {str(k).strip().lower(): v for k, v in record.items()}
    for c in columns:
        value = lowered.get(c)
        if value not in (None, ""):
            return value
    return None


def _from_project_reader(p: Path) -> Manifest | None:
    """Rows through melfusion.data.manifest, or None when it is unavailable or finds no full triplet."""
    try:
        from melfusion.data.manifest import read_manifest_with_problems
    except ImportError:
        return None
    try:
        records, _ = read_manifest_with_problems(p)
    except MelfusionInputError:
        return None
    if not records:
        return None
    rows: dict[str, ManifestRow] = {}
    aliases: dict[str, str] = {}
    for rec in records:
        key = pair_key(rec.audio.name)
        if key in rows:
            raise MelfusionInputError(f"manifest {p} lists audio {rec.audio.name!r} twice")
        rows[key] = ManifestRow(key=key, text=rec.text, image=rec.images[0] if rec.images else None)
        if rec.id and rec.id != key:
            aliases[rec.id] = key
    aliases = {a: k for a, k in aliases.items() if a not in rows}
    return Manifest(path=p, rows=rows, aliases=aliases)


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a manifest into rows keyed by audio stem (see the module docstring)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise MelfusionInputError(f"manifest {p} does not exist")
    project = _from_project_reader(p)
    if project is not None:
        return project
    rows: dict[str, ManifestRow] = {}
    aliases: dict[str, str] = {}
    for i, record in enumerate(_records(p), start=1):
        if not isinstance(record, dict):
            raise MelfusionInputError(f"manifest {p} row {i} is not an object")
        audio = _first(record, AUDIO_COLUMNS)
        if audio is None:
            raise MelfusionInputError(
                f"manifest {p} row {i} has no audio column ({', '.join(AUDIO_COLUMNS)})"
            )
        key = pair_key(Path(str(audio)).name)
        text = _first(record, TEXT_COLUMNS)
        image = _first(record, IMAGE_COLUMNS)
        image_path = None
        if image is not None:
            image_path = Path(str(image)).expanduser()
            if not image_path.is_absolute():
                image_path = p.parent / image_path
        if key in rows:
            raise MelfusionInputError(f"manifest {p} lists {key!r} twice (row {i})")
        rows[key] = ManifestRow(key=key, text=str(text) if text is not None else None, image=image_path)
        rid = record.get("id")
        if rid not in (None, "") and str(rid) != key:
            aliases[str(rid)] = key
    if not rows:
        raise MelfusionInputError(f"manifest {p} has no rows")
    return Manifest(path=p, rows=rows, aliases={a: k for a, k in aliases.items() if a not in rows})
