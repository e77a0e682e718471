"""The prompts and images that go with each clip, for the metrics that need them (CLAP score, IMSM, IBSc).

Manifests are read by the project's reader (`melfusion.data.manifest`: the standard JSONL/CSV triplets and
the MeLFusion, Extended MusicCaps and MeLBench files), here with neither reference audio nor images
required. Each row is keyed by the stem of its audio file name (its `id` also matches; a row without audio is
keyed by its id), so it pairs with generated and reference files of the same name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from melfusion.data.manifest import read_manifest_with_problems
from melfusion.errors import MelfusionInputError
from melfusion.evaluation.pairing import pair_key


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


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a manifest into rows keyed by audio stem (see the module docstring)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise MelfusionInputError(f"manifest {p} does not exist")
    records, problems = read_manifest_with_problems(p, require_audio=False, require_image=False)
    if not records:
        reason = f" ({problems[0]})" if problems else ""
        raise MelfusionInputError(f"manifest {p} has no usable rows{reason}")
    rows: dict[str, ManifestRow] = {}
    aliases: dict[str, str] = {}
    for rec in records:
        key = pair_key(rec.audio.name) if rec.audio is not None else pair_key(rec.id)
        if key in rows:
            raise MelfusionInputError(f"manifest {p} lists {key!r} twice")
        rows[key] = ManifestRow(key=key, text=rec.text, image=rec.images[0] if rec.images else None)
        if rec.id and rec.id != key:
            aliases[rec.id] = key
    return Manifest(path=p, rows=rows, aliases={a: k for a, k in aliases.items() if a not in rows})
