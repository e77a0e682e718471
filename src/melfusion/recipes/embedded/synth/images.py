"""Procedural images whose colours carry the music's mood.

Palmer, Schloss, Xu & Prado-León, "Music–color associations are mediated by emotion", PNAS 110 (2013):
faster music in the major mode goes with lighter, more saturated, yellower colours; slower music in
the minor mode with darker, desaturated, bluer ones. Colours are set in CIE L*C*h (lightness, chroma,
hue angle of CIELAB), where lightness and saturation are separate perceptual dimensions. Both
attributes move all three dimensions in those directions, with different weights so that the four
(mode, tempo) cells stay apart:

- mode (valence) mostly moves lightness: L* = 55 ± 17 (major +, minor -), chroma ± 8;
- tempo (arousal, on [-1, 1], continuous in the bpm so the colours also tell roughly how fast) mostly
  moves chroma: C* ± 22, and lightness ± 7;
- hue follows both: major/fast yellow-orange (h 75°), major/slow yellow-green (120°), minor/fast
  crimson (20°), minor/slow blue (265°) — from minor to major and from slow to fast CIELAB b*
  ("yellowness") always rises.

The scene (landscape, seascape or abstract shapes), its layout and small colour jitter are random and
independent of every attribute, so only the colours tell the mood; the image says nothing of
instrument or genre.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from melfusion.recipes.embedded.synth.attributes import TEMPO_CLASS_BOUNDARY_BPM, Attributes

SCENES = ("landscape", "seascape", "abstract")
SUPERSAMPLE = 4  # drawn at 4x and box-filtered down: smooth edges, deterministic

# CIE hue angle (degrees) at the slow and the fast end, per mode; interpolated along the shorter arc.
_HUE_ANCHORS = {"major": (120.0, 75.0), "minor": (265.0, 20.0)}


def arousal(bpm: float) -> float:
    """Tempo on [-1, 1]: -1 at <= 80 bpm, +1 at >= 128 bpm (0 at the 104 bpm class boundary)."""
    return float(np.clip((bpm - TEMPO_CLASS_BOUNDARY_BPM) / 24.0, -1.0, 1.0))


def mood_color(mode: str, bpm: float) -> tuple[float, float, float]:
    """The mood's base colour (CIE hue angle in degrees, L*, C*), before jitter."""
    v = 1.0 if mode == "major" else -1.0
    a = arousal(bpm)
    slow_hue, fast_hue = _HUE_ANCHORS[mode]
    delta = (fast_hue - slow_hue + 180.0) % 360.0 - 180.0  # shorter arc
    hue = (slow_hue + delta * (a + 1.0) / 2.0) % 360.0
    lightness = 55.0 + 17.0 * v + 7.0 * a
    chroma = 38.0 + 8.0 * v + 22.0 * a
    return hue, lightness, chroma


_M_RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])


def _lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65) -> sRGB in [0, 1] before clipping (values outside mean out of gamut)."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE_D65
    lin = xyz @ np.linalg.inv(_M_RGB_TO_XYZ).T
    lin = np.clip(lin, 0.0, None)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)


def lch_to_rgb(hue: float, lightness: float, chroma: float) -> np.ndarray:
    """One CIE L*C*h colour -> sRGB (3,) in [0, 1]; out-of-gamut colours lose chroma until they fit."""
    lightness = float(np.clip(lightness, 3.0, 97.0))
    chroma = max(0.0, float(chroma))
    h = np.deg2rad(hue)
    for _ in range(80):
        rgb = _lab_to_srgb(np.array([lightness, chroma * np.cos(h), chroma * np.sin(h)]))
        if np.all(rgb >= -1e-6) and np.all(rgb <= 1 + 1e-6):
            break
        chroma *= 0.95
    return np.clip(rgb, 0.0, 1.0)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (uint8 or float in [0, 1], (..., 3)) -> CIELAB (D65), (..., 3): L* in [0, 100], a*, b*."""
    x = np.asarray(rgb, dtype=np.float64)
    if np.asarray(rgb).dtype == np.uint8:
        x = x / 255.0
    lin = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _M_RGB_TO_XYZ.T / _WHITE_D65
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1
    )


def color_stats(image: Image.Image | np.ndarray) -> dict[str, float]:
    """Mean CIELAB lightness L*, chroma C*, yellowness b*, and mean HSV saturation of an RGB image."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    lab = srgb_to_lab(rgb)
    x = rgb.astype(np.float64) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float64)
    mx, mn = x.max(axis=-1), x.min(axis=-1)
    hsv_s = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-12), 0.0)
    return {
        "lightness": float(lab[..., 0].mean()),
        "chroma": float(np.hypot(lab[..., 1], lab[..., 2]).mean()),
        "yellowness": float(lab[..., 2].mean()),
        "saturation": float(hsv_s.mean()),
    }


