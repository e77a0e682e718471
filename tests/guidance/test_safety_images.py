"""High bit depth images keep their contrast; non-regular files (FIFOs) are refused instead of hanging."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from melfusion.cli import main
from melfusion.errors import MelfusionInputError
from melfusion.guidance.preprocess import load_image, to_pil


def _ramp(lo: float, hi: float, dtype: type) -> np.ndarray:
    return np.linspace(lo, hi, 16 * 24).reshape(16, 24).astype(dtype)


def test_16bit_png_uses_its_range(tmp_path):
    path = tmp_path / "depth.png"
    Image.fromarray(_ramp(1000, 3000, np.uint16)).save(path)  # opened as I;16: plain convert → all white
    assert Image.open(path).mode.startswith("I")
    gray = np.asarray(load_image(path))[..., 0]
    assert gray.min() == 0 and gray.max() == 255 and 100 < gray.mean() < 155


def test_float_tiff_uses_its_range(tmp_path):
    path = tmp_path / "linear.tif"
    Image.fromarray(_ramp(0.0, 1.0, np.float32), mode="F").save(path)  # plain convert → all black
    assert Image.open(path).mode == "F"
    gray = np.asarray(load_image(path))[..., 0]
    assert gray.min() == 0 and gray.max() == 255 and 100 < gray.mean() < 155
    # a constant float image has no range: scaled by 1.0 (0.5 → mid grey), NaN pixels do not poison it
    arr = np.full((8, 8), 0.5, dtype=np.float32)
    arr[0, 0] = np.nan
    assert np.asarray(to_pil(Image.fromarray(arr, mode="F")))[4, 4].tolist() == [128, 128, 128]
    # 8-bit inputs are unchanged
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(to_pil(Image.fromarray(rgb))), rgb)


def _with_timeout(fn, seconds: float = 30.0):
    box: dict[str, BaseException | object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    return thread.is_alive(), box


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_image_is_refused_not_waited_on(tmp_path, capsys):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    try:
        hung, box = _with_timeout(lambda: load_image(fifo))
        assert not hung, "load_image blocked on a FIFO"
        assert isinstance(box.get("error"), MelfusionInputError) and "not a regular file" in str(box["error"])
        argv = ["generate", "--image", str(fifo), "--text", "x", "--out", str(tmp_path / "o.wav")]
        hung, box = _with_timeout(lambda: main(argv))
        assert not hung and box.get("value") == 2
        assert "not a regular file" in capsys.readouterr().err
        manifest_fifo = tmp_path / "rows.jsonl"
        os.mkfifo(manifest_fifo)
        argv = ["generate", "--manifest", str(manifest_fifo), "--out-dir", str(tmp_path / "gen")]
        hung, box = _with_timeout(lambda: main(argv))
        assert not hung and box.get("value") == 2
        assert "not a regular file" in capsys.readouterr().err
    finally:  # unblock a thread stuck in open() on the old code, so the test run can end
        for f in tmp_path.iterdir():
            if f.is_fifo():
                try:
                    fd = os.open(f, os.O_WRONLY | os.O_NONBLOCK)
                    os.close(fd)
                except OSError:
                    pass


@pytest.mark.skipif(sys.platform != "linux", reason="/dev/zero is a Linux device")
def test_device_file_is_refused():
    with pytest.raises(MelfusionInputError, match="not a regular file"):
        load_image("/dev/zero")
