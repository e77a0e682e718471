"""Audio + sidecar are committed as a pair: recovery of cut-off commits, live writers, concurrent writers."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from melfusion.audio.io import read_sidecar, recover_audio_pairs, save_audio, sidecar_matches_audio
from melfusion.errors import MelfusionInputError
from melfusion.utils.files import atomic_pair, pair_temporary, safe_file_stem, sha256_file

SR = 16000


def _tone(amp: float, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return amp * np.sin(2 * np.pi * 440 * t)


def _consistent(path) -> dict:
    info = read_sidecar(path)
    assert (
        info is not None and info["audio_sha256"] == sha256_file(path) and sidecar_matches_audio(path, info)
    )
    return info


def test_sidecar_records_the_audio_hash(tmp_path):
    path = save_audio(tmp_path / "a.flac", _tone(0.3), SR, metadata={"v": 1})
    info = _consistent(path)
    assert info["audio_file"] == "a.flac" and info["v"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac", "a.json"]


def test_cut_off_commits_are_rolled_forward_or_back(tmp_path):
    path = save_audio(tmp_path / "a.wav", _tone(0.3), SR, metadata={"v": 1})
    # a writer killed between its two renames: the new audio is in place, its sidecar still a temporary
    new = tmp_path / "new.wav"
    save_audio(new, _tone(0.1), SR, metadata={"v": 2})
    info = json.loads((tmp_path / "new.json").read_text())
    info["audio_file"] = "a.wav"
    os.replace(new, path)
    pair_temporary(tmp_path / "a.json", "ab" * 6, 2).write_text(json.dumps(info))
    (tmp_path / "new.json").unlink()
    # a writer killed before its first rename: two temporaries of another commit
    pair_temporary(tmp_path / "a.wav", "cd" * 6, 1).write_bytes(b"RIFF partial")
    pair_temporary(tmp_path / "a.json", "cd" * 6, 2).write_text("{}")
    # a stale sidecar temporary whose hash matches nothing is dropped, not rolled forward
    pair_temporary(tmp_path / "b.json", "ef" * 6, 2).write_text(json.dumps({**info, "audio_file": "b.wav"}))
    assert recover_audio_pairs(tmp_path) == 4
    assert _consistent(path)["v"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.wav"]


@pytest.mark.skipif(os.name != "posix", reason="flock")
def test_live_writers_temporaries_are_left_alone(tmp_path):
    started, release = threading.Event(), threading.Event()

    def writer() -> None:
        with atomic_pair(tmp_path / "x.wav", tmp_path / "x.json") as (tmp, write_second):
            tmp.write_bytes(b"audio")
            write_second(b"{}")
            started.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    assert started.wait(30)
    assert recover_audio_pairs(tmp_path) == 0 and len(list(tmp_path.iterdir())) == 2  # both temporaries
    release.set()
    thread.join(30)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.wav"]


def test_concurrent_writers_leave_a_consistent_pair(tmp_path):
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for j in range(4):
                save_audio(
                    tmp_path / "c.wav", _tone(0.05 + 0.01 * (4 * k + j)), SR, metadata={"k": k, "j": j}
                )
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    _consistent(tmp_path / "c.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.wav"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e6, -71.0, 0.5, True])
def test_save_audio_refuses_bad_loudness(tmp_path, bad):
    with pytest.raises(MelfusionInputError, match=r"LUFS value in \[-70, 0\]"):
        save_audio(tmp_path / "o.wav", _tone(0.3), SR, loudness_lufs=bad, metadata={})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("../../X", "X"),
        ("/abs/dir/Y", "abs_dir_Y"),
        ("..", ""),
        (".hidden", "hidden"),
        ("a\\b\x00c", "a_b_c"),
        ("plain name-1", "plain name-1"),
        ("é" * 150, "é" * 100),
    ],
)
def test_safe_file_stem(name, stem):
    assert safe_file_stem(name) == stem
