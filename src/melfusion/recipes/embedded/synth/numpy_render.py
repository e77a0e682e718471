"""A small pure-numpy synthesiser for scores: additive and FM timbres per instrument family, noise-burst
drums, a short noise-tail reverb. Fast (a 5 s clip in a fraction of a second) and deterministic: the
only randomness is drawn from the generator passed in.

Timbres are caricatures, not samples: what matters for the corpus is that each family has a distinct,
stable spectral envelope and envelope shape (the instrument-family probe learns those), and that pitch,
harmony and onsets are exact (the tempo and mode probes read those).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve, lfilter

from melfusion.recipes.embedded.synth.score import DRUM_KEYS, Score


@dataclass(frozen=True)
class Timbre:
    """Additive partials `ratios`/`amps` (FM when `fm_index` > 0: carrier at 1, modulator at `fm_ratio`).
    `decay`: per-partial exponential decay rates in 1/s at middle C (0 = sustained), scaled by
    sqrt(f / 261.6 Hz); `attack`/`release` in s; `vibrato` in cents at `vibrato_rate` Hz; `voices`
    detuned copies (± `detune` cents); `breath`: noise level; `tremolo`: amplitude modulation depth."""

    ratios: tuple[float, ...]
    amps: tuple[float, ...]
    decay: tuple[float, ...] = ()
    attack: float = 0.005
    release: float = 0.08
    sustain: float = 1.0
    vibrato: float = 0.0
    vibrato_rate: float = 5.5
    voices: int = 1
    detune: float = 0.0
    breath: float = 0.0
    tremolo: float = 0.0
    fm_ratio: float = 0.0
    fm_index: float = 0.0
    fm_index_decay: float = 0.0
    brightness: float = 0.1  # softer notes are darker: amp_k *= v ** (brightness * (k - 1))
    gain: float = 1.0


def _harmonics(
    n: int, power: float = 1.0, odd_boost: float = 1.0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    ks = np.arange(1, n + 1, dtype=np.float64)
    amps = ks**-power
    amps[1::2] /= odd_boost  # even harmonics (k = 2, 4, ...) weakened when odd_boost > 1
    return tuple(ks.tolist()), tuple(amps.tolist())


def _plucked(n: int, position: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    ks = np.arange(1, n + 1, dtype=np.float64)
    amps = np.abs(np.sin(np.pi * ks * position)) / ks
    return tuple(ks.tolist()), tuple((amps / amps.max()).tolist())


def _decays(base: float, slope: float, n: int) -> tuple[float, ...]:
    return tuple((base + slope * np.arange(n)).tolist())


_R, _A = _harmonics(12, 1.2)
_GR, _GA = _plucked(14, 0.18)
_SR, _SA = _harmonics(16, 1.0)
_CR, _CA = _harmonics(14, 1.35)
_CLR, _CLA = _harmonics(11, 1.0, odd_boost=8.0)
_SXR, _SXA = _harmonics(12, 0.8)
_SAWR, _SAWA = _harmonics(20, 1.0)
_PADR, _PADA = _harmonics(12, 1.6)

TIMBRES: dict[str, Timbre] = {
    # keys / organ
    "piano": Timbre(_R, _A, _decays(0.9, 0.45, 12), attack=0.002, release=0.12, brightness=0.12),
    "electric piano": Timbre(
        (1.0,), (1.0,), (1.1,), attack=0.002, release=0.15, fm_ratio=1.0, fm_index=1.8, fm_index_decay=2.5
    ),
    "organ": Timbre(
        (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0),
        (0.5, 1.0, 0.75, 0.45, 0.35, 0.2, 0.12),
        attack=0.008,
        release=0.04,
        vibrato=7.0,
        vibrato_rate=6.5,
        brightness=0.0,
        gain=0.7,
    ),
    # guitars
    "acoustic guitar": Timbre(_GR, _GA, _decays(1.6, 0.9, 14), attack=0.002, release=0.06, brightness=0.1),
    "electric guitar": Timbre(
        _GR[:10], _GA[:10], _decays(0.7, 0.35, 10), attack=0.003, release=0.08, vibrato=4.0
    ),
    # strings
    "violin": Timbre(
        _SR, _SA, attack=0.07, release=0.12, vibrato=22.0, vibrato_rate=5.6, breath=0.01, gain=0.8
    ),
    "cello": Timbre(
        _CR, _CA, attack=0.08, release=0.15, vibrato=16.0, vibrato_rate=5.0, breath=0.01, gain=0.9
    ),
    "string ensemble": Timbre(
        _SR[:12], _SA[:12], attack=0.14, release=0.25, vibrato=10.0, voices=3, detune=9.0, gain=0.7
    ),
    # brass (FM: brightness follows the envelope)
    "trumpet": Timbre(
        (1.0,), (1.0,), attack=0.035, release=0.07, vibrato=8.0, fm_ratio=1.0, fm_index=3.2, gain=0.8
    ),
    "brass section": Timbre(
        (1.0,), (1.0,), attack=0.06, release=0.1, voices=2, detune=8.0, fm_ratio=1.0, fm_index=2.4, gain=0.75
    ),
    # reeds / pipe
    "saxophone": Timbre(_SXR, _SXA, attack=0.035, release=0.07, vibrato=14.0, breath=0.04, gain=0.7),
    "clarinet": Timbre(_CLR, _CLA, attack=0.04, release=0.06, brightness=0.05, gain=0.9),
    "flute": Timbre(
        (1.0, 2.0, 3.0, 4.0), (1.0, 0.3, 0.1, 0.04), attack=0.06, release=0.08, vibrato=12.0, breath=0.06
    ),
    # synths
    "synth lead": Timbre(
        _SAWR, _SAWA, attack=0.01, release=0.06, voices=2, detune=7.0, vibrato=6.0, gain=0.6
    ),
    "synth pad": Timbre(_PADR, _PADA, attack=0.25, release=0.4, voices=3, detune=11.0, gain=0.7),
    # mallets
    "marimba": Timbre((1.0, 3.93, 9.2), (1.0, 0.28, 0.07), (3.2, 11.0, 28.0), attack=0.001, release=0.05),
    "vibraphone": Timbre(
        (1.0, 4.0, 10.0), (1.0, 0.22, 0.05), (0.7, 3.0, 9.0), attack=0.001, release=0.3, tremolo=0.35
    ),
    # bass kinds
    "electric bass": Timbre(*_harmonics(8, 1.3), _decays(1.2, 0.7, 8), attack=0.004, release=0.05),
    "acoustic bass": Timbre(*_harmonics(6, 1.6), _decays(2.6, 1.4, 6), attack=0.004, release=0.05),
    "synth bass": Timbre(*_harmonics(10, 1.4), attack=0.004, release=0.04, sustain=0.8, gain=0.8),
}

# Stem levels in the mix.
_TRACK_GAIN = {"melody": 1.0, "chords": 0.45, "bass": 0.75, "drums": 0.8}


def _partials(
    ratios: np.ndarray,
    amps: np.ndarray,
    rates: np.ndarray | None,
    phase: np.ndarray,
    phi: float,
    t: np.ndarray,
) -> np.ndarray:
    """Σ_k amps[k] · exp(-rates[k] t) · sin(ratios[k] · phase + k · phi), (n,).

    When every ratio is a multiple of 1/2 the partials are powers of one complex phasor
    z = exp(i · phase / 2), updated by multiplication (several times faster than a sine per partial); and
    when the decay rates step evenly, the decays are powers of one real factor likewise."""
    k_idx = np.arange(1, len(ratios) + 1)
    steps = ratios * 2.0
    if len(ratios) == 0:
        return np.zeros_like(phase)
    if not np.allclose(steps, np.round(steps)) or len(ratios) < 3 or np.any(np.diff(steps) <= 0):
        partials = np.sin(np.outer(ratios, phase) + phi * k_idx[:, None])  # (K, n)
        if rates is not None:
            partials *= np.exp(-np.outer(rates, t))
        return (amps[:, None] * partials).sum(axis=0)  # numpy's own summation, no BLAS threads
    steps = np.round(steps).astype(int)
    z = np.exp(0.5j * phase)  # (n,) complex
    coeffs = amps * np.exp(1j * phi * k_idx)  # start phases folded into complex amplitudes
    linear_decay = rates is not None and np.allclose(np.diff(rates), rates[1] - rates[0])
    if linear_decay:
        decay = np.exp(-rates[0] * t)
        decay_step = np.exp(-(rates[1] - rates[0]) * t)
    acc = np.zeros(len(phase), dtype=np.complex128)
    power, current = 0, np.ones(len(phase), dtype=np.complex128)
    for k in range(len(ratios)):
        while power < steps[k]:  # z ** steps[k], steps ascending
            current = current * z
            power += 1
        term = coeffs[k] * current
        if rates is not None:
            if linear_decay:
                term = term * decay
                decay = decay * decay_step
            else:
                term = term * np.exp(-rates[k] * t)
        acc += term
    return acc.imag


def _render_note(
    timbre: Timbre, freq: float, dur_s: float, velocity: int, sr: int, rng: np.random.Generator
) -> np.ndarray:
    """One note, including its release tail; float64 (n,)."""
    n_on = max(1, int(round(dur_s * sr)))
    decaying = bool(timbre.decay)
    # Decaying notes are cut once 60 dB down; they still end `release` after the note-off.
    n = n_on + int(timbre.release * sr)
    if decaying:
        n = min(n, int(6.9 / (min(timbre.decay) * np.sqrt(freq / 261.6)) * sr) + 1)
    t = np.arange(n, dtype=np.float64) / sr
    v = velocity / 127.0

    # amplitude envelope: attack ramp, sustain level, release ramp after the note-off
    env = np.minimum(1.0, t / max(timbre.attack, 1e-4))
    if timbre.sustain < 1.0:
        env = env * (timbre.sustain + (1 - timbre.sustain) * np.exp(-t / 0.15))
    if n > n_on:
        rel = np.ones(n)
        tail = np.arange(n - n_on, dtype=np.float64) / sr
        rel[n_on:] = np.exp(-tail / max(timbre.release / 4.0, 1e-3))
        env = env * rel
    if timbre.tremolo:
        env = env * (1.0 - timbre.tremolo * 0.5 * (1 - np.cos(2 * np.pi * 5.5 * t)))

    # instantaneous pitch (vibrato fades in after 0.15 s)
    if timbre.vibrato:
        depth = timbre.vibrato * np.minimum(1.0, t / 0.3)
        ratio = 2.0 ** (depth * np.sin(2 * np.pi * timbre.vibrato_rate * t) / 1200.0)
        base_phase = 2 * np.pi * freq * np.cumsum(ratio) / sr
    else:
        base_phase = 2 * np.pi * freq * t

    detunes = [0.0]
    if timbre.voices > 1:
        detunes = np.linspace(-timbre.detune, timbre.detune, timbre.voices).tolist()
    scale = np.sqrt(freq / 261.6)
    nyquist = 0.45 * sr
    out = np.zeros(n)
    for cents in detunes:
        f_mul = 2.0 ** (cents / 1200.0)
        start_phase = rng.uniform(0, 2 * np.pi)
        if timbre.fm_index:
            index = timbre.fm_index * (0.4 + 0.6 * v)
            # e-piano: the index decays; brass: brightness follows the amplitude envelope
            mod_depth = index * np.exp(-t * timbre.fm_index_decay) if timbre.fm_index_decay else index * env
            mod = np.sin(timbre.fm_ratio * f_mul * base_phase)
            voice = np.sin(f_mul * base_phase + mod_depth * mod + start_phase)
            if timbre.decay:
                voice *= np.exp(-t * timbre.decay[0] * scale)
        else:
            ratios = np.asarray(timbre.ratios)
            keep = ratios * freq * f_mul < nyquist
            ratios = ratios[keep]
            amps = np.asarray(timbre.amps)[keep] * v ** (timbre.brightness * np.arange(keep.sum()))
            rates = np.asarray(timbre.decay)[keep] * scale if decaying else None
            voice = _partials(ratios, amps, rates, f_mul * base_phase, start_phase, t)
        out += voice
    out /= len(detunes)
    if timbre.breath:
        noise = lfilter([1.0, -0.6], [1.0], rng.standard_normal(n))
        out += timbre.breath * noise * np.minimum(1.0, t / 0.02)
    return out * env * v * timbre.gain


def _drum_samples(sr: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """One sample per GM drum key, drawn once per clip."""

    def t(seconds: float) -> np.ndarray:
        return np.arange(int(seconds * sr), dtype=np.float64) / sr

    def hp_noise(n: int, order: int) -> np.ndarray:
        x = rng.standard_normal(n)
        for _ in range(order):
            x = np.diff(x, prepend=0.0)
        return x / (np.abs(x).max() + 1e-9)

    def bp_noise(n: int) -> np.ndarray:
        x = lfilter([1.0, 0.0, -1.0], [1.0, -0.6, 0.3], rng.standard_normal(n))
        return x / (np.abs(x).max() + 1e-9)

    s = {}
    tk = t(0.35)
    f_kick = 45.0 + 95.0 * np.exp(-tk / 0.03)
    s["kick"] = np.sin(2 * np.pi * np.cumsum(f_kick) / sr) * np.exp(-tk / 0.12) + 0.3 * hp_noise(
        len(tk), 1
    ) * np.exp(-tk / 0.004)
    ts = t(0.25)
    s["snare"] = 0.8 * bp_noise(len(ts)) * np.exp(-ts / 0.07) + 0.5 * np.sin(2 * np.pi * 185 * ts) * np.exp(
        -ts / 0.04
    )
    s["rim"] = np.sin(2 * np.pi * 820 * t(0.06)) * np.exp(-t(0.06) / 0.012) + 0.3 * hp_noise(
        len(t(0.06)), 2
    ) * np.exp(-t(0.06) / 0.004)
    tc = t(0.3)
    clap = bp_noise(len(tc)) * np.exp(-tc / 0.06)
    for delay in (0.01, 0.02):
        d = int(delay * sr)
        clap[d:] += 0.7 * bp_noise(len(tc) - d) * np.exp(-tc[: len(tc) - d] / 0.008)
    s["clap"] = clap
    th = t(0.08)
    s["hat"] = 0.45 * hp_noise(len(th), 2) * np.exp(-th / 0.018)
    s["pedal"] = 0.35 * hp_noise(len(th), 2) * np.exp(-th / 0.012)
    s["shaker"] = 0.3 * hp_noise(len(th), 2) * np.minimum(1, th / 0.01) * np.exp(-th / 0.025)
    to = t(0.4)
    s["ohat"] = 0.4 * hp_noise(len(to), 2) * np.exp(-to / 0.12)
    tr = t(0.8)
    metal = sum(np.sin(2 * np.pi * f * tr) for f in (3100.0, 4260.0, 5070.0, 6890.0)) / 4
    s["ride"] = (0.25 * hp_noise(len(tr), 2) + 0.2 * metal) * np.exp(-tr / 0.35)
    tcr = t(1.5)
    s["crash"] = 0.45 * hp_noise(len(tcr), 1) * np.exp(-tcr / 0.5)
    return {DRUM_KEYS[name]: x for name, x in s.items()}


def _reverb_ir(sr: int, rng: np.random.Generator, rt60: float = 0.8) -> np.ndarray:
    t = np.arange(int(rt60 * sr), dtype=np.float64) / sr
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir = lfilter([0.5, 0.5], [1.0], ir)  # a little darker
    ir[: int(0.01 * sr)] = 0.0  # pre-delay
    return ir / np.sqrt(np.sum(ir**2))


def render_numpy(
    score: Score, sample_rate: int = 16000, rng: np.random.Generator | None = None, *, reverb: float = 0.12
) -> np.ndarray:
    """float32 (T,) of exactly round(score.seconds * sample_rate) samples, RMS about -18 dBFS, peak <= 0.95."""
    rng = np.random.default_rng(0) if rng is None else rng
    sr = int(sample_rate)
    n_out = int(round(score.seconds * sr))
    spb = score.seconds_per_beat
    pad = int(2.0 * sr)
    mix = np.zeros(n_out + pad)
    drums = _drum_samples(sr, rng)
    for track in score.tracks:
        gain = _TRACK_GAIN.get(track.name, 0.7)
        stem = np.zeros(n_out + pad)
        for note in track.notes:
            start = int(round(note.start * spb * sr))
            if start >= n_out:
                continue
            if track.channel == 9:
                x = drums.get(note.pitch)
                if x is None:
                    continue
                x = x * (note.velocity / 127.0) ** 1.5
            else:
                freq = 440.0 * 2.0 ** ((note.pitch - 69) / 12.0)
                x = _render_note(TIMBRES[track.timbre], freq, note.duration * spb, note.velocity, sr, rng)
            end = min(start + len(x), len(stem))
            stem[start:end] += x[: end - start]
        mix += gain * stem
    if reverb:
        wet = fftconvolve(mix, _reverb_ir(sr, rng))[: len(mix)]
        mix = mix + reverb * wet
    return finalize_mix(mix[:n_out], sr)


def finalize_mix(
    y: np.ndarray, sample_rate: int, *, rms_dbfs: float = -18.0, peak: float = 0.95
) -> np.ndarray:
    """Level a clip: RMS to `rms_dbfs`, then scaled down if its peak exceeds `peak`; a 20 ms fade-out
    (the clip is cut from longer music). float32 (T,)."""
    y = np.array(y, dtype=np.float64)
    rms = float(np.sqrt(np.mean(y**2))) if len(y) else 0.0
    if rms > 0:
        y *= 10 ** (rms_dbfs / 20) / rms
    top = float(np.abs(y).max()) if len(y) else 0.0
    if top > peak:
        y *= peak / top
    fade = min(int(0.02 * sample_rate), len(y))
    if fade:
        y[len(y) - fade :] *= np.linspace(1.0, 0.0, fade)
    return y.astype(np.float32)
