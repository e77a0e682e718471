"""Scores from attributes: a chord progression in the key and mode, a melody, a bass line and drums,
laid out by the genre's pattern. Times are in beats (4/4); `Score.seconds_per_beat` converts.

The music is written so the probes can read the labels back: the progression starts on the tonic
chord and returns to it, strong beats carry chord tones, the bass plays chord roots on the chord
changes, and the drums (or, without drums, the bass and the chords) accent every beat more than its
subdivisions.
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from melfusion.recipes.embedded.synth.attributes import INSTRUMENTS, Attributes

STEPS_PER_BEAT = 4  # patterns are written on a 16th-note grid, 16 steps per 4/4 bar
BEATS_PER_BAR = 4

# General MIDI percussion keys (channel 10).
DRUM_KEYS = {
    "kick": 36,
    "rim": 37,
    "snare": 38,
    "clap": 39,
    "hat": 42,
    "pedal": 44,
    "ohat": 46,
    "crash": 49,
    "ride": 51,
    "shaker": 70,
}

# Scale steps (semitones above the tonic) and triads by scale degree (0-based).
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}

# Progressions as scale degrees; every one starts on the tonic chord. Chosen so that the ~3 chords a
# 5 s excerpt holds keep a clear key: excerpts such as I-vi-IV or i-iv-V read as the relative or the
# subdominant key under the Krumhansl-Kessler profiles and are left out.
PROGRESSIONS = {
    "major": (
        (0, 3, 4, 0),
        (0, 5, 4, 0),
        (0, 4, 3, 0),
        (0, 3, 0, 4),
        (0, 4, 5, 3),
        (0, 5, 4, 3),
        (0, 3, 4, 5),
    ),
    "minor": (
        (0, 5, 4, 0),
        (0, 5, 0, 4),
        (0, 5, 6, 4),
        (0, 5, 3, 4),
        (0, 3, 0, 4),
        (0, 6, 5, 4),
        (0, 6, 5, 0),
    ),
}


@dataclass(frozen=True)
class Note:
    """`start`, `duration` in beats; `pitch` a MIDI note (for drums, a GM percussion key)."""

    start: float
    duration: float
    pitch: int
    velocity: int


@dataclass
class Track:
    """One part. `program`: GM program (0-based; ignored on the drum channel 9). `timbre`: what the numpy
    synthesiser plays it with (an instrument name, a bass kind, or 'drums')."""

    name: str
    program: int
    channel: int
    timbre: str
    notes: list[Note] = field(default_factory=list)


@dataclass
class Score:
    bpm: float
    seconds: float
    tracks: list[Track]

    @property
    def seconds_per_beat(self) -> float:
        return 60.0 / self.bpm

    @property
    def beats(self) -> float:
        return self.seconds / self.seconds_per_beat


@dataclass(frozen=True)
class GenreStyle:
    """A genre's patterns on the 16-step bar grid. Drum rows: 'x' loud, 'o' soft, '.' none. `bass`: R root,
    F fifth, O octave, W walking (a chord tone or a step toward the next root). `comp`: 'x' strike the
    chord, 'a' one chord tone of an arpeggio. `drums_by_energy`: which rows play at each energy."""

    drums: dict[str, str]
    drums_by_energy: dict[str, tuple[str, ...]]
    bass: str
    bass_kind: str
    bass_program: int
    comp: str
    comp_gate: float  # fraction of the time to the next strike a chord is held
    swing: float  # delay of the off-beat 8th as a fraction of a beat (1/6 = triplet swing)
    sevenths: bool
    melody_density: float  # probability of splitting a beat into 8ths at medium energy
    by_tempo: dict[str, dict[str, Any]] = field(default_factory=dict)  # per tempo class: fields replaced


GENRE_STYLES: dict[str, GenreStyle] = {
    "pop": GenreStyle(
        drums={
            "kick": "x.......x.o.....",
            "snare": "....x.......x...",
            "hat": "x.o.x.o.x.o.x.o.",
            "crash": "x...............",
        },
        drums_by_energy={
            "low": ("kick", "hat"),
            "medium": ("kick", "snare", "hat"),
            "high": ("kick", "snare", "hat", "crash"),
        },
        bass="R...R...R...R.F.",
        bass_kind="electric bass",
        bass_program=33,
        comp="x...x...x...x...",
        comp_gate=0.95,
        swing=0.0,
        sevenths=False,
        melody_density=0.35,
    ),
    "rock": GenreStyle(
        drums={
            "kick": "x.....o.x.......",
            "snare": "....x.......x...",
            "hat": "x.o.x.o.x.o.x.o.",
            "crash": "x...............",
        },
        drums_by_energy={
            "low": ("kick", "snare"),
            "medium": ("kick", "snare", "hat"),
            "high": ("kick", "snare", "hat", "crash"),
        },
        # 8th-note hats over quarter-note chords and bass (8th-note chugging would blur the beat level)
        bass="R...R...R...R.R.",
        bass_kind="electric bass",
        bass_program=34,
        comp="x...x...x...x...",
        comp_gate=0.85,
        swing=0.0,
        sevenths=False,
        melody_density=0.45,
        by_tempo={"slow": {"bass": "R...R...R...R...", "comp_gate": 0.95}},  # a ballad
    ),
    "jazz": GenreStyle(
        drums={"ride": "x...x.o.x...x.o.", "pedal": "....x.......x...", "kick": "o.......o......."},
        drums_by_energy={
            "low": ("ride", "pedal"),
            "medium": ("ride", "pedal", "kick"),
            "high": ("ride", "pedal", "kick"),
        },
        bass="W...W...W...W...",
        bass_kind="acoustic bass",
        bass_program=32,
        comp="x.....x.........",
        comp_gate=0.5,
        swing=1.0 / 6.0,
        sevenths=True,
        melody_density=0.5,
        # fast: four-to-the-bar comping and a feathered kick on every beat
        by_tempo={
            "fast": {
                "comp": "x...x...x...x...",
                "comp_gate": 0.6,
                "drums": {
                    "ride": "x...x.o.x...x.o.",
                    "pedal": "....x.......x...",
                    "kick": "o...o...o...o...",
                },
            }
        },
    ),
    "electronic": GenreStyle(
        drums={
            "kick": "x...x...x...x...",
            "clap": "....x.......x...",
            "ohat": "..o...o...o...o.",
            "hat": "o.o.o.o.o.o.o.o.",
        },
        drums_by_energy={
            "low": ("kick", "clap"),
            "medium": ("kick", "clap", "ohat"),
            "high": ("kick", "clap", "ohat", "hat"),
        },
        bass="R...R...R...R...",
        bass_kind="synth bass",
        bass_program=38,
        comp="x...x...x...x...",
        comp_gate=0.9,
        swing=0.0,
        sevenths=False,
        melody_density=0.4,
        # slow (downtempo): held pads, no off-beat open hats
        by_tempo={
            "slow": {
                "comp": "x...............",
                "comp_gate": 1.0,
                "drums": {"kick": "x...x...x...x...", "clap": "....x.......x...", "hat": "x.o.x.o.x.o.x.o."},
                "drums_by_energy": {
                    "low": ("kick",),
                    "medium": ("kick", "clap"),
                    "high": ("kick", "clap", "hat"),
                },
            }
        },
    ),
    "folk": GenreStyle(
        drums={"kick": "x.......x.......", "shaker": "x.o.x.o.x.o.x.o."},
        drums_by_energy={"low": (), "medium": ("kick",), "high": ("kick", "shaker")},
        bass="R.......F.......",
        bass_kind="acoustic bass",
        bass_program=32,
        comp="x...x...x...x...",
        comp_gate=0.9,
        swing=0.0,
        sevenths=False,
        melody_density=0.35,
        by_tempo={"fast": {"bass": "R...R...F...R..."}},
    ),
    "classical": GenreStyle(
        drums={},
        drums_by_energy={"low": (), "medium": (), "high": ()},
        bass="R...F...O...F...",
        bass_kind="acoustic bass",
        bass_program=32,
        comp="a.a.a.a.a.a.a.a.",
        comp_gate=1.0,
        swing=0.0,
        sevenths=False,
        melody_density=0.35,
    ),
    "hip hop": GenreStyle(
        drums={"kick": "x......ox.o.....", "snare": "....x.......x...", "hat": "x.o.x.o.x.o.x.o."},
        drums_by_energy={
            "low": ("kick", "snare"),
            "medium": ("kick", "snare", "hat"),
            "high": ("kick", "snare", "hat"),
        },
        bass="R......RR.R.....",
        bass_kind="electric bass",
        bass_program=33,
        comp="x...............",
        comp_gate=1.0,
        swing=1.0 / 12.0,
        sevenths=True,
        melody_density=0.3,
        by_tempo={
            "fast": {
                "comp": "x...x...x...x...",
                "comp_gate": 0.9,
                "bass": "R...R...R.R.R...",
                "drums": {"kick": "x.......x.......", "snare": "....x.......x...", "hat": "x.o.x.o.x.o.x.o."},
            }
        },
    ),
    "reggae": GenreStyle(
        drums={"kick": "........x.......", "rim": "........x.......", "hat": "x.o.x.o.x.o.x.o."},
        drums_by_energy={
            "low": ("rim", "hat"),
            "medium": ("kick", "rim", "hat"),
            "high": ("kick", "rim", "hat"),
        },
        bass="R..RF...R..RF...",
        bass_kind="electric bass",
        bass_program=33,
        comp="..x...x...x...x.",
        comp_gate=0.6,
        swing=0.0,
        sevenths=False,
        melody_density=0.3,
        # slow: chords on 2 and 4 (the off-beat skank would read as the beat); fast: the off-beat skank
        # over "steppers" drums, the kick on every beat
        by_tempo={
            "slow": {"comp": "....x.......x...", "comp_gate": 0.5},
            "fast": {
                "bass": "R...R...F...R...",
                "drums": {"kick": "x...x...x...x...", "rim": "........x.......", "hat": "x.o.x.o.x.o.x.o."},
                "drums_by_energy": {
                    "low": ("kick", "hat"),
                    "medium": ("kick", "rim", "hat"),
                    "high": ("kick", "rim", "hat"),
                },
            },
        },
    ),
}


def genre_style(genre: str, tempo_class: str) -> GenreStyle:
    """The genre's patterns with its slow / fast variant applied (slow pieces keep subdivisions soft,
    fast ones mark every beat, so the beat level is clear at both)."""
    style = GENRE_STYLES[genre]
    overrides = style.by_tempo.get(tempo_class)
    return dataclasses.replace(style, **overrides) if overrides else style


ENERGY_VELOCITY = {"low": 62, "medium": 84, "high": 106}


def _vel(base: float, rng: np.random.Generator, spread: float = 5.0) -> int:
    return int(np.clip(round(base + rng.uniform(-spread, spread)), 1, 127))


def _chord_pcs(tonic: int, mode: str, degree: int, sevenths: bool) -> list[int]:
    """Pitch classes (root first) of the chord on `degree`; in minor, V uses the raised 7th."""
    scale = list(SCALES[mode])
    if mode == "minor" and degree == 4:
        scale[6] = 11  # harmonic minor: V is major, its leading tone resolves to the tonic
    size = 4 if sevenths and degree != 0 else 3  # the tonic stays a plain triad
    return [(tonic + scale[(degree + 2 * k) % 7]) % 12 for k in range(size)]


def _nearest(pc: int, target: float, low: int, high: int) -> int:
    """The MIDI note of pitch class `pc` nearest `target` within [low, high] (widened if needed)."""
    candidates = [p for p in range(low, high + 1) if p % 12 == pc]
    if not candidates:
        candidates = [p for p in range(low - 12, high + 13) if p % 12 == pc]
    return min(candidates, key=lambda p: (abs(p - target), p))


def _voicing(pcs: list[int], center: float) -> list[int]:
    """A close-position voicing around `center` (root position, then inverted to sit near it)."""
    root = _nearest(pcs[0], center - 4, 0, 127)
    notes = [root]
    for pc in pcs[1:]:
        p = notes[-1] + 1
        while p % 12 != pc:
            p += 1
        notes.append(p)
    while np.mean(notes) > center + 3:  # invert down: top note an octave lower
        notes = sorted([notes[-1] - 12, *notes[:-1]])
    while np.mean(notes) < center - 3:
        notes = sorted([*notes[1:], notes[0] + 12])
    return notes


def compose(attributes: Attributes, seconds: float, rng: np.random.Generator) -> Score:
    """The score of one item: `seconds` long (notes past the end are dropped, those crossing it cut)."""
    style = genre_style(attributes.genre, attributes.tempo_class)
    inst = INSTRUMENTS[attributes.instrument]
    mode, tonic = attributes.mode, attributes.tonic
    scale = SCALES[mode]
    spb = 60.0 / attributes.bpm
    total_beats = seconds / spb
    n_steps = int(np.ceil(total_beats * STEPS_PER_BEAT))
    base_vel = ENERGY_VELOCITY[attributes.energy]

    # Harmony: the tonic chord for the first bar, then a chord every 2 beats (slow) or every bar (fast),
    # so a clip holds ~3 chords and the tonic is well established either way.
    chord_beats = 2 if attributes.tempo_class == "slow" else 4
    progression = PROGRESSIONS[mode][rng.integers(len(PROGRESSIONS[mode]))]
    chord_starts = [0.0]
    while chord_starts[-1] + (BEATS_PER_BAR if len(chord_starts) == 1 else chord_beats) < total_beats:
        chord_starts.append(chord_starts[-1] + (BEATS_PER_BAR if len(chord_starts) == 1 else chord_beats))
    n_chords = len(chord_starts)
    degrees = [progression[i % len(progression)] for i in range(n_chords)]
    chords = [_chord_pcs(tonic, mode, d, style.sevenths) for d in degrees]

    def chord_at(beat: float) -> int:
        return bisect.bisect_right(chord_starts, beat + 1e-9) - 1

    def chord_end(c: int) -> float:
        return chord_starts[c + 1] if c + 1 < n_chords else float("inf")

    def swung(step: int) -> float:
        beat = step / STEPS_PER_BEAT
        if style.swing and step % STEPS_PER_BEAT == 2:
            beat += style.swing
        return beat

    def jitter() -> float:  # humanised timing: a few milliseconds, in beats
        return float(rng.normal(0.0, 0.004)) / spb

    def add(track: Track, start: float, dur: float, pitch: int, velocity: int) -> None:
        start = max(0.0, start)
        if start >= total_beats or dur <= 0:
            return
        dur = min(dur, total_beats - start)
        track.notes.append(Note(round(start, 6), round(dur, 6), int(pitch), int(velocity)))

    chord_center = float(np.clip((inst.low + inst.high) / 2 - 6, inst.low + 4, 67))
    melody = Track("melody", inst.program, 0, inst.name)
    comp = Track("chords", inst.program, 1, inst.name)
    bass = Track("bass", style.bass_program, 2, style.bass_kind)
    drums = Track("drums", 0, 9, "drums")

    # ---- chords
    strikes = [s for s in range(n_steps) if style.comp[s % 16] in "xa"]
    change_steps = {int(round(b * STEPS_PER_BEAT)) for b in chord_starts}
    if style.comp_gate >= 1.0 and style.comp[0] == "x":  # sustained pads re-strike on every chord change
        strikes = sorted(set(strikes) | change_steps)
    arp_index = 0
    for i, s in enumerate(strikes):
        beat = swung(s)
        nxt = strikes[i + 1] / STEPS_PER_BEAT if i + 1 < len(strikes) else total_beats
        c = chord_at(s / STEPS_PER_BEAT)
        next_change = chord_end(c)
        length = (min(nxt, next_change) - beat) * style.comp_gate
        voicing = _voicing(chords[c], chord_center)
        accent = 8 if s % STEPS_PER_BEAT == 0 else 0
        if style.comp[s % 16] == "a":
            order = [0, 1, 2, 1] if len(voicing) == 3 else [0, 1, 2, 3]
            pitch = voicing[order[arp_index % len(order)]]
            arp_index += 1
            add(comp, beat + jitter(), max(length, 0.45), pitch, _vel(base_vel - 22 + accent, rng))
        else:
            for p in voicing:
                add(comp, beat + jitter(), length, p, _vel(base_vel - 24 + accent, rng))

    # ---- bass
    bass_low = 36
    for s in range(n_steps):
        sym = style.bass[s % 16]
        if sym == ".":
            continue
        beat = swung(s)
        c = chord_at(s / STEPS_PER_BEAT)
        root = _nearest(chords[c][0], bass_low + 6, bass_low, bass_low + 11)
        if sym == "R":
            pitch = root
        elif sym == "F":
            pitch = root + 7
        elif sym == "O":
            pitch = root + 12
        else:  # walking: root on the chord's first beat, then chord tones, then approach the next root
            beat_in_chord = s / STEPS_PER_BEAT - chord_starts[c]
            if beat_in_chord == 0:
                pitch = root
            elif beat_in_chord == chord_end(c) - chord_starts[c] - 1:
                nxt_root = _nearest(
                    chords[min(c + 1, n_chords - 1)][0], bass_low + 6, bass_low, bass_low + 11
                )
                # approach the next root by the scale step above or below it (diatonic, so the
                # approach never sounds the other mode's third)
                direction = 1 if rng.random() < 0.5 else -1
                pitch = nxt_root + direction
                while (pitch - tonic) % 12 not in scale:
                    pitch += direction
            else:
                pc = chords[c][int(rng.integers(1, len(chords[c])))]
                pitch = _nearest(pc, root + 5, root, root + 12)
        nxt = next((t for t in range(s + 1, s + 17) if style.bass[t % 16] != "."), s + 16)
        length = (nxt - s) / STEPS_PER_BEAT * 0.85
        if s % STEPS_PER_BEAT:
            accent = 0
        else:  # slow: the chord changes stand out; fast: every beat alike, so each one reads as a beat
            accent = 10 if s in change_steps and attributes.tempo_class == "slow" else 6
        add(bass, beat + jitter(), length, pitch, _vel(base_vel - 6 + accent, rng))

    # ---- drums
    rows = style.drums_by_energy[attributes.energy]
    for s in range(n_steps):
        for row in rows:
            sym = style.drums[row][s % 16]
            if sym == "." or (row == "crash" and s % (16 * 2) != 0):
                continue
            beat_accent = 8 if s % STEPS_PER_BEAT == 0 else -6
            level = base_vel + beat_accent + (0 if sym == "x" else -22)
            add(drums, swung(s) + jitter(), 0.25, DRUM_KEYS[row], _vel(level, rng, 4))

    # ---- melody: a one-bar rhythm motif repeated, pitches from chord tones (strong beats) and steps
    density = {"low": 0.6, "medium": 1.0, "high": 1.4}[attributes.energy] * style.melody_density
    motif: list[tuple[float, float]] = []  # (start within bar, duration) in beats
    beat = 0.0
    while beat < BEATS_PER_BAR:
        r = rng.random()
        if beat % 2 == 0 and r < 0.25 * (1.2 - density):
            motif.append((beat, 2.0))
            beat += 2.0
        elif r < density:
            motif += [(beat, 0.5), (beat + 0.5, 0.5)]
            beat += 1.0
        elif r < density + 0.12 and beat > 0:
            beat += 1.0  # rest
        else:
            motif.append((beat, 1.0))
            beat += 1.0
    melody_scale = [tonic + st for st in scale]
    prev = _nearest(chords[0][0], (inst.low + inst.high) / 2 + 2, inst.low, inst.high)
    bar = 0
    while bar * BEATS_PER_BAR < total_beats:
        for start, dur in motif:
            b = bar * BEATS_PER_BAR + start
            if b >= total_beats:
                break
            c = chord_at(b)
            on_beat = float(b).is_integer()
            if on_beat or b == 0:
                # chord tones, the third (which carries the mode) preferred, then the root
                preference = {chords[c][1]: 0, chords[c][0]: 2, chords[c][2]: 4}
                candidates = [_nearest(pc, prev, inst.low, inst.high) for pc in preference]
                pitch = min(candidates, key=lambda p: (abs(p - prev) + preference[p % 12], p))
            else:  # passing tone: one scale step up or down
                pcs_scale = [p % 12 for p in melody_scale]
                if mode == "minor" and degrees[c] == 4:
                    pcs_scale[6] = (tonic + 11) % 12
                direction = 1 if rng.random() < 0.5 else -1
                if prev + direction * 3 > inst.high:
                    direction = -1
                if prev + direction * 3 < inst.low:
                    direction = 1
                pitch = prev + direction
                while pitch % 12 not in pcs_scale:
                    pitch += direction
            start_beat = b + (style.swing if (b % 1) == 0.5 and style.swing else 0.0)
            gate = 0.92 if inst.sustained else 0.98
            accent = 8 if on_beat else 0
            add(melody, start_beat + jitter(), dur * gate, pitch, _vel(base_vel + accent, rng))
            prev = pitch
        bar += 1

    tracks = [t for t in (melody, comp, bass, drums) if t.notes]
    return Score(bpm=float(attributes.bpm), seconds=float(seconds), tracks=tracks)
