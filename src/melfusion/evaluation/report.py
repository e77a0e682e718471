"""Write an evaluation report: report.json, report.md (MeLFusion Table 1 layout) and PNG plots (Pillow).

Files are written atomically. Plots: `bars_<metric>.png` (one bar per run) and `imsm_<run>.png` (heat map).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from melfusion.errors import MelfusionInputError
from melfusion.evaluation.runner import COLUMNS, CONVENTIONS, EvaluationReport, RunResult
from melfusion.utils.files import atomic_path

TABLE1_COLUMNS = ("fad", "kl_softmax", "fd", "imsm")  # MeLFusion Table 1 objective columns, in order


def _fmt(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.4g}"


def present_columns(runs: Sequence[RunResult]) -> list[str]:
    """Table 1's columns first (when any run has them), then the others in COLUMNS order."""
    have = {k for r in runs for k in r.metrics}
    first = [k for k in TABLE1_COLUMNS if k in have]
    return first + [k for k in COLUMNS if k in have and k not in first]


def relative_gain(value: float | None, baseline: float | None, higher_is_better: bool) -> float | None:
    """Paper-style Δ in percent: positive when `value` is better than `baseline`."""
    if (
        value is None
        or baseline is None
        or baseline == 0
        or not (math.isfinite(value) and math.isfinite(baseline))
    ):
        return None
    gain = (value - baseline) if higher_is_better else (baseline - value)
    return 100.0 * gain / abs(baseline)


