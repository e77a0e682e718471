"""Audio file I/O: loading/resampling, safe saving, loudness, atomic writes, errors."""

from __future__ import annotations

import json

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import torch

from melfusion.audio import load_audio, loudness_normalize, measure_loudness, peak_normalize, save_audio
from melfusion.errors import MelfusionInputError
from melfusion.utils.files import atomic_path, atomic_write_json, sha256_file

SR = 16000


def _tone(seconds: float = 3.0, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return amp * np.sin(2 * np.pi * 440 * t)


def test_load_stereo_flac_44k_to_mono_16k(tmp_path):
    t = np.arange(44100) / 44100
    left, right = 0.5 * np.sin(2 * np.pi * 300 * t), 0.1 * np.sin(2 * np.pi * 300 * t)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), 44100)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.shape == (16000,)
    assert np.abs(audio[1000:-1000]).max() == pytest.approx(0.3, abs=0.01)  # channel mean
    both = load_audio(path, sample_rate=22050, mono=False)
    assert both.shape == (2, 22050) and both.dtype == np.float32


def test_load_errors_name_file_and_fix(tmp_path):
    with pytest.raises(MelfusionInputError, match="missing.wav does not exist"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(MelfusionInputError, match="is a directory"):
        load_audio(tmp_path)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(MelfusionInputError, match=r"cannot read .*empty.wav as audio.*convert it"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "notes.txt").write_text("not audio")
    with pytest.raises(MelfusionInputError, match="notes.txt"):
        load_audio(tmp_path / "notes.txt")
    sf.write(tmp_path / "zero.wav", np.zeros((0, 1)), SR)
    with pytest.raises(MelfusionInputError, match="no samples"):
        load_audio(tmp_path / "zero.wav")


def test_save_never_clips_and_accepts_torch(tmp_path):
    x = _tone(1.0, amp=3.0)
    out = save_audio(tmp_path / "loud.wav", torch.from_numpy(x).float(), SR)
    data, sr = sf.read(out)
    assert sr == SR and data.shape == (SR,)
    assert np.abs(data).max() <= 0.99 + 1 / 32768
    quiet = save_audio(tmp_path / "quiet.flac", _tone(1.0, amp=0.25)[None].repeat(2, 0), SR)
    data, _ = sf.read(quiet)
    assert data.shape == (SR, 2) and np.abs(data).max() == pytest.approx(0.25, abs=1e-3)  # untouched


@pytest.mark.parametrize("kind", ["sine", "noise"])
def test_loudness_target_within_half_lu(tmp_path, kind):
    x = _tone(3.0) if kind == "sine" else np.random.default_rng(0).standard_normal(3 * SR) * 0.05
    out = save_audio(tmp_path / f"{kind}.wav", x, SR, loudness_lufs=-23.0)
    data, _ = sf.read(out)
    assert abs(pyloudnorm.Meter(SR).integrated_loudness(data) - (-23.0)) < 0.5


def test_loudness_then_peak_safety_wins(tmp_path):
    # Very loud target on noise: the peak limit caps the gain, never clipping.
    x = np.random.default_rng(1).standard_normal(3 * SR) * 0.05
    with pytest.warns(UserWarning, match="peak limit"):  # and it says so
        data, _ = sf.read(save_audio(tmp_path / "hot.wav", x, SR, loudness_lufs=0.0))
    assert np.abs(data).max() <= 0.99 + 1 / 32768


def test_loudness_skipped_with_warning_for_short_or_silent(tmp_path):
    with pytest.warns(UserWarning, match="shorter than 0.4 s or silent"):
        save_audio(tmp_path / "short.wav", _tone(0.2), SR, loudness_lufs=-20.0)
    with pytest.warns(UserWarning, match="skipped"):
        save_audio(tmp_path / "silent.wav", np.zeros(SR), SR, loudness_lufs=-20.0)
    assert measure_loudness(np.zeros(SR), SR) is None


def test_sidecar_content(tmp_path):
    out = save_audio(
        tmp_path / "gen" / "out.wav", _tone(2.0), SR, metadata={"prompt": "calm piano", "seed": 7}
    )
    assert out == tmp_path / "gen" / "out.wav"
    info = json.loads((tmp_path / "gen" / "out.json").read_text())
    assert info["prompt"] == "calm piano" and info["seed"] == 7
    assert info["sample_rate"] == SR and info["audio_samples"] == 2 * SR and info["duration_s"] == 2.0
    assert info["loudness_lufs"] == pytest.approx(measure_loudness(_tone(2.0), SR), abs=1e-6)
    save_audio(tmp_path / "short.flac", _tone(0.1), SR, metadata={})
    assert json.loads((tmp_path / "short.json").read_text())["loudness_lufs"] is None


def test_atomic_failure_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "out.wav"
    save_audio(path, _tone(1.0), SR, metadata={"v": 1})
    before, before_json = sha256_file(path), (tmp_path / "out.json").read_bytes()

    def broken_write(file, *args, **kwargs):
        with open(file, "wb") as f:  # half a file, then a crash
            f.write(b"RIFF garbage")
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        save_audio(path, _tone(1.0, amp=0.1), SR, metadata={"v": 2})
    assert sha256_file(path) == before and (tmp_path / "out.json").read_bytes() == before_json
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.wav"]


def test_atomic_helpers(tmp_path):
    target = tmp_path / "a" / "b.json"
    atomic_write_json(target, {"z": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "z": 1\n}\n'
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".json"
        tmp.write_text("partial")
        raise RuntimeError
    assert json.loads(target.read_text()) == {"a": [1, 2], "z": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.json"]
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.json"]


@pytest.mark.parametrize(
    ("name", "waveform", "kwargs", "match"),
    [
        ("out.aiff", np.zeros(100), {}, r"use a \.wav, \.flac, \.mp3 or \.ogg"),
        ("out.wav", np.array([0.0, np.nan]), {}, "NaN or infinite"),
        ("out.wav", np.array([0.0, np.inf]), {}, "NaN or infinite"),
        ("out.wav", np.zeros(0), {}, "empty"),
        ("out.wav", np.zeros((1000, 2)), {}, r"transpose a \(T, C\)"),
        ("out.wav", np.zeros((1, 2, 3)), {}, r"shape \(T,\) or \(C, T\)"),
        ("out.wav", np.zeros(100), {"sample_rate": 0}, "sample_rate"),
        ("out.flac", np.zeros(100), {"subtype": "FLOAT"}, "not valid for FLAC"),
        ("out.wav", np.zeros(100), {"metadata": {"x": object()}}, "not JSON-serialisable"),
    ],
)
def test_save_bad_inputs(tmp_path, name, waveform, kwargs, match):
    kwargs = {"sample_rate": SR, **kwargs}
    with pytest.raises(MelfusionInputError, match=match):
        save_audio(tmp_path / name, waveform, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_pure_normalizers():
    x = _tone(3.0, amp=0.1)
    assert np.abs(peak_normalize(x)).max() == pytest.approx(0.99)
    assert np.array_equal(peak_normalize(x, reduce_only=True), x)
    assert measure_loudness(loudness_normalize(x, SR, -18.0), SR) == pytest.approx(-18.0, abs=0.01)
    assert np.array_equal(peak_normalize(np.zeros(10)), np.zeros(10))


@pytest.mark.parametrize("suffix", [".mp3", ".ogg"])
def test_lossy_formats_save_with_a_sidecar_and_load_back(tmp_path, suffix):
    path = save_audio(tmp_path / f"tone{suffix}", _tone(1.0, amp=0.3), SR, metadata={"seed": 1})
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["audio_file"] == path.name and info["audio_sha256"] == sha256_file(path)
    back = load_audio(path, SR)
    assert abs(back.shape[-1] - SR) < 0.1 * SR  # codec padding at most
    assert 0.1 < float(np.abs(back).max()) < 0.5
