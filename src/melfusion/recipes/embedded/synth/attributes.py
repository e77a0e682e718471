"""The attribute space of the synthetic corpus, how one item's attributes are drawn, and the split.

Which modality carries what (DESIGN.md §4):
- text: instrument (hence its family), genre, energy (dynamics);
- image: mode (major/minor) and tempo (class and, through the colours, roughly the bpm) — following
  Palmer et al., PNAS 2013: faster / major ↔ lighter, more saturated, yellower colours;
- neither: the key's tonic (a free variable, labelled in the manifest).

All attributes are drawn independently and uniformly, so no text word predicts mode or tempo.

Split: a 4-tuple (genre, instrument, mode, tempo class) is a *combination*. Test and validation items
use combinations never seen in training: for each (genre, instrument) pair, with probability
`test_pair_fraction` one of its four (mode, tempo class) cells is held out for test, and with
probability `val_pair_fraction` another one for validation. Every (genre, instrument) pair therefore
keeps >= 2 of its mood cells in training, and every single value is seen in training. The choice
depends only on `split_seed`, not on the generation seed, so corpora made with different seeds share
one split definition.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MODES = ("major", "minor")
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
ENERGIES = ("low", "medium", "high")

# Tempo classes: two well separated bpm ranges, so an octave error of a tempo estimate shows up as a
# class error (doubling 64-88 lands in 128-176, halving 120-152 in 60-76) and the class boundary
# (the geometric middle of the gap) is never near a generated tempo.
TEMPO_RANGES: dict[str, tuple[int, int]] = {"slow": (64, 88), "fast": (120, 152)}
TEMPO_CLASSES = tuple(TEMPO_RANGES)
TEMPO_CLASS_BOUNDARY_BPM = 104.0

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Instrument:
    """A lead instrument: it plays the melody and the chords of the piece.

    `program`: General MIDI program number, 0-based (0 = Acoustic Grand Piano). `family`: the
    instrument-family label the classifier probe predicts (GM family names, lower case). `low`/`high`:
    MIDI note range used for the melody. `names`: ways the text may name it (the first is canonical).
    """

    name: str
    family: str
    program: int
    low: int
    high: int
    names: tuple[str, ...]
    sustained: bool  # bowed / blown / organ: held notes; otherwise plucked / struck (decaying)


INSTRUMENTS: dict[str, Instrument] = {
    i.name: i
    for i in (
        Instrument("piano", "keys", 0, 55, 84, ("piano", "acoustic piano", "grand piano"), False),
        Instrument(
            "electric piano",
            "keys",
            4,
            55,
            81,
            ("electric piano", "Rhodes-style electric piano", "e-piano"),
            False,
        ),
        Instrument("organ", "organ", 16, 55, 81, ("organ", "Hammond-style organ", "drawbar organ"), True),
        Instrument(
            "acoustic guitar",
            "guitar",
            25,
            52,
            79,
            ("acoustic guitar", "steel-string guitar", "acoustic six-string"),
            False,
        ),
        Instrument(
            "electric guitar",
            "guitar",
            27,
            52,
            81,
            ("electric guitar", "clean electric guitar", "clean-toned guitar"),
            False,
        ),
        Instrument("violin", "strings", 40, 60, 88, ("violin", "solo violin", "fiddle"), True),
        Instrument("cello", "strings", 42, 43, 69, ("cello", "solo cello", "violoncello"), True),
        Instrument(
            "string ensemble",
            "strings",
            48,
            55,
            84,
            ("string ensemble", "string section", "orchestral strings"),
            True,
        ),
        Instrument("trumpet", "brass", 56, 58, 82, ("trumpet", "solo trumpet", "valve trumpet"), True),
        Instrument(
            "brass section", "brass", 61, 53, 79, ("brass section", "brass ensemble", "horn section"), True
        ),
        Instrument("saxophone", "reed", 65, 56, 80, ("saxophone", "alto saxophone", "alto sax"), True),
        Instrument("clarinet", "reed", 71, 55, 84, ("clarinet", "solo clarinet", "soprano clarinet"), True),
        Instrument("flute", "pipe", 73, 64, 93, ("flute", "solo flute", "concert flute"), True),
        Instrument(
            "synth lead", "synth", 81, 57, 84, ("synth lead", "sawtooth synth lead", "lead synthesizer"), True
        ),
        Instrument(
            "synth pad", "synth", 89, 53, 79, ("synth pad", "warm synth pad", "pad synthesizer"), True
        ),
        Instrument("marimba", "mallet", 12, 57, 88, ("marimba", "wooden marimba", "marimba mallets"), False),
        Instrument("vibraphone", "mallet", 11, 57, 86, ("vibraphone", "vibes", "vibraphone mallets"), False),
    )
}
INSTRUMENT_NAMES = tuple(INSTRUMENTS)
FAMILIES = tuple(dict.fromkeys(i.family for i in INSTRUMENTS.values()))

GENRES = ("pop", "rock", "jazz", "electronic", "folk", "classical", "hip hop", "reggae")


@dataclass(frozen=True)
class Attributes:
    """What one synthetic item is made from. `key` is the tonic's pitch class name."""

    genre: str
    instrument: str
    bpm: int
    key: str
    mode: str
    energy: str

    @property
    def family(self) -> str:
        return INSTRUMENTS[self.instrument].family

    @property
    def program(self) -> int:
        return INSTRUMENTS[self.instrument].program

    @property
    def tempo_class(self) -> str:
        return tempo_class(self.bpm)

    @property
    def tonic(self) -> int:
        return PITCH_CLASSES.index(self.key)

    @property
    def combination(self) -> tuple[str, str, str, str]:
        """(genre, instrument, mode, tempo class): the unit the split holds out."""
        return (self.genre, self.instrument, self.mode, self.tempo_class)

    def to_dict(self) -> dict[str, Any]:
        """Manifest labels: the fields plus family, GM program and tempo class."""
        d = asdict(self)
        d.update(family=self.family, gm_program=self.program, tempo_class=self.tempo_class)
        return d

    def __post_init__(self) -> None:
        if self.genre not in GENRES:
            raise ValueError(f"unknown genre {self.genre!r}; choose from {GENRES}")
        if self.instrument not in INSTRUMENTS:
            raise ValueError(f"unknown instrument {self.instrument!r}; choose from {INSTRUMENT_NAMES}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.key not in PITCH_CLASSES:
            raise ValueError(f"key must be one of {PITCH_CLASSES}, got {self.key!r}")
        if self.energy not in ENERGIES:
            raise ValueError(f"energy must be one of {ENERGIES}, got {self.energy!r}")
        if not 30 <= self.bpm <= 300:
            raise ValueError(f"bpm must be in [30, 300], got {self.bpm}")


def tempo_class(bpm: float) -> str:
    """'slow' below TEMPO_CLASS_BOUNDARY_BPM (104), else 'fast'."""
    return "slow" if bpm < TEMPO_CLASS_BOUNDARY_BPM else "fast"


def sample_attributes(rng: np.random.Generator, tonics: tuple[str, ...] | None = None) -> Attributes:
    """Each attribute independently and uniformly (bpm uniform within its class's range). `tonics`
    restricts the key to those pitch classes (drawn last, so every other attribute is the same as without
    it)."""
    genre = GENRES[rng.integers(len(GENRES))]
    instrument = INSTRUMENT_NAMES[rng.integers(len(INSTRUMENT_NAMES))]
    mode = MODES[rng.integers(len(MODES))]
    tclass = TEMPO_CLASSES[rng.integers(len(TEMPO_CLASSES))]
    lo, hi = TEMPO_RANGES[tclass]
    bpm = int(rng.integers(lo, hi + 1))
    key = PITCH_CLASSES[rng.integers(12)]
    energy = ENERGIES[rng.integers(len(ENERGIES))]
    if tonics is not None:  # a bad name fails in Attributes' own check
        key = tonics[rng.integers(len(tonics))]
    return Attributes(genre=genre, instrument=instrument, bpm=bpm, key=key, mode=mode, energy=energy)


# ------------------------------------------------------------------------------------------- split

MOOD_CELLS = tuple((m, t) for m in MODES for t in TEMPO_CLASSES)


def _pair_uniforms(split_seed: int, genre: str, instrument: str) -> np.ndarray:
    digest = hashlib.sha256(f"{split_seed}|{genre}|{instrument}".encode()).digest()
    words = np.frombuffer(digest[:16], dtype="<u4").astype(np.float64)
    return words / 2.0**32  # 4 uniforms in [0, 1)


def held_out_combinations(
    split_seed: int = 0, test_pair_fraction: float = 0.5, val_pair_fraction: float = 0.25
) -> dict[tuple[str, str, str, str], str]:
    """{combination: 'test' | 'val'} for the held-out combinations (the rest are 'train')."""
    if not (0.0 <= test_pair_fraction <= 1.0 and 0.0 <= val_pair_fraction <= 1.0):
        raise ValueError("pair fractions must be in [0, 1]")
    out: dict[tuple[str, str, str, str], str] = {}
    for genre in GENRES:
        for instrument in INSTRUMENT_NAMES:
            u = _pair_uniforms(split_seed, genre, instrument)
            cells = list(MOOD_CELLS)
            if u[0] < test_pair_fraction:
                mode, tclass = cells.pop(int(u[1] * len(cells)))
                out[(genre, instrument, mode, tclass)] = "test"
            if u[2] < val_pair_fraction:
                mode, tclass = cells.pop(int(u[3] * len(cells)))
                out[(genre, instrument, mode, tclass)] = "val"
    return out


def split_of(attributes: Attributes, held_out: dict[tuple[str, str, str, str], str]) -> str:
    """'train', 'val' or 'test' for an item, from its combination."""
    return held_out.get(attributes.combination, "train")
