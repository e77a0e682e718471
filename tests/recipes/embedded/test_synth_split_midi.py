"""Held-out attribute combinations, the score generator, the MIDI writer and the FluidSynth renderer."""

from __future__ import annotations

import collections
import io

import numpy as np
import pytest

from melfusion.data.manifest import read_manifest
from melfusion.recipes.embedded.synth import (
    GENRES,
    INSTRUMENT_NAMES,
    MODES,
    TEMPO_CLASSES,
    TEMPO_RANGES,
    Attributes,
    SynthConfig,
    compose,
    fluidsynth_available,
    generate_corpus,
    held_out_combinations,
    make_item,
    midi_bytes,
    render_fluidsynth_batch,
    render_numpy,
    sample_attributes,
    split_of,
)
from melfusion.recipes.embedded.synth.midi import _vlq, have_mido

# ------------------------------------------------------------------------------------------- split


def test_held_out_combinations_never_appear_in_train():
    held = held_out_combinations()
    items = [make_item(SynthConfig(seed=11), i, held) for i in range(4000)]
    by_split = collections.defaultdict(set)
    for item in items:
        by_split[item.split].add(item.attributes.combination)
        assert item.split == held.get(item.attributes.combination, "train")
    assert by_split["train"].isdisjoint(by_split["test"])
    assert by_split["train"].isdisjoint(by_split["val"])
    assert by_split["val"].isdisjoint(by_split["test"])
    counts = collections.Counter(item.split for item in items)
    assert 0.07 < counts["test"] / len(items) < 0.19  # ~1/8 of the combinations
    assert 0.02 < counts["val"] / len(items) < 0.11  # ~1/16
    # every single value, and every (genre, instrument) pair with >= 2 mood cells, stays in training
    train_pairs = collections.defaultdict(set)
    for genre, instrument, mode, tclass in by_split["train"]:
        train_pairs[(genre, instrument)].add((mode, tclass))
    assert len(train_pairs) == len(GENRES) * len(INSTRUMENT_NAMES)
    assert min(len(cells) for cells in train_pairs.values()) >= 2


def test_split_definition_is_fixed_by_split_seed_only():
    assert held_out_combinations(0) == held_out_combinations(0)
    assert held_out_combinations(0) != held_out_combinations(1)
    # the generation seed does not move the split: an attribute set has one split in every corpus
    attrs = Attributes("rock", "flute", 140, "E", "minor", "high")
    held = held_out_combinations()
    assert split_of(attrs, held) == held.get(("rock", "flute", "minor", "fast"), "train")


def test_corpus_manifests_keep_held_out_combinations_out_of_train(tmp_path):
    generate_corpus(tmp_path, 40, SynthConfig(seed=5, seconds=0.5, image_size=8), progress=False)
    combos = {}
    for split in ("train", "val", "test"):
        path = tmp_path / f"{split}.jsonl"
        records = read_manifest(path) if path.read_text().strip() else []
        combos[split] = {
            (r.extra["genre"], r.extra["instrument"], r.extra["mode"], r.extra["tempo_class"])
            for r in records
        }
        assert all(r.extra["split"] == split for r in records)
    assert combos["train"] and combos["train"].isdisjoint(combos["test"] | combos["val"])


def test_attribute_sampling_covers_the_space():
    draws = [sample_attributes(np.random.default_rng(i)) for i in range(3000)]
    assert {d.genre for d in draws} == set(GENRES)
    assert {d.instrument for d in draws} == set(INSTRUMENT_NAMES)
    assert {d.mode for d in draws} == set(MODES)
    for tclass in TEMPO_CLASSES:
        lo, hi = TEMPO_RANGES[tclass]
        bpms = [d.bpm for d in draws if d.tempo_class == tclass]
        assert bpms and lo <= min(bpms) and max(bpms) <= hi
    with pytest.raises(ValueError):
        Attributes("polka", "piano", 100, "C", "major", "low")


# ------------------------------------------------------------------------------------------- score


@pytest.mark.parametrize("genre", GENRES)
def test_scores_fit_the_clip_and_the_key(genre):
    for mode in MODES:
        attrs = Attributes(genre, "piano", 80 if mode == "minor" else 140, "D", mode, "high")
        score = compose(attrs, 5.12, np.random.default_rng(0))
        names = {t.name for t in score.tracks}
        assert {"melody", "chords", "bass"} <= names
        for track in score.tracks:
            for note in track.notes:
                assert 0 <= note.start < score.beats and note.start + note.duration <= score.beats + 1e-6
                assert 1 <= note.velocity <= 127 and 0 <= note.pitch <= 127
        # the tonic triad fills the first bar: its third is the one of the mode
        first = {n.pitch % 12 for n in score.tracks[1].notes if n.start < 4}
        third = (2 + (4 if mode == "major" else 3)) % 12  # D + third
        assert third in first and 2 in first


