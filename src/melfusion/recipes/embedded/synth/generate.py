"""The synthetic triplet corpus: `generate_corpus(out_dir, n, SynthConfig(...))`.

Layout of `out_dir`::

    synth_config.json           the options (checked on resume) and the split counts
    audio/000000.wav ...        mono clips, `seconds` long at `sample_rate`
    images/000000.png ...       `image_size` square RGB scenes
    all.jsonl train.jsonl val.jsonl test.jsonl   standard triplet manifests (`write_manifest`)

Every item is a pure function of (seed, index): its attributes, score, text, image and noise come from
separate random streams `SeedSequence(seed, spawn_key=(index, stream))`, so items can be made in any
order, in parallel, and resumed; changing one stream's code leaves the others alone. Files are written
atomically (image first, then audio): an item whose audio and image both exist is complete and is
skipped on a rerun. The manifests are rewritten at the end from (seed, index) alone.

FluidSynth renders fixed groups of GROUP_SIZE consecutive items in one run; a clip depends only on the
items before it in its group, so reruns and resumes give the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from melfusion.data.manifest import TripletRecord, write_manifest
from melfusion.errors import MelfusionInputError
from melfusion.recipes.embedded.synth.attributes import (
    PITCH_CLASSES,
    SPLITS,
    Attributes,
    held_out_combinations,
    sample_attributes,
    split_of,
)
from melfusion.recipes.embedded.synth.images import render_image
from melfusion.recipes.embedded.synth.numpy_render import render_numpy
from melfusion.recipes.embedded.synth.score import Score, compose
from melfusion.recipes.embedded.synth.text import describe
from melfusion.utils.files import atomic_path, atomic_write_json

GENERATOR_VERSION = 1
CONFIG_FILE = "synth_config.json"
ALL_MANIFEST = "all.jsonl"
GROUP_SIZE = 32
RENDERERS = ("numpy", "fluidsynth")
AUDIO_FORMATS = ("wav", "flac")
_STREAMS = ("attributes", "score", "text", "image", "audio")


@dataclass(frozen=True)
class SynthConfig:
    """Options of a corpus. `renderer`: 'numpy' or 'fluidsynth' (see `resolve_renderer` for 'auto');
    `soundfont`: the .sf2 FluidSynth uses (None: found automatically). Split options: see
    `melfusion.recipes.embedded.synth.attributes.held_out_combinations`."""

    seed: int = 0
    seconds: float = 5.12
    sample_rate: int = 16000
    image_size: int = 64
    renderer: str = "numpy"
    soundfont: str | None = None
    audio_format: str = "wav"
    split_seed: int = 0
    test_pair_fraction: float = 0.5
    val_pair_fraction: float = 0.25
    tonic_in_text: bool = False  # descriptions also name the key's tonic (never the mode); see text.describe
    # Keys drawn only from these tonics (None: all 12). One tonic makes the mode a fixed pitch set (e.g. E vs
    # E♭ over C) instead of a relation to a random tonic; the embedded recipe uses ("C",), see README.
    tonics: tuple[str, ...] | None = None

    def validate(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise MelfusionInputError(f"--seed must be an integer >= 0, got {self.seed!r}")
        if not 0.5 <= self.seconds <= 60.0:
            raise MelfusionInputError(f"--seconds must be between 0.5 and 60, got {self.seconds}")
        if not 8000 <= self.sample_rate <= 96000:
            raise MelfusionInputError(
                f"--sample-rate must be between 8000 and 96000 Hz, got {self.sample_rate}"
            )
        if not 8 <= self.image_size <= 2048:
            raise MelfusionInputError(
                f"--image-size must be between 8 and 2048 pixels, got {self.image_size}"
            )
        if self.renderer not in RENDERERS:
            raise MelfusionInputError(f"renderer must be one of {RENDERERS}, got {self.renderer!r}")
        if self.audio_format not in AUDIO_FORMATS:
            raise MelfusionInputError(
                f"audio format must be one of {AUDIO_FORMATS}, got {self.audio_format!r}"
            )
        if not (0 <= self.test_pair_fraction <= 1 and 0 <= self.val_pair_fraction <= 1):
            raise MelfusionInputError("split pair fractions must be in [0, 1]")
        if self.tonics is not None:
            bad = [t for t in self.tonics if t not in PITCH_CLASSES]
            if not self.tonics or bad:
                raise MelfusionInputError(
                    f"--tonics takes comma-separated pitch classes from {', '.join(PITCH_CLASSES)}; "
                    f"got {','.join(self.tonics) or 'nothing'}"
                )

    def to_json(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        if fields["tonics"] is not None:
            fields["tonics"] = list(fields["tonics"])  # as JSON reads it back (resume compares the two)
        return {"generator_version": GENERATOR_VERSION, **fields}


def resolve_renderer(renderer: str, soundfont: str | None = None) -> tuple[str, str | None]:
    """('numpy' | 'fluidsynth', soundfont path or None). 'auto' picks fluidsynth when the program and a
    GM soundfont are installed; asking for 'fluidsynth' without them is an error naming the fix."""
    from melfusion.recipes.embedded.synth.fluidsynth import INSTALL_HINT, find_fluidsynth, find_soundfont

    if renderer not in ("auto", *RENDERERS):
        raise MelfusionInputError(f"--renderer must be auto, numpy or fluidsynth, got {renderer!r}")
    if renderer == "numpy":
        return "numpy", None
    sf2 = Path(soundfont) if soundfont else find_soundfont()
    if soundfont and not Path(soundfont).is_file():
        raise MelfusionInputError(f"soundfont {soundfont} does not exist")
    if find_fluidsynth() and sf2 is not None:
        return "fluidsynth", str(Path(sf2).resolve())
    if renderer == "fluidsynth":
        what = "the fluidsynth program" if find_fluidsynth() is None else "a General-MIDI soundfont"
        raise MelfusionInputError(f"--renderer fluidsynth needs {what}; {INSTALL_HINT}")
    return "numpy", None


def item_rng(seed: int, index: int, stream: str) -> np.random.Generator:
    """The random stream `stream` ('attributes', 'score', 'text', 'image', 'audio') of item `index`."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, _STREAMS.index(stream))))


