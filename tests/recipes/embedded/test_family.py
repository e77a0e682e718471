"""The logistic instrument-family classifier: it learns two clearly different timbres, round-trips through
safetensors, trains from a synth-style manifest and rejects bad input with a clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from melfusion.recipes.embedded.family import FEATURE_DIM, LogisticFamilyClassifier, train_family_classifier
from melfusion.recipes.embedded.probes import FamilyClassifier, estimate_family, timbre_features

SR = 16000


def _clip(kind: str, midi: int, seed: int, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    """A few decaying notes: 'soft' = sine with a weak octave, 'bright' = band-limited square wave."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = np.zeros_like(t)
    for k, start in enumerate(np.arange(0.0, seconds, 0.25)):
        f0 = 440.0 * 2 ** ((midi + 2 * (k % 3) - 69) / 12)
        tt = np.clip(t - start, 0.0, None)
        env = (t >= start) * np.exp(-tt / 0.3)
        if kind == "soft":
            note = np.sin(2 * np.pi * f0 * tt) + 0.1 * np.sin(4 * np.pi * f0 * tt)
        else:
            harmonics = range(1, int(0.45 * sr / f0), 2)
            note = sum(np.sin(2 * np.pi * h * f0 * tt) / h for h in harmonics)
        y += env * note
    y = 0.3 * y / np.abs(y).max() + 0.002 * rng.standard_normal(t.size)
    return y.astype(np.float32)


def _set(midis: list[int], seed: int) -> tuple[list[np.ndarray], list[str]]:
    audios, labels = [], []
    for i, midi in enumerate(midis):
        for kind in ("soft", "bright"):
            audios.append(_clip(kind, midi, seed + i))
            labels.append(kind)
    return audios, labels


@pytest.fixture(scope="module")
def fitted() -> LogisticFamilyClassifier:
    audios, labels = _set([48, 55, 60, 64, 67, 72], seed=0)
    return LogisticFamilyClassifier().fit(audios, SR, labels)


def test_separates_two_timbres(fitted):
    assert isinstance(fitted, FamilyClassifier)
    assert fitted.families == ("bright", "soft")
    audios, labels = _set([50, 57, 62, 69], seed=100)  # pitches not seen in training
    for audio, label in zip(audios, labels):
        probs = fitted.predict_proba(audio, SR)
        assert probs.shape == (2,) and probs.sum() == pytest.approx(1.0)
        family, prob = estimate_family(audio, SR, fitted)
        assert family == label and prob > 0.5
    # another sample rate is resampled to the training rate
    assert fitted.predict(_clip("bright", 60, 7, sr=22050), 22050) == "bright"


def test_fit_is_deterministic(fitted):
    audios, labels = _set([48, 55, 60, 64, 67, 72], seed=0)
    again = LogisticFamilyClassifier().fit(audios, SR, labels)
    np.testing.assert_array_equal(again.weight, fitted.weight)
    np.testing.assert_array_equal(again.bias, fitted.bias)


def test_save_load_identical(fitted, tmp_path):
    path = fitted.save(tmp_path / "sub" / "family.safetensors")
    assert path.is_file() and not list(path.parent.glob(".*tmp*"))
    loaded = LogisticFamilyClassifier.load(path)
    assert loaded.families == fitted.families and loaded.sample_rate == fitted.sample_rate
    clip = _clip("soft", 62, 3)
    np.testing.assert_array_equal(loaded.predict_proba(clip, SR), fitted.predict_proba(clip, SR))


def test_bad_input(fitted, tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        LogisticFamilyClassifier().predict_proba(_clip("soft", 60, 0), SR)
    with pytest.raises(ValueError, match="mono"):
        fitted.predict_proba(np.zeros((2, 3, 4), dtype=np.float32), SR)
    with pytest.raises(ValueError, match="NaN"):
        fitted.predict_proba(np.full(SR, np.nan, dtype=np.float32), SR)
    with pytest.raises(ValueError, match="sample_rate"):
        fitted.predict_proba(_clip("soft", 60, 0), 0)
    with pytest.raises(ValueError, match="labels"):
        LogisticFamilyClassifier().fit([_clip("soft", 60, 0)], SR, ["soft", "bright"])
    with pytest.raises(ValueError, match="at least 2 families"):
        LogisticFamilyClassifier().fit([_clip("soft", 60, 0)], SR, ["soft"])
    with pytest.raises(ValueError, match="features must be"):
        fitted.predict_proba_features(np.zeros(FEATURE_DIM + 1))
    with pytest.raises(RuntimeError, match="unfitted"):
        LogisticFamilyClassifier().save(tmp_path / "x.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a safetensors file"):
        LogisticFamilyClassifier.load(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        LogisticFamilyClassifier.load(tmp_path / "missing.safetensors")
    assert timbre_features(_clip("soft", 60, 0), SR).shape == (FEATURE_DIM,)


def test_train_from_manifest(tmp_path):
    (tmp_path / "audio").mkdir()
    rows = []
    for i, midi in enumerate([48, 55, 60, 64, 67]):
        for kind in ("soft", "bright"):
            name = f"audio/{kind}{i}.wav"
            sf.write(tmp_path / name, _clip(kind, midi, i), SR)
            rows.append({"id": f"{kind}{i}", "audio": name, "family": kind, "text": "x"})
    rows.append({"id": "gone", "audio": "audio/missing.wav", "family": "soft"})
    rows.append({"id": "nolabel", "audio": "audio/soft0.wav"})
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

    with pytest.warns(UserWarning, match="skipped 2"):
        clf = train_family_classifier(manifest, progress=False)
    assert clf.families == ("bright", "soft")
    assert clf.predict(_clip("bright", 58, 50), SR) == "bright"
    assert clf.predict(_clip("soft", 58, 51), SR) == "soft"

    with pytest.warns(UserWarning, match="skipped 1"):  # the unlabelled row
        small = train_family_classifier(manifest, max_items=4, progress=False)  # 2 per family
    assert small.families == ("bright", "soft")
    with pytest.raises(FileNotFoundError):
        train_family_classifier(tmp_path / "nope.jsonl", progress=False)