def test_numpy_render_is_deterministic_and_levelled():
    attrs = Attributes("jazz", "saxophone", 120, "F", "minor", "medium")
    score = compose(attrs, 2.0, np.random.default_rng(1))
    a = render_numpy(score, 16000, np.random.default_rng(2))
    b = render_numpy(score, 16000, np.random.default_rng(2))
    assert a.dtype == np.float32 and a.shape == (32000,)
    assert np.array_equal(a, b)
    assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) == pytest.approx(10 ** (-18 / 20), rel=0.05)
    assert np.abs(a).max() <= 0.95
    assert render_numpy(score, 22050, np.random.default_rng(2)).shape == (44100,)


# -------------------------------------------------------------------------------------------- midi


def _parse_smf(data: bytes) -> tuple[int, int, list[list[tuple[int, int, int, int]]]]:
    """(format, ticks per beat, per track [(abs tick, status, data1, data2)] of channel messages)."""
    assert data[:4] == b"MThd" and int.from_bytes(data[4:8], "big") == 6
    fmt, ntracks, tpb = (int.from_bytes(data[8 + 2 * i : 10 + 2 * i], "big") for i in range(3))
    pos, tracks = 14, []
    for _ in range(ntracks):
        assert data[pos : pos + 4] == b"MTrk"
        length = int.from_bytes(data[pos + 4 : pos + 8], "big")
        body, pos = data[pos + 8 : pos + 8 + length], pos + 8 + length
        i, tick, status, events = 0, 0, None, []
        while i < len(body):
            delta = 0
            while True:
                b = body[i]
                i += 1
                delta = (delta << 7) | (b & 0x7F)
                if b < 0x80:
                    break
            tick += delta
            if body[i] == 0xFF:
                kind, n = body[i + 1], body[i + 2]
                i += 3 + n
                if kind == 0x2F:
                    break
                continue
            if body[i] & 0x80:
                status, i = body[i], i + 1
            n = 1 if status & 0xF0 in (0xC0, 0xD0) else 2
            d = body[i : i + n]
            events.append((tick, status, d[0], d[1] if n == 2 else 0))
            i += n
        tracks.append(events)
    assert pos == len(data)
    return fmt, tpb, tracks


def test_vlq():
    assert _vlq(0) == b"\x00" and _vlq(127) == b"\x7f" and _vlq(128) == b"\x81\x00"
    assert _vlq(0x0FFFFFFF) == b"\xff\xff\xff\x7f"


def test_midi_file_holds_every_note():
    attrs = Attributes("pop", "flute", 96, "A", "major", "high")
    score = compose(attrs, 5.12, np.random.default_rng(4))
    fmt, tpb, tracks = _parse_smf(midi_bytes(score))
    assert fmt == 1 and tpb == 480 and len(tracks) == 1 + len(score.tracks)
    for track, events in zip(score.tracks, tracks[1:]):
        ons = [e for e in events if e[1] & 0xF0 == 0x90]
        offs = [e for e in events if e[1] & 0xF0 == 0x80]
        assert len(ons) == len(offs) == len(track.notes)
        assert all(e[1] & 0x0F == track.channel for e in ons)
        first = min(track.notes, key=lambda n: n.start)
        assert min(e[0] for e in ons) == round(first.start * tpb)
        programs = [e for e in events if e[1] & 0xF0 == 0xC0]
        assert (programs[0][2] == track.program) if track.channel != 9 else not programs


@pytest.mark.skipif(not have_mido(), reason="mido not installed")
def test_midi_matches_mido():
    import mido

    score = compose(Attributes("rock", "organ", 130, "C", "minor", "low"), 3.0, np.random.default_rng(0))
    ours = midi_bytes(score)
    from melfusion.recipes.embedded.synth.midi import _mido_bytes

    assert _mido_bytes([(score, 0.0)]) == ours
    assert len(mido.MidiFile(file=io.BytesIO(ours)).tracks) == 1 + len(score.tracks)


@pytest.mark.skipif(not fluidsynth_available(), reason="fluidsynth or a GM soundfont is not installed")
def test_fluidsynth_batch_renders_clips_deterministically():
    scores = [
        compose(make_item(SynthConfig(seed=2), i).attributes, 1.5, np.random.default_rng(i)) for i in range(3)
    ]
    clips = render_fluidsynth_batch(scores, 16000)
    again = render_fluidsynth_batch(scores, 16000)
    assert [c.shape for c in clips] == [(24000,)] * 3
    for a, b in zip(clips, again):
        assert a.dtype == np.float32 and np.isfinite(a).all() and np.sqrt(np.mean(a**2)) > 0.05
        assert np.array_equal(a, b)
