"""Attribute probes that read audio: tempo, mode (and key), instrument family.

Pure functions on (T,) float waveforms, used by the conditioning-adherence benchmark (issue 4) and by the
synthetic corpus' own label check:

- `estimate_tempo`: onset-strength envelope (half-wave rectified log-mel flux, 100 frames/s) ->
  autocorrelation -> for each candidate period a comb over its multiples (a true beat period has peaks
  at every multiple; a subdivision of it does not), weighted by a broad log-normal tempo prior; then the
  metrical level (the octave) from how strong the onsets halfway between pulses are.
- `estimate_mode`: a clip's chroma (constant-Q spectrum with harmonics explained away by NNLS, see
  `chroma_profile`) correlated with the 24 rotations of the Krumhansl–Kessler key profiles (Krumhansl
  & Kessler 1982; the key-finding method of Krumhansl 1990); the best one gives key and mode.
- `tempo_class`: the synthetic corpus' slow/fast boundary (104 bpm).
- Instrument family: `FamilyClassifier` is the interface (`families`, `predict_proba`);
  `timbre_features` is the fixed feature vector a classifier trained on the synthetic corpus can use.
"""

from __future__ import annotations

import functools
from typing import Protocol, runtime_checkable

import librosa
import numpy as np
import scipy.optimize

from melfusion.recipes.embedded.synth.attributes import PITCH_CLASSES, TEMPO_CLASS_BOUNDARY_BPM, TEMPO_CLASSES

__all__ = [
    "KK_MAJOR",
    "KK_MINOR",
    "TEMPO_CLASSES",
    "TEMPO_CLASS_BOUNDARY_BPM",
    "FamilyClassifier",
    "chroma_profile",
    "estimate_family",
    "estimate_mode",
    "estimate_tempo",
    "key_correlations",
    "onset_envelope",
    "tempo_class",
    "timbre_features",
]

# Krumhansl & Kessler (1982) probe-tone ratings, tonic first.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

ONSET_FPS = 100
CHROMA_BINS_PER_OCTAVE = 36
NNLS_PARTIAL_DECAY = 0.5
_CHROMA_FMIN = 32.703195662574764  # C1


def _mono(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"audio must be (T,) or (C, T), got shape {np.shape(audio)}")
    if not np.isfinite(x).all():
        raise ValueError("audio contains NaN or infinite samples")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    return x


def tempo_class(bpm: float) -> str:
    """'slow' below 104 bpm, else 'fast' (the synthetic corpus' classes: 64-88 and 120-152 bpm)."""
    return TEMPO_CLASSES[0] if bpm < TEMPO_CLASS_BOUNDARY_BPM else TEMPO_CLASSES[1]


# ------------------------------------------------------------------------------------------- tempo


