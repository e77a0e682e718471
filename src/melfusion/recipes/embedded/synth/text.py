"""MeLBench-style descriptions of a synthetic item, in many phrasings.

The text names the lead instrument and the genre (always), and often the bass, the presence of drums
and the dynamics (energy). It never states the mode or the tempo, nor any word that implies them
(`FORBIDDEN_WORDS`): those are the image's to tell. Everything it says depends only on attributes that
are independent of mode and tempo — the drum presence, for one, depends on genre and energy only.
"""

from __future__ import annotations

import re

import numpy as np

from melfusion.recipes.embedded.synth.attributes import INSTRUMENTS, TEMPO_CLASSES, Attributes
from melfusion.recipes.embedded.synth.score import GENRE_STYLES, genre_style

# Words a description must never contain (checked by the tests on whole words, case-insensitively):
# mode, tempo, and mood words that imply either.
FORBIDDEN_WORDS = frozenset(
    [
        "major",
        "minor",
        "mode",
        "key",
        "tonality",
        "fast",
        "slow",
        "slowly",
        "quick",
        "quickly",
        "rapid",
        "rapidly",
        "brisk",
        "leisurely",
        "tempo",
        "bpm",
        "upbeat",
        "uptempo",
        "up-tempo",
        "downtempo",
        "lively",
        "energetic",
        "calm",
        "calming",
        "relaxed",
        "relaxing",
        "chill",
        "mellow",
        "happy",
        "sad",
        "cheerful",
        "melancholic",
        "melancholy",
        "joyful",
        "joyous",
        "gloomy",
        "somber",
        "sombre",
        "bright",
        "dark",
        "dreamy",
        "hopeful",
        "uplifting",
        "mournful",
        "allegro",
        "adagio",
        "andante",
        "presto",
        "largo",
        "moderato",
        "lento",
        "vivace",
        "driving",
        "laid-back",
        "danceable",
        "frantic",
        "hurried",
        "unhurried",
        "sleepy",
        "peaceful",
        "serene",
        "tense",
        "anxious",
        "angry",
    ]
)

_GENRE = {
    "pop": {"adj": ("pop",), "noun": ("pop song", "pop track", "pop tune", "pop instrumental")},
    "rock": {"adj": ("rock",), "noun": ("rock song", "rock track", "rock instrumental")},
    "jazz": {"adj": ("jazz", "small-combo jazz"), "noun": ("jazz tune", "jazz piece", "jazz number")},
    "electronic": {
        "adj": ("electronic", "synth-based electronic"),
        "noun": ("electronic track", "electronic tune", "electronic production"),
    },
    "folk": {"adj": ("folk", "acoustic folk"), "noun": ("folk song", "folk tune", "folk piece")},
    "classical": {
        "adj": ("classical", "chamber-style classical"),
        "noun": ("classical piece", "chamber piece", "classical composition"),
    },
    "hip hop": {
        "adj": ("hip hop", "hip-hop"),
        "noun": ("hip hop beat", "hip-hop instrumental", "hip hop track"),
    },
    "reggae": {"adj": ("reggae",), "noun": ("reggae tune", "reggae track", "reggae song")},
}

_BASS = {
    "electric bass": ("an electric bass", "a bass guitar", "a fingered electric bass"),
    "acoustic bass": ("an upright bass", "an acoustic double bass", "a plucked double bass"),
    "synth bass": ("a synth bass", "a synthesizer bass line", "a deep synth bass"),
}

_DRUMS_ON = {
    "pop": ("a pop drum kit", "kick, snare and hi-hats", "a simple drum beat"),
    "rock": ("a rock drum kit", "kick, snare and hi-hats", "a rock beat on the drums"),
    "jazz": ("a ride cymbal and brushes", "jazz drums with a ride cymbal", "a swinging ride cymbal"),
    "electronic": ("a drum machine", "a four-on-the-floor kick", "programmed electronic drums"),
    "folk": ("light percussion", "a soft kick drum and shaker", "simple percussion"),
    "classical": ("percussion",),
    "hip hop": ("a boom-bap drum beat", "programmed hip-hop drums", "a kick and snare beat"),
    "reggae": ("a reggae drum pattern", "rim shots and hi-hats", "reggae-style drums"),
}
_DRUMS_OFF = ("no drums", "no percussion", "without any drums")

_ENERGY = {
    "low": {"adj": ("soft", "quiet", "hushed", "low-volume"), "adv": ("softly", "quietly")},
    "medium": {
        "adj": ("moderately loud", "medium-volume", "evenly balanced"),
        "adv": ("at a moderate volume", "at medium volume"),
    },
    "high": {"adj": ("loud", "powerful", "punchy", "forceful"), "adv": ("loudly", "forcefully")},
}

