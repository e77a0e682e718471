"""Image input handling: open and validate files, EXIF orientation, RGB, resize + centre crop, [-1, 1]."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from melfusion.errors import MelfusionInputError

# Larger inputs are refused before decoding (a 100-megapixel photo is 400 MB of RGBA; nothing here needs it).
MAX_IMAGE_PIXELS = 64_000_000

ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer or float single-channel image → 8-bit RGB by its real value range.

    Pillow's own ``convert`` clips these to 0..255 (a 16-bit photo turns white, a float one in [0, 1] black).
    A constant image has no range: it is scaled by its type's full scale (65535 for 16-bit, 1.0 for float)."""
    arr = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        return Image.new("RGB", image.size)
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    arr = np.where(finite, arr, lo)
    if hi > lo:
        scaled = (arr - lo) / (hi - lo)
    else:
        if image.mode == "F":
            full = 1.0
        elif image.mode.startswith("I;16") or hi <= 65535:
            full = 65535.0
        else:
            full = float(2**31 - 1)
        scaled = np.full_like(arr, lo / full)
    gray = (np.clip(scaled, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """EXIF orientation applied, then 8-bit RGB (high bit depth images by their real range)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _high_depth_to_rgb(image)
    return image.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file with clear errors for missing, unreadable, non-image, oversized and non-regular
    (FIFO, device, socket: opening them could block forever) inputs."""
    p = Path(path)
    if not p.exists():
        raise MelfusionInputError(f"image not found: {p} (check the path)")
    if p.is_dir():
        raise MelfusionInputError(f"image path is a directory: {p} (give an image file)")
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer; no effect on regular files
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except PermissionError as err:
        raise MelfusionInputError(
            f"image not readable: {p} ({err.strerror}; check file permissions)"
        ) from None
    except OSError as err:
        raise MelfusionInputError(f"image not readable: {p} ({err.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise MelfusionInputError(
                f"image is not a regular file: {p} (a FIFO, device or socket; give an image file)"
            )
        try:
            probe = Image.open(f)
            width, height = probe.size
        except (UnidentifiedImageError, OSError):
            raise MelfusionInputError(
                f"not an image file: {p} (give a PNG, JPEG, WebP or another format Pillow reads)"
            ) from None
        except Image.DecompressionBombError:
            raise MelfusionInputError(
                f"image too large to open safely: {p} (resize it below 64 megapixels)"
            ) from None
        if width * height > MAX_IMAGE_PIXELS:
            raise MelfusionInputError(
                f"image too large: {p} is {width}x{height} = {width * height / 1e6:.0f} megapixels "
                f"(limit {MAX_IMAGE_PIXELS / 1e6:.0f}); resize it first"
            )
        try:
            with probe as im:
                im.load()
                return to_rgb(im)
        except (OSError, SyntaxError, ValueError) as err:
            raise MelfusionInputError(f"image file is corrupt or truncated: {p} ({err})") from None


def to_pil(image: ImageInput) -> Image.Image:
    """Accept a path, a PIL image, an HWC uint8 array or a CHW float tensor in [0, 1]; return RGB PIL."""
    if isinstance(image, str | os.PathLike):
        return load_image(image)
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, torch.Tensor):
        if image.ndim != 3:
            raise MelfusionInputError(f"image tensors must be (C, H, W), got shape {tuple(image.shape)}")
        arr = (
            (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        )
        return Image.fromarray(arr).convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise MelfusionInputError("image arrays must be uint8 (H, W) or (H, W, C)")
        return Image.fromarray(image).convert("RGB")
    raise MelfusionInputError(f"unsupported image type {type(image).__name__}; give a path or a PIL image")


def resize_center_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """Scale so the image covers (height, width), then crop the centre (keeps aspect, no distortion)."""
    w, h = image.size
    scale = max(width / w, height / h)
    new = (max(width, round(w * scale)), max(height, round(h * scale)))
    image = image.resize(new, Image.Resampling.BICUBIC, reducing_gap=3.0)
    left = (new[0] - width) // 2
    top = (new[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


def preprocess_image(image: ImageInput, height: int, width: int) -> torch.Tensor:
    """Image → (1, 3, H, W) float32 in [-1, 1] for an LDM VAE encoder."""
    pil = resize_center_crop(to_pil(image), height, width)
    arr = np.asarray(pil, dtype=np.float32) / 127.5 - 1.0  # (H, W, 3), RGB order
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