def onset_envelope(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Onset strength at ONSET_FPS frames/s: (F,) float64, mean-removed and half-wave rectified."""
    x = _mono(audio, sample_rate)
    hop = max(1, int(round(sample_rate / ONSET_FPS)))
    n_fft = 1 << int(np.ceil(np.log2(4 * hop)))
    mel = librosa.feature.melspectrogram(
        y=x, sr=sample_rate, n_fft=n_fft, hop_length=hop, n_mels=64, fmax=min(8000.0, sample_rate / 2)
    )  # (64, F)
    logmel = np.log1p(1000.0 * mel / (mel.max() + 1e-12))
    flux = np.maximum(0.0, np.diff(logmel, axis=1, prepend=logmel[:, :1])).mean(axis=0)  # (F,)
    # remove the slowly varying part (a 0.25 s moving average), keep the peaks
    width = max(1, int(0.25 * ONSET_FPS))
    local = np.convolve(flux, np.ones(width) / width, mode="same")
    return np.maximum(0.0, flux - local).astype(np.float64)


def _autocorrelation(env: np.ndarray) -> np.ndarray:
    """Unbiased autocorrelation of a mean-removed envelope, normalised so r[0] = 1."""
    x = env - env.mean()
    n = len(x)
    spec = np.fft.rfft(x, 2 * n)
    r = np.fft.irfft(np.abs(spec) ** 2)[:n]
    r = r / np.arange(n, 0, -1)  # unbiased
    return r / (r[0] + 1e-12)


def _pulse_strength(env: np.ndarray, period: float) -> tuple[float, float]:
    """(on, mid): mean onset strength at the best-aligned pulse train of `period` frames, and at the
    points halfway between its pulses (each taken as the maximum within ±1 frame)."""
    n = len(env)
    padded = np.maximum(np.maximum(env, np.roll(env, 1)), np.roll(env, -1))  # ±1 frame tolerance
    padded[0], padded[-1] = max(env[0], env[1]), max(env[-1], env[-2])

    def mean_at(start: float) -> float:
        idx = np.round(np.arange(start, n - 0.5, period)).astype(int)
        idx = idx[idx < n]
        return float(padded[idx].mean()) if len(idx) else 0.0

    phases = np.arange(0.0, period, 1.0)
    ons = np.array([mean_at(ph) for ph in phases])
    best = float(phases[int(np.argmax(ons))])
    return float(ons.max()), mean_at(best + period / 2.0)


def estimate_tempo(
    audio: np.ndarray,
    sample_rate: int,
    *,
    min_bpm: float = 50.0,
    max_bpm: float = 200.0,
    prior_bpm: float = 104.0,
    prior_octaves: float = 1.0,
    beat_ratio: float = 0.35,
) -> float:
    """Tempo in bpm by onset autocorrelation. Silence or no periodicity returns `prior_bpm`.

    1. Periodicity: the score of a candidate period T (frames) is the mean autocorrelation of the onset
       envelope at T, 2T, 3T, ... up to 3/4 of the clip, times a broad log-normal prior
       exp(-½ (log2(bpm / prior_bpm) / prior_octaves)²); the best bpm on a 0.25-bpm grid is refined by
       a parabola. This finds the pulse up to a factor of two.
    2. Metrical level: among that bpm times powers of two within [min_bpm, max_bpm], start at the
       slowest and go up one octave while the onsets halfway between the pulses are at least
       `beat_ratio` times as strong as those on them (then the halfway points are beats too, not a
       softer subdivision). 0.35 was tuned on the synthetic corpus (numpy and FluidSynth renders).
    """
    env = onset_envelope(audio, sample_rate)
    if len(env) < 8 or not np.any(env > 0):
        return float(prior_bpm)
    r = _autocorrelation(env)
    max_lag = 0.75 * len(r)
    bpms = np.arange(min_bpm, max_bpm + 1e-9, 0.25)
    periods = 60.0 * ONSET_FPS / bpms  # frames
    lags = np.arange(len(r), dtype=np.float64)
    scores = np.empty(len(bpms))
    for i, period in enumerate(periods):
        k = np.arange(1, max(1, int(max_lag // period)) + 1)
        scores[i] = np.interp(k * period, lags, r).mean()
    prior = np.exp(-0.5 * (np.log2(bpms / prior_bpm) / prior_octaves) ** 2)
    weighted = np.maximum(scores, 0.0) * prior
    if not np.any(weighted > 0):
        return float(prior_bpm)
    i = int(np.argmax(weighted))
    bpm = float(bpms[i])
    if 0 < i < len(bpms) - 1:
        a, b, c = weighted[i - 1], weighted[i], weighted[i + 1]
        denom = a - 2 * b + c
        if denom < 0:
            bpm += 0.25 * 0.5 * (a - c) / denom

    levels = [bpm * 2.0**k for k in range(-4, 5) if min_bpm <= bpm * 2.0**k <= max_bpm]
    choice = levels[0]
    for faster in levels[1:]:
        on, mid = _pulse_strength(env, 60.0 * ONSET_FPS / choice)
        if on <= 0 or mid < beat_ratio * on:
            break
        choice = faster
    return float(choice)


# -------------------------------------------------------------------------------------------- mode


@functools.lru_cache(maxsize=8)
def _note_templates(n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(midi_notes, A): harmonic templates on the CQT grid (fmin C1, CHROMA_BINS_PER_OCTAVE), one column
    per note: partial h at amplitude NNLS_PARTIAL_DECAY**(h-1), a Gaussian of 0.6 bins."""
    bins = np.arange(n_bins, dtype=np.float64)
    f_top = _CHROMA_FMIN * 2.0 ** ((n_bins - 1) / CHROMA_BINS_PER_OCTAVE)
    top_note = int(np.floor(69 + 12 * np.log2(f_top / 440.0)))
    notes = np.arange(24, top_note + 1)  # C1 ...
    A = np.zeros((n_bins, len(notes)))
    for j, note in enumerate(notes):
        f0 = 440.0 * 2.0 ** ((note - 69) / 12.0)
        for h in range(1, 21):
            if h * f0 > f_top:
                break
            pos = np.log2(h * f0 / _CHROMA_FMIN) * CHROMA_BINS_PER_OCTAVE
            A[:, j] += NNLS_PARTIAL_DECAY ** (h - 1) * np.exp(-0.5 * ((bins - pos) / 0.6) ** 2)
    return notes, A


def chroma_profile(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Time-averaged chroma (12,), C first, summing to 1 (uniform for silence).

    Harmonics are explained away first, as in NNLS chroma (Mauch & Dixon 2010), but once per clip: the
    time-averaged, square-root-compressed constant-Q magnitude (C1 up, 36 bins per octave) is decomposed
    by non-negative least squares into notes with decaying harmonic series, and the note weights are
    folded to pitch classes. Without this the 5th harmonic of every note (its major third, two octaves
    up) pulls minor music towards major."""
    x = _mono(audio, sample_rate)
    n_octaves = int(min(7, np.floor(np.log2(0.45 * sample_rate / _CHROMA_FMIN))))
    if n_octaves < 2:
        raise ValueError(f"sample_rate {sample_rate} is too low for a chroma above C1")
    if not np.any(x):
        return np.full(12, 1.0 / 12.0)
    n_bins = n_octaves * CHROMA_BINS_PER_OCTAVE
    cqt = np.abs(
        librosa.cqt(
            x,
            sr=sample_rate,
            hop_length=512,
            fmin=_CHROMA_FMIN,
            n_bins=n_bins,
            bins_per_octave=CHROMA_BINS_PER_OCTAVE,
        )
    )  # (n_bins, F)
    spectrum = np.sqrt(cqt).mean(axis=1).astype(np.float64)  # (n_bins,)
    notes, A = _note_templates(n_bins)
    weights, _ = scipy.optimize.nnls(A, spectrum)  # (n_notes,)
    profile = np.bincount(notes % 12, weights=weights, minlength=12)
    total = profile.sum()
    return profile / total if total > 0 else np.full(12, 1.0 / 12.0)


def key_correlations(profile: np.ndarray) -> np.ndarray:
    """(2, 12) Pearson correlations of a chroma profile with the major (row 0) and minor (row 1)
    Krumhansl–Kessler profiles rotated to each tonic (column = tonic pitch class, C = 0)."""
    profile = np.asarray(profile, dtype=np.float64)
    out = np.empty((2, 12))
    for m, template in enumerate((KK_MAJOR, KK_MINOR)):
        for tonic in range(12):
            out[m, tonic] = np.corrcoef(profile, np.roll(template, tonic))[0, 1]
    return np.nan_to_num(out)


def estimate_mode(audio: np.ndarray, sample_rate: int) -> tuple[str, str, float]:
    """(mode, key, score): 'major' | 'minor', the tonic's name ('C', 'C#', ...) and the correlation of the
    best-matching Krumhansl–Kessler profile (in [-1, 1]; higher = clearer tonality)."""
    corr = key_correlations(chroma_profile(audio, sample_rate))
    m, tonic = np.unravel_index(int(np.argmax(corr)), corr.shape)
    return ("major", "minor")[m], PITCH_CLASSES[tonic], float(corr[m, tonic])


# ------------------------------------------------------------------------------- instrument family


def timbre_features(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """A fixed-length timbre description (float32, (2 * 40 + 8,)): mean and std over time of 40 log-mel
    bands (fmax 8 kHz), then mean/std of spectral centroid, flatness, roll-off and onset strength.
    Loudness-invariant (the log-mel is normalised by the clip's mean level)."""
    x = _mono(audio, sample_rate)
    n_fft, hop = 1024, max(1, sample_rate // 100)
    power = np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop)) ** 2  # (F, T)
    mel = librosa.feature.melspectrogram(
        S=power, sr=sample_rate, n_mels=40, fmax=min(8000.0, sample_rate / 2)
    )
    logmel = np.log(mel + 1e-10)
    logmel -= logmel.mean()
    centroid = librosa.feature.spectral_centroid(S=np.sqrt(power), sr=sample_rate)[0] / (sample_rate / 2)
    flatness = librosa.feature.spectral_flatness(S=np.sqrt(power))[0]
    rolloff = librosa.feature.spectral_rolloff(S=np.sqrt(power), sr=sample_rate)[0] / (sample_rate / 2)
    onset = onset_envelope(x, sample_rate)
    onset = onset / (onset.max() + 1e-12)
    stats = [np.mean(centroid), np.std(centroid), np.mean(flatness), np.std(flatness)]
    stats += [np.mean(rolloff), np.std(rolloff), np.mean(onset), np.std(onset)]
    return np.concatenate([logmel.mean(axis=1), logmel.std(axis=1), np.asarray(stats)]).astype(np.float32)


@runtime_checkable
class FamilyClassifier(Protocol):
    """An instrument-family classifier (e.g. trained on the synthetic corpus' `family` labels).

    `families`: the class names, in the order of `predict_proba`'s output (the corpus' families are
    `melfusion.recipes.embedded.synth.attributes.FAMILIES`). `predict_proba(audio, sample_rate)`: (len(families),)
    probabilities for one (T,) clip."""

    families: tuple[str, ...]

    def predict_proba(self, audio: np.ndarray, sample_rate: int) -> np.ndarray: ...


def estimate_family(audio: np.ndarray, sample_rate: int, classifier: FamilyClassifier) -> tuple[str, float]:
    """(family, probability) of the most probable family under `classifier`."""
    probs = np.asarray(classifier.predict_proba(_mono(audio, sample_rate), sample_rate), dtype=np.float64)
    if probs.shape != (len(classifier.families),):
        raise ValueError(
            f"classifier returned shape {probs.shape}, expected ({len(classifier.families)},) probabilities"
        )
    i = int(np.argmax(probs))
    return classifier.families[i], float(probs[i])