# Templates: fields in braces. {inst}: an instrument name; {genre}: a genre adjective; {genre_noun}:
# e.g. "jazz tune"; {bass}: "an upright bass"; {drums}: drum phrase or "no drums"; {energy}: an
# adjective; {energy_adv}: an adverb phrase.
TEMPLATES = (
    "A {genre} piece featuring {a_inst}, with {bass} and {drums}.",
    "{A_inst} carries the melody and the chords in this {genre_noun}, backed by {bass}.",
    "This is {a_genre_noun}. {A_inst} plays the lead over {bass} and {drums}.",
    "{Energy} {genre} music led by {a_inst}.",
    "An instrumental {genre} track: {inst} on melody and harmony, {bass} underneath, {drums}.",
    "The song is {a_genre_noun} played on {a_inst}, accompanied by {bass}.",
    "{A_inst} plays {genre} music {energy_adv}, with {drums}.",
    "A {energy} {genre} arrangement for {inst} and bass.",
    "{Genre} instrumental. Lead instrument: {inst}. Accompaniment: {bass} and {drums}.",
    "{genre}, {inst}, {bass_bare}, {drums}, {energy}",
    "The {inst} plays a {genre} melody and chords; the recording is {energy}.",
    "A recording of {a_inst} in a {genre} style, supported by {bass}.",
    "{A_genre_noun} where {a_inst} takes the lead, with {drums} and {bass}.",
    "Instrumental {genre_noun} featuring {inst}, played {energy_adv}.",
    "This {genre} tune features {a_inst} playing both melody and harmony, over {bass}.",
    "{A_inst} melody with chords, {genre} style, {energy} dynamics, {drums}.",
    "A short {genre} excerpt: {a_inst} with {bass} and {drums}.",
    "The music is {a_genre_noun}. It features {a_inst} and {bass}, and it is played {energy_adv}.",
    "{Energy} {genre_noun} with {a_inst} in front and {bass} below.",
    "{A_inst} backed by {bass} and {drums} in a {genre} groove.",
)


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def has_drums(genre: str, energy: str) -> bool:
    """Whether the score has drums. By design a function of genre and energy only: the same for slow and
    fast pieces (otherwise naming the drums would tell the tempo)."""
    present = {bool(genre_style(genre, tc).drums_by_energy[energy]) for tc in TEMPO_CLASSES}
    if len(present) != 1:
        raise RuntimeError(f"drum presence of {genre!r} at {energy!r} energy depends on the tempo")
    return present.pop()


# Optional last sentence naming the tonic (never the mode): {tonic} is a pitch class such as "F#".
TONIC_PHRASES = (
    "It is in {tonic}.",
    "Tonal centre: {tonic}.",
    "Centred on {tonic}.",
    "The home note is {tonic}.",
    "Rooted in {tonic}.",
)
_TONIC_SPOKEN = {"C#": "C sharp", "D#": "D sharp", "F#": "F sharp", "G#": "G sharp", "A#": "A sharp"}


def describe(attributes: Attributes, rng: np.random.Generator, *, tonic: bool = False) -> str:
    """One description of the item, the phrasing drawn from `rng`.

    ``tonic=True`` appends a sentence naming the key's tonic (drawn after everything else, so the rest of
    the description is unchanged). The tonic says nothing of the mode, yet with it the mode (which the image
    tells) fixes the pitch set; without it the mode is a relative property (the key is random) that a
    denoising loss barely rewards. An experiment, off by default: fine-tuning on such texts did not make
    the embedded model read the image (README, "Embedded model")."""
    inst_names = INSTRUMENTS[attributes.instrument].names
    inst = inst_names[int(rng.integers(len(inst_names)))]
    g = _GENRE[attributes.genre]
    genre = g["adj"][int(rng.integers(len(g["adj"])))]
    genre_noun = g["noun"][int(rng.integers(len(g["noun"])))]
    bass_kind = GENRE_STYLES[attributes.genre].bass_kind
    bass = _BASS[bass_kind][int(rng.integers(len(_BASS[bass_kind])))]
    pool = _DRUMS_ON[attributes.genre] if has_drums(attributes.genre, attributes.energy) else _DRUMS_OFF
    drums = pool[int(rng.integers(len(pool)))]
    e = _ENERGY[attributes.energy]
    energy = e["adj"][int(rng.integers(len(e["adj"])))]
    energy_adv = e["adv"][int(rng.integers(len(e["adv"])))]
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    fields = {
        "inst": inst,
        "a_inst": _article(inst),
        "A_inst": _cap(_article(inst)),
        "genre": genre,
        "Genre": _cap(genre),
        "genre_noun": genre_noun,
        "a_genre_noun": _article(genre_noun),
        "A_genre_noun": _cap(_article(genre_noun)),
        "bass": bass,
        "bass_bare": bass.split(" ", 1)[1],
        "drums": drums,
        "energy": energy,
        "Energy": _cap(energy),
        "energy_adv": energy_adv,
    }
    text = template.format(**fields)
    if tonic:
        phrase = TONIC_PHRASES[int(rng.integers(len(TONIC_PHRASES)))]
        name = attributes.key if rng.random() < 0.5 else _TONIC_SPOKEN.get(attributes.key, attributes.key)
        text = f"{text} {phrase.format(tonic=name)}"
    return re.sub(r"\s+", " ", text).strip()


def forbidden_words_in(text: str) -> set[str]:
    """The FORBIDDEN_WORDS a text contains (whole words, case-insensitive)."""
    words = set(re.findall(r"[a-z]+(?:-[a-z]+)*", text.lower()))
    parts = {p for w in words for p in w.split("-")}
    return (words | parts) & FORBIDDEN_WORDS
