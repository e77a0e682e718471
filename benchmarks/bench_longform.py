"""Long-form generation: are the seams between windows heard, and does the whole clip keep the image's mood?

For clips longer than the model's window the pipeline denoises window by window, holding each window's overlap
with the previous ones, and crossfades the decoded windows (`MeLFusionPipeline.window_plan`). Measured here:

- **Seams** (30 s and 60 s clips): per clip two "jump" series, the spectral flux of the log-mel (mean positive
  frame-to-frame change, dB) and the short-term loudness step (|Δ| of 100 ms RMS levels, dB, 50 ms hop). For
  each seam (an overlap region, widened by 0.1 s on both sides) the largest jump inside it, against the same
  statistic over regions of the same width centred inside the windows (away from any overlap). Reported: mean
  over seams / mean over inside regions, pooled over clips (target ≤ 1.5 for both).
- **Adherence over the whole clip**: for `--n` balanced held-out items of the synthetic corpus (as in
  bench_adherence.py), one 5.12 s clip and one 30 s clip with the same text, image and seed; tempo class and
  mode probed over each whole clip. Target: the 30 s accuracy within one standard error of the 5.12 s one.
- **Memory** (`--rss`): peak RSS of a fresh process making a 10 s and a 60 s clip.

    .venv/bin/python benchmarks/bench_longform.py --corpus runs/corpus --n 32 --rss
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_longform.py --n 2 --steps 2 --seam-clips 1 --threads 1  # smoke
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_adherence import read_rows, select_items  # noqa: E402

from melfusion.audio.mel import MelConfig, mel_spectrogram  # noqa: E402
from melfusion.recipes.embedded.probes import estimate_mode, estimate_tempo, tempo_class  # noqa: E402
from melfusion.utils.files import atomic_write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEAM_MARGIN_S = 0.1
TARGET_SEAM_RATIO = 1.5


# ------------------------------------------------------------------------------------------ seams
def flux_series(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Spectral flux (T,) in dB per frame, and frames per second: mean over mel bins of max(0, ΔlogMel)."""
    config = MelConfig(sample_rate=sample_rate)
    log_mel = mel_spectrogram(audio, config).squeeze(0).numpy()  # (T, n_mels), natural-log magnitude
    db = log_mel * (20.0 / math.log(10.0))
    flux = np.maximum(np.diff(db, axis=0), 0.0).mean(axis=1)
    return np.concatenate([[0.0], flux]), config.frames_per_second


def loudness_steps(audio: np.ndarray, sample_rate: int, frame_s: float = 0.1, hop_s: float = 0.05):
    """|Δ level| (T,) in dB between consecutive 100 ms RMS frames (50 ms hop), and frames per second."""
    frame, hop = int(frame_s * sample_rate), int(hop_s * sample_rate)
    n = 1 + max(0, (len(audio) - frame) // hop)
    frames = np.lib.stride_tricks.sliding_window_view(audio, frame)[::hop][:n]
    level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10)
    return np.concatenate([[0.0], np.abs(np.diff(level))]), 1.0 / hop_s