@dataclass
class SynthItem:
    index: int
    id: str
    attributes: Attributes
    text: str
    split: str

    def labels(self) -> dict[str, Any]:
        return {**self.attributes.to_dict(), "split": self.split, "index": self.index}


def item_id(index: int) -> str:
    return f"{index:06d}"


def make_item(config: SynthConfig, index: int, held_out: dict | None = None) -> SynthItem:
    """Attributes, text and split of item `index` (cheap: nothing is rendered)."""
    if held_out is None:
        held_out = held_out_combinations(
            config.split_seed, config.test_pair_fraction, config.val_pair_fraction
        )
    attributes = sample_attributes(item_rng(config.seed, index, "attributes"), config.tonics)
    text = describe(attributes, item_rng(config.seed, index, "text"), tonic=config.tonic_in_text)
    return SynthItem(index, item_id(index), attributes, text, split_of(attributes, held_out))


def item_score(config: SynthConfig, item: SynthItem) -> Score:
    return compose(item.attributes, config.seconds, item_rng(config.seed, item.index, "score"))


def item_image(config: SynthConfig, item: SynthItem) -> Image.Image:
    return render_image(item.attributes, config.image_size, item_rng(config.seed, item.index, "image"))


def render_items_audio(config: SynthConfig, items: list[SynthItem]) -> list[np.ndarray]:
    """float32 clips of `items` (for fluidsynth: one run, in the given order)."""
    scores = [item_score(config, item) for item in items]
    if config.renderer == "fluidsynth":
        from melfusion.recipes.embedded.synth.fluidsynth import render_fluidsynth_batch

        return render_fluidsynth_batch(scores, config.sample_rate, soundfont=config.soundfont)
    return [
        render_numpy(score, config.sample_rate, item_rng(config.seed, item.index, "audio"))
        for score, item in zip(scores, items)
    ]


def item_paths(out_dir: Path, item: SynthItem | int, audio_format: str = "wav") -> tuple[Path, Path]:
    """(audio path, image path) of an item in a corpus folder."""
    iid = item.id if isinstance(item, SynthItem) else item_id(item)
    return out_dir / "audio" / f"{iid}.{audio_format}", out_dir / "images" / f"{iid}.png"


def _is_done(out_dir: Path, index: int, audio_format: str) -> bool:
    audio, image = item_paths(out_dir, index, audio_format)
    return audio.is_file() and image.is_file()


def _save_png(path: Path, image: Image.Image) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _render_group(config_json: dict[str, Any], out_dir: str, indices: list[int], pending: list[int]) -> int:
    """Write the `pending` items of one group; returns how many were written. (Runs in workers too.)"""
    from melfusion.audio.io import save_audio

    config = SynthConfig(**{k: v for k, v in config_json.items() if k != "generator_version"})
    root = Path(out_dir)
    held_out = held_out_combinations(config.split_seed, config.test_pair_fraction, config.val_pair_fraction)
    pending_set = set(pending)
    if config.renderer == "fluidsynth":  # the group's prefix up to its last pending item, in order
        render = [i for i in indices if i <= max(pending)]
    else:
        render = sorted(pending_set)
    items = [make_item(config, i, held_out) for i in render]
    clips = render_items_audio(config, items)
    for item, clip in zip(items, clips):
        if item.index not in pending_set:
            continue
        audio_path, image_path = item_paths(root, item, config.audio_format)
        _save_png(image_path, item_image(config, item))
        save_audio(audio_path, clip, config.sample_rate)
    return len(pending_set)


