"""`melfusion weights`: the pretrained weights the evaluation metrics use, and whether each is here."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "weights",
        help="list the metric embedders' weights: file, where to get it, where to put it, found or missing",
        description="List the pretrained weights `melfusion evaluate` needs (VGGish, PANNs, CLAP, CLIP, "
        "ImageBind): for each, the metrics that use it, the file and where to download it, the folders searched, "
        "and whether it is on this machine. Nothing is downloaded or loaded.",
    )
    p.add_argument("--weights-dir", metavar="DIR", help="the folder you pass to `melfusion evaluate`")
    p.add_argument("--clap-model", default="laion/clap-htsat-unfused", help="CLAP checkpoint or 'music'")
    p.add_argument("--clip-model", default="openai/clip-vit-base-patch32", help="CLIP checkpoint")
    p.add_argument("--check", action="store_true", help="exit with status 1 when any weights are missing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from melfusion.evaluation.embedders import EMBEDDER_NAMES
    from melfusion.evaluation.embedders.weights import weight_status
    from melfusion.evaluation.runner import METRICS

    missing = 0
    for name in EMBEDDER_NAMES:
        s = weight_status(name, args.weights_dir, clap_model=args.clap_model, clip_model=args.clip_model)
        metrics = ", ".join(m for m, spec in METRICS.items() if name in spec.embedders)
        state = f"found: {s.found}" if s.ok else "MISSING"
        missing += not s.ok
        print(f"{s.title} [{metrics}]: {state}")
        if not s.ok:
            print(f"  {s.instruction()}")
            print(f"  looked in: {', '.join(s.looked)}")
    print(f"{len(EMBEDDER_NAMES) - missing} of {len(EMBEDDER_NAMES)} embedders have their weights here")
    return 1 if args.check and missing else 0
