"""What a new user meets first: the version, and loudness targets the peak limit cannot reach."""

from __future__ import annotations

import json

import numpy as np
import pytest

from melfusion import __version__
from melfusion.audio.io import save_audio
from melfusion.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"melfusion {__version__}"


def test_a_loudness_target_the_peak_limit_cannot_reach_is_said_and_recorded(tmp_path):
    sr = 16000
    clicks = np.zeros(sr * 2, dtype=np.float32)
    clicks[:: sr // 4] = 0.9  # sparse peaks: loud peaks, very low loudness
    with pytest.warns(UserWarning, match="LUFS instead of the asked -14"):
        save_audio(tmp_path / "a.wav", clicks, sr, loudness_lufs=-14.0, metadata={"seed": 0})
    info = json.loads((tmp_path / "a.json").read_text())
    assert info["loudness_target_lufs"] == -14.0 and info["loudness_lufs"] < -15.0
    assert info["audio_samples"] == 2 * sr and "num_samples" not in info
