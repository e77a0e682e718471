"""The synthetic ⟨image, text, audio⟩ corpus the embedded model trains on (DESIGN.md §4, issue 4).

Scores are generated from attributes (genre pattern, instrument, tempo, key and mode, energy) and rendered
with FluidSynth and a General-MIDI soundfont when installed, else with a pure-numpy synthesiser; the text
names instrument and genre but never mode or tempo; the image's colours carry mode and tempo (Palmer et
al., PNAS 2013). `generate_corpus` (CLI: `melfusion data synth`) writes the standard triplet manifests
with a train / val / test split whose val and test attribute combinations are never seen in training.

Modules: `attributes` (label space, sampling, split), `score` (composition), `numpy_render`, `midi`,
`fluidsynth` (renderers), `text`, `images`, `generate` (the corpus).
"""

from melfusion.recipes.embedded.synth.attributes import (
    ENERGIES,
    FAMILIES,
    GENRES,
    INSTRUMENT_NAMES,
    INSTRUMENTS,
    MODES,
    PITCH_CLASSES,
    TEMPO_CLASSES,
    TEMPO_RANGES,
    Attributes,
    held_out_combinations,
    sample_attributes,
    split_of,
    tempo_class,
)
from melfusion.recipes.embedded.synth.fluidsynth import (
    fluidsynth_available,
    render_fluidsynth,
    render_fluidsynth_batch,
)
from melfusion.recipes.embedded.synth.generate import (
    SynthConfig,
    SynthItem,
    SynthResult,
    generate_corpus,
    item_image,
    item_paths,
    item_score,
    make_item,
    render_items_audio,
    resolve_renderer,
    write_manifests,
)
from melfusion.recipes.embedded.synth.images import color_stats, mood_color, render_image
from melfusion.recipes.embedded.synth.midi import midi_bytes, write_midi
from melfusion.recipes.embedded.synth.numpy_render import render_numpy
from melfusion.recipes.embedded.synth.score import Note, Score, Track, compose
from melfusion.recipes.embedded.synth.text import FORBIDDEN_WORDS, describe, forbidden_words_in

__all__ = [
    "ENERGIES",
    "FAMILIES",
    "FORBIDDEN_WORDS",
    "GENRES",
    "INSTRUMENTS",
    "INSTRUMENT_NAMES",
    "MODES",
    "PITCH_CLASSES",
    "TEMPO_CLASSES",
    "TEMPO_RANGES",
    "Attributes",
    "Note",
    "Score",
    "SynthConfig",
    "SynthItem",
    "SynthResult",
    "Track",
    "color_stats",
    "compose",
    "describe",
    "fluidsynth_available",
    "forbidden_words_in",
    "generate_corpus",
    "held_out_combinations",
    "item_image",
    "item_paths",
    "item_score",
    "make_item",
    "midi_bytes",
    "mood_color",
    "render_fluidsynth",
    "render_fluidsynth_batch",
    "render_image",
    "render_items_audio",
    "render_numpy",
    "resolve_renderer",
    "sample_attributes",
    "split_of",
    "tempo_class",
    "write_manifests",
    "write_midi",
]