@dataclass
class SynthResult:
    out_dir: Path
    num_items: int
    written: int
    skipped: int
    seconds: float
    renderer: str
    split_counts: dict[str, int] = field(default_factory=dict)
    manifests: dict[str, Path] = field(default_factory=dict)

    @property
    def clips_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 and self.written else 0.0


def _check_folder(out_dir: Path, config: SynthConfig) -> None:
    cfg_path = out_dir / CONFIG_FILE
    if cfg_path.is_file():
        try:
            old = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise MelfusionInputError(
                f"{cfg_path} is unreadable ({err}); remove it or use a new folder"
            ) from None
        new = config.to_json()
        defaults = dataclasses.asdict(SynthConfig())  # options added later read as their default
        there = {k: old.get(k, defaults.get(k)) for k in new}
        diffs = [k for k in new if there[k] != new[k]]
        if diffs:
            shown = ", ".join(f"{k}: {there[k]!r} there, {new[k]!r} now" for k in diffs)
            raise MelfusionInputError(
                f"{out_dir} holds a corpus made with other options ({shown}); rerun with the same options to "
                "resume or extend it, or choose a new --out folder"
            )
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise MelfusionInputError(
            f"{out_dir} is not empty and holds no {CONFIG_FILE}; choose a new or empty --out folder"
        )


def write_manifests(
    out_dir: str | os.PathLike[str], n: int, config: SynthConfig
) -> tuple[dict[str, Path], dict[str, int]]:
    """(Re)write all.jsonl and the split manifests for items 0..n-1: ({name: path}, {split: count})."""
    out_dir = Path(out_dir)
    held_out = held_out_combinations(config.split_seed, config.test_pair_fraction, config.val_pair_fraction)
    by_split: dict[str, list[TripletRecord]] = {s: [] for s in SPLITS}
    records = []
    for index in range(n):
        item = make_item(config, index, held_out)
        audio, image = item_paths(out_dir, item, config.audio_format)
        record = TripletRecord(
            id=item.id,
            images=[image],
            text=item.text,
            audio=audio,
            extra={**item.labels(), "renderer": config.renderer},
        )
        records.append(record)
        by_split[item.split].append(record)
    paths = {"all": write_manifest(out_dir / ALL_MANIFEST, records)}
    for split, recs in by_split.items():
        paths[split] = write_manifest(out_dir / f"{split}.jsonl", recs)
    return paths, {split: len(recs) for split, recs in by_split.items()}


def generate_corpus(
    out_dir: str | os.PathLike[str],
    n: int,
    config: SynthConfig | None = None,
    *,
    workers: int = 1,
    progress: bool = True,
) -> SynthResult:
    """Make (or resume, or extend) a corpus of `n` items in `out_dir`; see the module doc."""
    from tqdm.auto import tqdm

    config = config or SynthConfig()
    config.validate()
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MelfusionInputError(f"--n must be a positive integer, got {n!r}")
    if workers < 1:
        raise MelfusionInputError(f"--workers must be >= 1, got {workers}")
    out_dir = Path(os.path.abspath(os.path.expanduser(os.fspath(out_dir))))
    _check_folder(out_dir, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / CONFIG_FILE, config.to_json())

    groups: list[tuple[list[int], list[int]]] = []
    skipped = 0
    for start in range(0, n, GROUP_SIZE):
        indices = list(range(start, min(n, start + GROUP_SIZE)))
        pending = [i for i in indices if not _is_done(out_dir, i, config.audio_format)]
        skipped += len(indices) - len(pending)
        if pending:
            groups.append((indices, pending))

    t0 = time.perf_counter()
    written = 0
    bar = tqdm(total=n, initial=skipped, unit="clip", desc="synth", disable=not progress, dynamic_ncols=True)
    try:
        if workers == 1 or len(groups) <= 1:
            for indices, pending in groups:
                written += _render_group(config.to_json(), str(out_dir), indices, pending)
                bar.update(len(pending))
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                futures = [
                    pool.submit(_render_group, config.to_json(), str(out_dir), indices, pending)
                    for indices, pending in groups
                ]
                for future in as_completed(futures):
                    count = future.result()
                    written += count
                    bar.update(count)
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0

    manifests, counts = write_manifests(out_dir, n, config)
    atomic_write_json(out_dir / CONFIG_FILE, {**config.to_json(), "num_items": n, "split_counts": counts})
    return SynthResult(out_dir, n, written, skipped, elapsed, config.renderer, counts, manifests)
