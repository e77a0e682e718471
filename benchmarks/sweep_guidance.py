"""Guidance sweep: adherence of the text+image (and image-only) condition over a grid of CFG scales.

`bench_adherence.py` measures one setting in full (three conditions, ceilings, image swap). This script
picks the setting: for every (text guidance, image guidance) pair it generates the text+image clip of the
same test items (bench_adherence's `--selection`) with the same seeds, and probes tempo class, mode and
family. Image only (empty prompt) does not depend on the text scale, so it is run once per image scale
(skip with --no-image-only); text only (no image, two-branch CFG) once per text scale with --text-only.
Image inversions are cached across settings, so only the denoising loop is repeated.

    .venv/bin/python benchmarks/sweep_guidance.py --n 48 --guidance 7 5 3 --image-guidance 14 20 --threads 2
    .venv/bin/python benchmarks/sweep_guidance.py --n 2 --steps 2 --guidance 7 --image-guidance 14   # smoke
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from melfusion.loading import load_pipeline, resolve_device
from melfusion.utils.files import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_adherence import (  # noqa: E402
    ATTRIBUTES,
    add_run_args,
    check_run_args,
    finite_json,
    load_classifier,
    make_generate,
    probe,
    read_rows,
    select_items,
)


def scale_text(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def positive(value: str) -> float:
    x = float(value)
    if not np.isfinite(x) or x < 0:
        raise argparse.ArgumentTypeError(f"a guidance scale must be a finite number >= 0, got {value!r}")
    return x


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(p, n=48, out="sweep_guidance.json")
    p.add_argument("--guidance", type=positive, nargs="+", required=True, help="text CFG scales")
    p.add_argument("--image-guidance", type=positive, nargs="+", required=True, help="image CFG scales")
    p.add_argument("--no-image-only", action="store_true", help="skip the image-only condition")
    p.add_argument("--text-only", action="store_true", help="also run text only, once per text scale")
    return check_run_args(p, p.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    items = select_items(read_rows(args.corpus / "test.jsonl"), args.n, args.selection)
    classifier = load_classifier(args)
    device = resolve_device(args.device)
    pipe, model_name = load_pipeline(args.model, device)
    pipe.set_progress_bar_config(disable=True)
    if args.steps is None:
        args.steps = int(inspect.signature(type(pipe).__call__).parameters["num_inference_steps"].default)
    sr = pipe.sample_rate

    # (condition, text scale or None, image scale or None): image only ignores the text scale, text only
    # the image scale
    settings: list[tuple[str, float | None, float | None]] = [
        ("text+image", g, gi) for gi in args.image_guidance for g in args.guidance
    ]
    if not args.no_image_only:
        settings += [("image only", None, gi) for gi in args.image_guidance]
    if args.text_only:
        settings += [("text only", g, None) for g in args.guidance]
    print(
        f"model: {model_name}\n{len(items)} test items × {len(settings)} settings, {args.steps} steps, {device}"
    )

    results: list[dict[str, Any]] = []
    for condition, g, gi in settings:
        hits: dict[str, list[bool]] = {a: [] for a in ATTRIBUTES}
        bpms: list[float] = []
        label = f"{condition} g={scale_text(g)} gi={scale_text(gi)}"
        generate = make_generate(
            pipe,
            argparse.Namespace(
                steps=args.steps, guidance=1.0 if g is None else g, image_guidance=gi, image_steps=None
            ),
        )
        for i, row in enumerate(tqdm(items, desc=label)):
            audio, _ = generate(
                args.corpus / row["image"],
                row["text"],
                args.seed + i,
                use_image=condition != "text only",
                use_text=condition != "image only",
            )
            p = probe(audio, sr, classifier)
            for a in ATTRIBUTES:
                hits[a].append(p[a] == row[a])
            bpms.append(abs(p["bpm"] - row["bpm"]))
        acc = {a: float(np.mean(h)) for a, h in hits.items()}
        results.append(
            {"condition": condition, "guidance_scale": g, "image_guidance_scale": gi}
            | {"accuracy": acc, "mean_abs_bpm_error": float(np.mean(bpms))}
        )
        print(f"{label}: " + ", ".join(f"{a} {v:.1%}" for a, v in acc.items()), flush=True)

    lines = [
        "| condition | text guidance | image guidance | tempo class | mode | family | mean abs bpm error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        a = r["accuracy"]
        lines.append(
            f"| {r['condition']} | {scale_text(r['guidance_scale'])} | {scale_text(r['image_guidance_scale'])} | "
            f"{a['tempo_class']:.1%} | {a['mode']:.1%} | {a['family']:.1%} | {r['mean_abs_bpm_error']:.1f} |"
        )
    text = "\n".join(lines)
    print(text)
    config = {
        "corpus": str(args.corpus),
        "n": len(items),
        "selection": args.selection,
        "steps": args.steps,
        "seed": args.seed,
    }
    atomic_write_json(
        args.out, finite_json({"model": model_name, "config": config, "results": results, "markdown": text})
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