def markdown_table(report: EvaluationReport, baseline: str | None = None) -> str:
    cols = present_columns(report.runs)
    header = (
        "| Model | " + " | ".join(f"{COLUMNS[c][0]} {'↑' if COLUMNS[c][1] else '↓'}" for c in cols) + " |"
    )
    lines = [header, "|---|" + "---:|" * len(cols)]
    best: dict[str, float] = {}
    if len(report.runs) > 1:
        for c in cols:
            vals = [r.metrics.get(c) for r in report.runs]
            vals = [v for v in vals if v is not None and math.isfinite(v)]
            if vals:
                best[c] = max(vals) if COLUMNS[c][1] else min(vals)
    for r in report.runs:
        cells = []
        for c in cols:
            v = r.metrics.get(c)
            s = _fmt(v)
            cells.append(f"**{s}**" if c in best and v == best[c] else s)
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    if baseline is not None:
        base = next((r for r in report.runs if r.name == baseline), None)
        if base is None:
            names = ", ".join(r.name for r in report.runs)
            raise MelfusionInputError(f"--baseline {baseline!r} is not one of the runs ({names})")
        for r in report.runs:
            if r is base:
                continue
            cells = []
            for c in cols:
                g = relative_gain(r.metrics.get(c), base.metrics.get(c), COLUMNS[c][1])
                cells.append("-" if g is None else f"{g:+.2f}%")
            lines.append(f"| Δ {r.name} − {base.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: EvaluationReport, baseline: str | None = None) -> str:
    out = ["# Evaluation report", ""]
    if report.tiny:
        out += ["> **Tiny random embedders** (smoke test): these numbers mean nothing.", ""]
    out.append(f"Reference: `{report.reference_dir}` ({report.n_reference} files).")
    if report.manifest:
        out.append(f"Manifest: `{report.manifest}`.")
    out += ["", markdown_table(report, baseline), ""]
    if len(report.runs) > 1:
        out += [
            "Best value per column in bold. "
            + ("Δ rows: relative gain over the baseline." if baseline else ""),
            "",
        ]
    extra = []
    for r in report.runs:
        d = r.details
        if "isc" in d:
            extra.append(
                f"- {r.name}: IS {_fmt(r.metrics.get('isc'))} ± {_fmt(d['isc']['std'])} ({d['isc']['splits']} splits)"
            )
        if "imsm" in d:
            i = d["imsm"]
            extra.append(
                f"- {r.name}: IMSM over {i['n_triplets']} triplets, softmax groups of {i['group_size']} "
                f"(diagonal ≤ {i['diagonal_upper_bound']:.3f})"
            )
    if extra:
        out += ["## Details", "", *extra, ""]
    notes = [f"- {r.name}: {n}" for r in report.runs for n in r.notes]
    if notes:
        out += ["## Pairing and notes", "", *notes, ""]
    conv = [f"- **{k}**: {v}" for k, v in CONVENTIONS.items() if k in report.metrics or k == "pairing"]
    out += ["## Conventions", "", *conv, ""]
    if report.embedders:
        out += ["## Embedders", "", *[f"- {k}: `{v}`" for k, v in report.embedders.items()], ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------
# Plots with Pillow (no matplotlib dependency).

_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
_VIRIDIS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _text_width(draw: Any, text: str, font: Any) -> int:
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0]


def _png_bytes(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def bar_chart_png(
    title: str, names: Sequence[str], values: Sequence[float | None], higher_is_better: bool
) -> bytes:
    from PIL import Image, ImageDraw

    w, h, left, right, top, bottom = 720, 420, 70, 20, 50, 70
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    f_title, f = _font(18), _font(13)
    arrow = "higher is better" if higher_is_better else "lower is better"
    d.text((left, 14), f"{title} ({arrow})", fill="black", font=f_title)
    finite = [v for v in values if v is not None and math.isfinite(v)]
    lo = min(0.0, *finite) if finite else 0.0
    hi = max(0.0, *finite) if finite else 1.0
    if hi == lo:
        hi = lo + 1.0
    plot_h = h - top - bottom

    def y_of(v: float) -> float:
        return top + (hi - v) / (hi - lo) * plot_h

    d.line([(left, top), (left, h - bottom)], fill="black")
    d.line([(left, y_of(0.0)), (w - right, y_of(0.0))], fill="black")
    for t in np.linspace(lo, hi, 5):
        y = y_of(float(t))
        d.line([(left - 4, y), (left, y)], fill="black")
        label = _fmtplot(float(t))
        d.text((left - 8 - _text_width(d, label, f), y - 7), label, fill="black", font=f)
    n = max(1, len(names))
    slot = (w - left - right) / n
    for i, (name, v) in enumerate(zip(names, values)):
        x0 = left + i * slot + slot * 0.15
        x1 = left + (i + 1) * slot - slot * 0.15
        short = name if len(name) <= 18 else name[:17] + "…"
        d.text(((x0 + x1) / 2 - _text_width(d, short, f) / 2, h - bottom + 8), short, fill="black", font=f)
        if v is None or not math.isfinite(v):
            d.text(((x0 + x1) / 2 - 4, y_of(0.0) - 18), "-", fill="gray", font=f)
            continue
        y0, y1 = sorted((y_of(0.0), y_of(v)))
        d.rectangle([x0, y0, x1, max(y1, y0 + 1)], fill=_PALETTE[i % len(_PALETTE)])
        label = _fmtplot(v)
        ty = y0 - 18 if v >= 0 else y1 + 4
        d.text(((x0 + x1) / 2 - _text_width(d, label, f) / 2, ty), label, fill="black", font=f)
    return _png_bytes(img)


def _fmtplot(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def _colour(t: float) -> tuple[int, int, int]:
    t = min(1.0, max(0.0, t)) * (len(_VIRIDIS) - 1)
    i = min(int(t), len(_VIRIDIS) - 2)
    a, b, u = _VIRIDIS[i], _VIRIDIS[i + 1], t - i
    return tuple(int(round(a[k] + (b[k] - a[k]) * u)) for k in range(3))  # type: ignore[return-value]


def heatmap_png(title: str, matrix: np.ndarray, names: Sequence[str], max_cells: int = 64) -> bytes:
    """Heat map of an (N, N) matrix (rows: images, columns: generated clips); NaN cells grey."""
    from PIL import Image, ImageDraw

    m = np.asarray(matrix, dtype=np.float64)
    note = ""
    if m.shape[0] > max_cells:
        m, names, note = (
            m[:max_cells, :max_cells],
            list(names)[:max_cells],
            f" (first {max_cells} of {matrix.shape[0]})",
        )
    n = m.shape[0]
    cell = max(6, min(48, 560 // max(n, 1)))
    labels = n <= 24
    f, f_title = _font(12), _font(16)
    margin_l = 140 if labels else 40
    top = 70 if not labels else 150
    w = margin_l + n * cell + 110
    h = top + n * cell + 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 10), title + note, fill="black", font=f_title)
    d.text((10, 34), "rows: images · columns: generated clips", fill="gray", font=f)
    finite = m[np.isfinite(m)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0
    for i in range(n):
        for j in range(n):
            v = m[i, j]
            colour = (200, 200, 200) if not math.isfinite(v) else _colour((v - lo) / span)
            x0, y0 = margin_l + j * cell, top + i * cell
            d.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour)
            if labels and cell >= 36 and math.isfinite(v):
                txt = f"{v:.2f}"
                d.text(
                    (x0 + cell / 2 - _text_width(d, txt, f) / 2, y0 + cell / 2 - 7), txt, fill="white", font=f
                )
    if labels:
        for i, name in enumerate(names):
            short = name if len(name) <= 18 else name[:17] + "…"
            d.text(
                (margin_l - 6 - _text_width(d, short, f), top + i * cell + cell / 2 - 7),
                short,
                fill="black",
                font=f,
            )
            col = Image.new("RGBA", (130, 16), (255, 255, 255, 0))
            ImageDraw.Draw(col).text((0, 0), short, fill="black", font=f)
            col = col.rotate(90, expand=True)
            img.paste(col, (int(margin_l + i * cell + cell / 2 - 8), top - 136), col)
    # colour bar
    bx = margin_l + n * cell + 30
    bar_h = max(n * cell, 60)
    for k in range(bar_h):
        d.line([(bx, top + k), (bx + 16, top + k)], fill=_colour(1.0 - k / max(bar_h - 1, 1)))
    d.text((bx + 22, top - 6), f"{hi:.3g}", fill="black", font=f)
    d.text((bx + 22, top + bar_h - 8), f"{lo:.3g}", fill="black", font=f)
    return _png_bytes(img)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def write_report(
    report: EvaluationReport, out_dir: str | os.PathLike[str], *, baseline: str | None = None
) -> list[Path]:
    """Write report.json, report.md and the PNGs into `out_dir`; return the paths written."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise MelfusionInputError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    md = markdown_report(report, baseline)  # validates --baseline before anything is written
    written: list[Path] = []

    def put(name: str, data: bytes) -> None:
        path = out / name
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        written.append(path)

    doc = report.to_json()
    doc["baseline"] = baseline
    doc["table_markdown"] = markdown_table(report, baseline)
    put(
        "report.json", (json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    )
    put("report.md", md.encode("utf-8"))
    names = [r.name for r in report.runs]
    for key in present_columns(report.runs):
        label, higher = COLUMNS[key]
        values = [r.metrics.get(key) for r in report.runs]
        put(f"bars_{_safe(key)}.png", bar_chart_png(label, names, values, higher))
    for r in report.runs:
        if r.imsm_matrix is not None:
            title = f"IMSM · {r.name} (N={r.imsm_matrix.shape[0]}, mean diag {_fmt(r.metrics.get('imsm'))})"
            put(f"imsm_{_safe(r.name)}.png", heatmap_png(title, r.imsm_matrix, r.imsm_names))
    return written
