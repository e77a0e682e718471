"""`data check` and the training reader reject audio that decodes but is not audio: absurd amplitudes
(e.g. a float WAV scaled to 1e30) and a constant DC level with no signal."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from _data_helpers import write_jsonl, write_png

from melfusion.cli import main
from melfusion.data.check import check_manifest
from melfusion.data.dataset import TripletDataset, read_audio_window
from melfusion.data.manifest import read_manifest
from melfusion.errors import MelfusionInputError

RATE = 16000


def _float_wav(path, data: np.ndarray) -> str:
    sf.write(path, data.astype(np.float32), RATE, subtype="FLOAT")
    return path.name


def _sine(seconds: float = 2.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return amp * np.sin(2 * np.pi * 440.0 * t)


@pytest.fixture
def folder(tmp_path):
    write_png(tmp_path / "img.png")
    n = 2 * RATE
    clips = {
        "huge": _float_wav(tmp_path / "huge.wav", _sine() * 1e30),
        "dc": _float_wav(tmp_path / "dc.wav", np.full(n, 0.5)),
        # longer than one read block (65536 frames): the level around the mean is combined over blocks
        "dc_long": _float_wav(tmp_path / "dc_long.wav", np.full(5 * RATE, -0.25) + _sine(5.0, 1e-4)),
        "dc_plus_music": _float_wav(tmp_path / "dc_music.wav", 0.5 + _sine(5.0, 0.1)),
        "loud_float": _float_wav(tmp_path / "loud.wav", _sine() * 4.0),  # over full scale, but audio
        "good": _float_wav(tmp_path / "good.wav", _sine()),
    }
    rows = [{"id": k, "image": "img.png", "audio": v, "text": "a tune"} for k, v in clips.items()]
    return write_jsonl(tmp_path / "m.jsonl", rows)


def test_absurd_amplitude_and_constant_dc_are_unusable_with_a_reason(folder):
    report = check_manifest(read_manifest(folder), progress=False, num_workers=1)
    assert sorted(r.id for r in report.usable) == ["dc_plus_music", "good", "loud_float"]
    reasons = report.reasons
    assert reasons["huge"][0].startswith("audio corrupt: absurd amplitude: samples reach 3e+29")
    assert reasons["dc"][0].startswith("audio silent: constant DC offset 0.5 with no variation")
    assert reasons["dc_long"][0].startswith(
        "audio silent: constant DC offset -0.25 with -83.0 dBFS around it"
    )
    assert report.counts["corrupt"] == 1 and report.counts["silent"] == 2


def test_data_check_command_exits_2_when_only_such_files_are_left(tmp_path, folder, capsys):
    rows = [r for r in folder.read_text().splitlines() if '"huge"' in r or '"dc"' in r]
    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_text("\n".join(rows) + "\n")
    assert main(["data", "check", str(only_bad), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert "absurd amplitude" in out and "constant DC offset" in out
    assert "none of the 2 item(s)" in err


@pytest.mark.parametrize("value", ["nan", "5", "-inf"])
def test_bad_silence_threshold_is_refused(folder, value):
    assert main(["data", "check", str(folder), "--no-progress", f"--silence-dbfs={value}"]) == 2


def test_training_reader_skips_absurd_amplitudes(folder):
    with pytest.raises(MelfusionInputError, match="absurd amplitude"):
        read_audio_window(folder.parent / "huge.wav", RATE, RATE)
    audio, _, _ = read_audio_window(folder.parent / "loud.wav", RATE, RATE)
    assert np.abs(audio).max() > 1.1  # loud float audio (over full scale) is kept as it is
    records = [r for r in read_manifest(folder) if r.id in ("huge", "good")]
    ds = TripletDataset(records, sample_rate=RATE, num_samples=RATE, image_size=8, random_crop=False)
    assert ds[0 if ds.records[0].id == "huge" else 1] is None and ds.num_failed == 1