class _Canvas:
    """An RGB float canvas at SUPERSAMPLE x the output size, painted with masks."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.n = size * SUPERSAMPLE
        c = (np.arange(self.n, dtype=np.float64) + 0.5) / self.n
        self.y, self.x = np.meshgrid(c, c, indexing="ij")  # (n, n), 0 = top / left
        self.rgb = np.zeros((self.n, self.n, 3))

    def fill(self, mask: np.ndarray, color: np.ndarray, alpha: float | np.ndarray = 1.0) -> None:
        a = mask.astype(np.float64) * alpha
        self.rgb = self.rgb * (1 - a[..., None]) + np.asarray(color) * a[..., None]

    def image(self) -> Image.Image:
        k = SUPERSAMPLE
        small = self.rgb.reshape(self.size, k, self.size, k, 3).mean(axis=(1, 3))
        return Image.fromarray(np.clip(np.round(small * 255.0), 0, 255).astype(np.uint8), mode="RGB")


def _color(h: float, lightness: float, chroma: float) -> np.ndarray:
    return lch_to_rgb(h, lightness, chroma)


def _gradient(canvas: _Canvas, top: np.ndarray, bottom: np.ndarray, t: np.ndarray) -> None:
    t = np.clip(t, 0.0, 1.0)[..., None]
    canvas.rgb = top * (1 - t) + bottom * t


def _celestial(
    canvas: _Canvas, rng: np.random.Generator, hue: float, light: float, chroma: float, y_max: float
) -> None:
    cx, cy = rng.uniform(0.15, 0.85), rng.uniform(0.1, y_max)
    r = rng.uniform(0.06, 0.12)
    d = np.hypot(canvas.x - cx, canvas.y - cy)
    if light >= 50.0:  # sun: a disc in a lighter, yellower tint of the mood colour, with a glow
        sun = _color(hue + 0.35 * (((85.0 - hue + 180.0) % 360.0) - 180.0), light + 22.0, chroma + 10.0)
        canvas.fill(np.ones_like(d, dtype=bool), sun, np.clip(1.0 - (d - r) / (2.5 * r), 0.0, 0.35))
        canvas.fill(d < r, sun)
    else:  # moon: a pale crescent, and stars
        moon = _color(hue, min(88.0, light + 45.0), chroma * 0.3)
        crescent = (d < r) & (np.hypot(canvas.x - cx - 0.45 * r, canvas.y - cy + 0.2 * r) > 0.85 * r)
        canvas.fill(crescent, moon)
        for _ in range(int(rng.integers(6, 16))):
            sx, sy = rng.uniform(0, 1), rng.uniform(0, y_max + 0.1)
            canvas.fill(np.hypot(canvas.x - sx, canvas.y - sy) < 0.006, moon, 0.8)


def _ridge(canvas: _Canvas, rng: np.random.Generator, base: float, amp: float) -> np.ndarray:
    """Mask below a random smooth ridge line whose mean height is `base` (0 = top)."""
    line = np.full_like(canvas.x[0], base)
    for k in range(1, 4):
        line += amp / k * np.sin(2 * np.pi * (k * rng.uniform(0.5, 1.5) * canvas.x[0] + rng.uniform(0, 1)))
    return canvas.y > line[None, :]


def render_image(attributes: Attributes, size: int, rng: np.random.Generator) -> Image.Image:
    """An RGB `size` x `size` scene coloured by the attributes' mode and tempo (see the module doc)."""
    if size < 8:
        raise ValueError(f"image size must be >= 8 pixels, got {size}")
    hue0, light0, chroma0 = mood_color(attributes.mode, attributes.bpm)
    hue = hue0 + rng.normal(0.0, 8.0)
    light = light0 + rng.normal(0.0, 2.5)
    chroma = max(0.0, chroma0 + rng.normal(0.0, 3.0))
    canvas = _Canvas(size)
    scene = SCENES[int(rng.integers(len(SCENES)))]
    if scene in ("landscape", "seascape"):
        horizon = rng.uniform(0.5, 0.7)
        top = _color(hue + 10, light - 12, chroma)
        bottom = _color(hue - 12, light + 12, chroma * 0.8)
        _gradient(canvas, top, bottom, canvas.y / horizon)
        _celestial(canvas, rng, hue, light, chroma, horizon - 0.2)
        if scene == "landscape":
            layers = int(rng.integers(2, 4))
            for k in range(layers):
                base = horizon - 0.08 + k * (1.0 - horizon) / layers
                shade = _color(hue + rng.uniform(-25, 25), light - 8 - 8 * k, chroma * 0.9)
                canvas.fill(_ridge(canvas, rng, base, rng.uniform(0.02, 0.07)), shade)
        else:
            sea_top = _color(hue + 15, light - 5, chroma * 0.95)
            sea_bottom = _color(hue + 25, light - 22, chroma * 0.85)
            t = np.clip((canvas.y - horizon) / (1.0 - horizon), 0, 1)[..., None]
            sea = sea_top * (1 - t) + sea_bottom * t
            below = canvas.y > horizon
            canvas.rgb = np.where(below[..., None], sea, canvas.rgb)
            waves = below & (
                np.sin(2 * np.pi * (canvas.y * rng.uniform(18, 30) + 0.3 * np.sin(8 * canvas.x))) > 0.85
            )
            canvas.fill(waves, _color(hue + 15, light + 8, chroma * 0.8), 0.5)
    else:  # abstract: a diagonal gradient and shapes in the palette
        angle = rng.uniform(0, np.pi)
        t = (np.cos(angle) * canvas.x + np.sin(angle) * canvas.y + 1.0) / 2.5
        _gradient(canvas, _color(hue - 10, light - 10, chroma), _color(hue + 20, light + 10, chroma * 0.9), t)
        for _ in range(int(rng.integers(4, 10))):
            color = _color(
                hue + rng.uniform(-40, 40), light + rng.uniform(-15, 15), chroma * rng.uniform(0.8, 1.2)
            )
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.06, 0.22)
            kind = int(rng.integers(3))
            if kind == 0:
                mask = np.hypot(canvas.x - cx, canvas.y - cy) < r
            elif kind == 1:
                mask = (np.abs(canvas.x - cx) < r) & (np.abs(canvas.y - cy) < r * rng.uniform(0.4, 1.0))
            else:  # triangle pointing up
                mask = (canvas.y < cy + r) & (canvas.y > cy - r + 2 * np.abs(canvas.x - cx))
            canvas.fill(mask, color, rng.uniform(0.7, 1.0))
    return canvas.image()
