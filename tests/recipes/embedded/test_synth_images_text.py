"""Images carry mode and tempo in their colours (Palmer et al. 2013); text carries instrument and genre
and never mode or tempo."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from melfusion.recipes.embedded.synth import (
    GENRES,
    INSTRUMENT_NAMES,
    INSTRUMENTS,
    Attributes,
    color_stats,
    describe,
    forbidden_words_in,
    render_image,
    sample_attributes,
)
from melfusion.recipes.embedded.synth.text import TEMPLATES, has_drums

N_IMAGES = 24  # per mood cell


def _mean_stats(mode: str, bpm: int) -> dict[str, float]:
    stats = []
    for i in range(N_IMAGES):
        rng = np.random.default_rng(1000 + i)
        base = sample_attributes(rng)  # other attributes vary; they must not matter
        attrs = dataclasses.replace(base, mode=mode, bpm=bpm)
        stats.append(color_stats(render_image(attrs, 32, rng)))
    return {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}


@pytest.fixture(scope="module")
def cells():
    return {
        (mode, tclass): _mean_stats(mode, bpm)
        for mode in ("major", "minor")
        for tclass, bpm in (("slow", 72), ("fast", 140))
    }


def test_fast_major_is_lighter_more_saturated_and_yellower_than_slow_minor(cells):
    happy, sad = cells[("major", "fast")], cells[("minor", "slow")]
    assert happy["lightness"] > sad["lightness"] + 30  # CIELAB L*
    assert happy["saturation"] > sad["saturation"] + 0.15  # HSV S
    assert happy["chroma"] > sad["chroma"] + 20  # CIELAB C*
    assert happy["yellowness"] > sad["yellowness"] + 20  # CIELAB b*


def test_each_attribute_moves_colours_in_the_documented_direction(cells):
    for tclass in ("slow", "fast"):  # major vs minor at a fixed tempo: lighter, yellower
        major, minor = cells[("major", tclass)], cells[("minor", tclass)]
        assert major["lightness"] > minor["lightness"] + 15
        assert major["yellowness"] > minor["yellowness"]
        assert major["saturation"] > minor["saturation"] - 0.05 or major["chroma"] > minor["chroma"]
    for mode in ("major", "minor"):  # fast vs slow at a fixed mode: more saturated, yellower
        fast, slow = cells[(mode, "fast")], cells[(mode, "slow")]
        assert fast["saturation"] > slow["saturation"] + 0.1
        assert fast["chroma"] > slow["chroma"] + 15
        assert fast["yellowness"] > slow["yellowness"]
        assert fast["lightness"] > slow["lightness"]


def test_the_four_mood_cells_are_separable(cells):
    points = np.array([[c["lightness"] / 100, c["saturation"]] for c in cells.values()])
    gaps = [np.linalg.norm(p - q) for i, p in enumerate(points) for q in points[i + 1 :]]
    assert min(gaps) > 0.1


def test_images_are_deterministic_and_sized():
    attrs = Attributes("jazz", "piano", 70, "D", "minor", "low")
    a = render_image(attrs, 48, np.random.default_rng(5))
    b = render_image(attrs, 48, np.random.default_rng(5))
    assert a.size == (48, 48) and a.mode == "RGB"
    assert a.tobytes() == b.tobytes()
    assert render_image(attrs, 48, np.random.default_rng(6)).tobytes() != a.tobytes()
    with pytest.raises(ValueError):
        render_image(attrs, 4, np.random.default_rng(0))


def _descriptions(n: int = 3000):
    for i in range(n):
        rng = np.random.default_rng(i)
        attrs = sample_attributes(rng)
        yield attrs, describe(attrs, rng)


def test_text_never_mentions_mode_or_tempo():
    pitch = re.compile(r"\b[A-G](#|b|-flat|-sharp)?\s+(major|minor)\b|\b\d+\s*bpm\b", re.IGNORECASE)
    for attrs, text in _descriptions():
        assert not forbidden_words_in(text), (text, forbidden_words_in(text))
        assert not pitch.search(text), text
        assert str(attrs.bpm) not in text


def test_text_names_instrument_and_genre_in_many_phrasings():
    texts, templates_seen = set(), set()
    genre_words = {
        "pop": "pop",
        "rock": "rock",
        "jazz": "jazz",
        "electronic": "electronic",
        "folk": "folk",
        "classical": ("classical", "chamber"),
        "hip hop": ("hip hop", "hip-hop"),
        "reggae": "reggae",
    }
    for attrs, text in _descriptions():
        lower = text.lower()
        assert any(name.lower() in lower for name in INSTRUMENTS[attrs.instrument].names), text
        words = genre_words[attrs.genre]
        assert any(w in lower for w in ((words,) if isinstance(words, str) else words)), text
        texts.add(text)
        templates_seen.add(re.sub(r"[a-z\- ]+", "", text))
    assert len(texts) > 2500
    assert len(TEMPLATES) >= 20


def test_text_depends_only_on_text_attributes():
    """Same instrument/genre/energy and rng -> the same text whatever the mode, tempo and key."""
    base = Attributes("folk", "violin", 70, "C", "minor", "high")
    ref = describe(base, np.random.default_rng(3))
    for mode, bpm, key in (("major", 70, "C"), ("minor", 140, "C"), ("major", 150, "F#")):
        assert (
            describe(dataclasses.replace(base, mode=mode, bpm=bpm, key=key), np.random.default_rng(3)) == ref
        )


def test_drum_presence_does_not_depend_on_tempo():
    for genre in GENRES:
        for energy in ("low", "medium", "high"):
            has_drums(genre, energy)  # raises if slow and fast versions disagree
    assert not has_drums("classical", "high") and has_drums("rock", "low")
    assert len(INSTRUMENT_NAMES) >= 12


def test_tonic_in_text_names_the_tonic_only_and_keeps_the_rest():
    """tonic=True appends one sentence naming the tonic; the description before it is unchanged, it never
    names the mode, and it is the same for both modes of one key."""
    spoken = {"C#": "C sharp", "D#": "D sharp", "F#": "F sharp", "G#": "G sharp", "A#": "A sharp"}
    for i, (attrs, _) in enumerate(_descriptions(300)):
        seed = 10_000 + i
        plain = describe(attrs, np.random.default_rng(seed))
        with_tonic = describe(attrs, np.random.default_rng(seed), tonic=True)
        assert with_tonic.startswith(plain + " ") and with_tonic.endswith(".")
        last = with_tonic[len(plain) + 1 :]
        assert (
            re.search(rf"(?<![A-Za-z]){re.escape(attrs.key)}(?![#A-Za-z])", last)
            or spoken.get(attrs.key, "\0") in last
        ), (attrs.key, last)
        assert not forbidden_words_in(with_tonic), with_tonic
        other_mode = dataclasses.replace(attrs, mode="major" if attrs.mode == "minor" else "minor")
        assert describe(other_mode, np.random.default_rng(seed), tonic=True) == with_tonic