def seam_regions(pipe: Any, seconds: float) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(seam regions, inside regions) in seconds for a clip of ``seconds``: each overlap widened by
    SEAM_MARGIN_S, and regions of the same width centred between consecutive overlaps."""
    plan = pipe.window_plan(seconds)
    sec = pipe.default_audio_length_in_s / pipe.window_frames  # seconds per latent frame
    overlaps = [
        (plan.starts[k] * sec, (plan.starts[k] + plan.held(k)) * sec) for k in range(1, len(plan.starts))
    ]
    seams = [(a - SEAM_MARGIN_S, b + SEAM_MARGIN_S) for a, b in overlaps]
    bounds = [(0.0, 0.0), *overlaps, (seconds, seconds)]
    inside = []
    for (_, left), (right, _) in zip(bounds[:-1], bounds[1:]):
        width = seams[0][1] - seams[0][0]
        centre = (left + right) / 2
        if right - left >= width:  # a window interior wide enough to hold a region away from the overlaps
            inside.append((centre - width / 2, centre + width / 2))
    return seams, inside


def region_max(series: np.ndarray, rate: float, region: tuple[float, float]) -> float:
    a, b = max(0, int(region[0] * rate)), min(len(series), int(math.ceil(region[1] * rate)) + 1)
    return float(series[a:b].max()) if b > a else float("nan")


def seam_stats(audio: np.ndarray, sample_rate: int, pipe: Any, seconds: float) -> dict[str, Any]:
    seams, inside = seam_regions(pipe, seconds)
    out: dict[str, Any] = {}
    for name, (series, rate) in {
        "flux": flux_series(audio, sample_rate),
        "loudness": loudness_steps(audio, sample_rate),
    }.items():
        out[name] = {
            "seam": [region_max(series, rate, r) for r in seams],
            "inside": [region_max(series, rate, r) for r in inside],
        }
    return out


def pooled_ratio(clips: list[dict[str, Any]], name: str) -> float:
    seam = [v for c in clips for v in c[name]["seam"]]
    inside = [v for c in clips for v in c[name]["inside"]]
    return float(np.nanmean(seam) / np.nanmean(inside))


# ------------------------------------------------------------------------------------------ memory
def child_rss(seconds: float, steps: int, model: str | None, threads: int) -> int:
    """Peak RSS (KiB) of a fresh process that loads the model and makes one clip of ``seconds``."""
    code = (
        "import resource, sys, torch\n"
        f"torch.set_num_threads({threads})\n"
        "from melfusion.loading import load_pipeline\n"
        f"pipe, _ = load_pipeline({model!r}, 'cpu')\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        f"pipe(image={str(ROOT / 'examples' / 'lakeside.png')!r}, prompt='a calm folk song', "
        f"audio_length_in_s={seconds}, num_inference_steps={steps}, generator=torch.Generator().manual_seed(0))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="pipeline folder (default: the embedded model)")
    p.add_argument("--corpus", type=Path, default=ROOT / "runs" / "corpus", help="synthetic corpus folder")
    p.add_argument("--n", type=int, default=32, help="balanced test items for adherence (even)")
    p.add_argument("--long", type=float, default=30.0, help="the long clips' length for adherence (s)")
    p.add_argument("--seam-lengths", type=float, nargs="+", default=[30.0, 60.0], help="clip lengths (s)")
    p.add_argument(
        "--seam-clips", type=int, default=4, help="clips per seam length beyond the adherence ones"
    )
    p.add_argument("--steps", type=int, default=50, help="denoising steps")
    p.add_argument("--seed", type=int, default=0, help="item i uses seed + i")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--rss", action="store_true", help="also measure peak RSS of a 10 s and a 60 s clip")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_longform.json", help="JSON output")
    args = p.parse_args(argv)
    if args.n < 2 or args.n % 2:
        p.error("--n must be an even number >= 2 (the balanced selection)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from melfusion.loading import load_pipeline

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    pipe, model_name = load_pipeline(args.model, "cpu")
    pipe.set_progress_bar_config(disable=True)
    sr = pipe.sample_rate
    window = float(pipe.default_audio_length_in_s)
    items = select_items(read_rows(args.corpus / "test.jsonl"), args.n)

    def generate(row: dict[str, Any], seconds: float, seed: int) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        out = pipe(
            image=str(args.corpus / row["image"]),
            prompt=row["text"],
            audio_length_in_s=seconds,
            num_inference_steps=args.steps,
            generator=torch.Generator().manual_seed(seed),
            progress=False,
        )
        return np.asarray(out.audios[0], dtype=np.float32), time.perf_counter() - start

    records: list[dict[str, Any]] = []
    seams: dict[float, list[dict[str, Any]]] = {length: [] for length in args.seam_lengths}
    for i, row in enumerate(tqdm(items, desc="adherence items")):
        rec: dict[str, Any] = {
            "id": row["id"],
            "labels": {"mode": row["mode"], "tempo_class": row["tempo_class"]},
        }
        for name, seconds in (("window", window), ("long", args.long)):
            audio, dt = generate(row, seconds, args.seed + i)
            bpm = estimate_tempo(audio, sr)
            rec[name] = {"tempo_class": tempo_class(bpm), "mode": estimate_mode(audio, sr)[0], "seconds": dt}
            if name == "long" and args.long in seams:
                seams[args.long].append(seam_stats(audio, sr, pipe, seconds))
        records.append(rec)
    for length in args.seam_lengths:
        for j in range(args.seam_clips if length != args.long else 0):
            row = items[j % len(items)]
            audio, _ = generate(row, length, args.seed + 1000 + j)
            seams[length].append(seam_stats(audio, sr, pipe, length))

    result: dict[str, Any] = {"model": model_name, "steps": args.steps, "n": len(records), "window_s": window}
    lines = [f"model {model_name}, {args.steps} steps, window {window:g} s, {len(records)} items"]
    lines.append("\n| clip | tempo class | mode |\n|---|---|---|")
    accuracy: dict[str, dict[str, float]] = {}
    for name, seconds in (("window", window), ("long", args.long)):
        acc = {
            a: float(np.mean([r[name][a] == r["labels"][a] for r in records]))
            for a in ("tempo_class", "mode")
        }
        accuracy[name] = acc
        lines.append(f"| {seconds:g} s | {acc['tempo_class']:.1%} | {acc['mode']:.1%} |")
    within = {}
    for a in ("tempo_class", "mode"):
        p = accuracy["window"][a]
        se = math.sqrt(max(p * (1 - p), 1e-12) / len(records))
        within[a] = abs(accuracy["long"][a] - p) <= se
        lines.append(
            f"{a}: {args.long:g} s − {window:g} s = {accuracy['long'][a] - p:+.1%} (1 s.e. {se:.1%}): "
            f"{'within' if within[a] else 'NOT within'}"
        )
    result |= {"accuracy": accuracy, "within_one_se": within}
    lines.append(
        "\n| clip | seams | flux seam/inside | loudness seam/inside | ≤ 1.5 |\n|---|---|---|---|---|"
    )
    result["seams"] = {}
    for length, clips in seams.items():
        if not clips:
            continue
        ratios = {k: pooled_ratio(clips, k) for k in ("flux", "loudness")}
        n_seams = sum(len(c["flux"]["seam"]) for c in clips)
        result["seams"][str(length)] = {"clips": len(clips), "seams": n_seams, "ratio": ratios, "raw": clips}
        ok = all(r <= TARGET_SEAM_RATIO for r in ratios.values())
        lines.append(
            f"| {length:g} s × {len(clips)} | {n_seams} | {ratios['flux']:.2f} | "
            f"{ratios['loudness']:.2f} | {'yes' if ok else 'no'} |"
        )
    if args.rss:
        threads = torch.get_num_threads()
        rss = {str(s): child_rss(s, args.steps, args.model, threads) for s in (10.0, 60.0)}
        result["peak_rss_kib"] = rss
        lines.append(
            f"\npeak RSS: 10 s {rss['10.0'] / 1024:.0f} MiB, 60 s {rss['60.0'] / 1024:.0f} MiB "
            f"(ratio {rss['60.0'] / rss['10.0']:.2f})"
        )
    result["self_peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    atomic_write_json(args.out, json.loads(json.dumps(result, default=float)))
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
