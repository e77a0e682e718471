from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from melfusion.errors import MelfusionInputError
from melfusion.guidance.preprocess import load_image, preprocess_image, resize_center_crop


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), dtype=np.uint8)  # landscape 40×20 with a red left half
    arr[:, :20, 0] = 255
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90° CW to display"
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.size == (20, 40) and loaded.mode == "RGB"  # displayed as portrait
    top = np.asarray(loaded)[:5].mean(axis=(0, 1))
    assert top[0] > 200  # the red half is on top after a 90° clockwise turn


def test_resize_center_crop_keeps_aspect_and_centre():
    arr = np.zeros((100, 300, 3), dtype=np.uint8)
    arr[:, 100:200] = 255  # white centre band
    out = resize_center_crop(Image.fromarray(arr), 32, 32)
    assert out.size == (32, 32)
    assert np.asarray(out).mean() > 240  # the crop is the centre third, all white


def test_preprocess_range_shape_and_rgb(tmp_path):
    gray = Image.fromarray(np.full((10, 10), 255, dtype=np.uint8), mode="L")
    px = preprocess_image(gray, 16, 24)
    assert px.shape == (1, 3, 16, 24) and px.dtype == torch.float32
    assert torch.allclose(px, torch.ones_like(px))
    rgba = Image.fromarray(np.zeros((8, 8, 4), dtype=np.uint8), mode="RGBA")
    assert preprocess_image(rgba, 8, 8).min() == -1.0


def test_truncated_file_is_reported(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8) + 7).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(MelfusionInputError, match="corrupt or truncated|not an image"):
        load_image(path)
