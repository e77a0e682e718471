"""`melfusion describe`: artwork descriptions with an image-to-text model (Art2Mus's LLaVA dataset, §3.2).

melfusion describe --images artworks/ --model llava-hf/llava-1.5-7b-hf --out data/descriptions.jsonl
melfusion describe --pairs data/pairs.jsonl --model PATH --out data/description_music.jsonl
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "describe",
        help="describe artworks with an image-to-text model (the Art2Mus artwork-description dataset)",
        description="Write one description per artwork with any transformers image-to-text model "
        "(AutoModelForImageTextToText: LLaVA, BLIP, ViT-GPT-2, ...; greedy decoding). With --pairs (a manifest "
        "from `melfusion pair`) each description keeps its artwork's music track: the description-music "
        "dataset. Progress is kept in OUT.partial.jsonl, so an interrupted run resumes.",
    )
    p.add_argument("--images", metavar="DIR", help="folder of artworks (searched recursively)")
    p.add_argument("--pairs", metavar="MANIFEST", help="artwork-music manifest to join descriptions with")
    p.add_argument(
        "--model", required=True, help="model folder or Hugging Face id (local cache unless --allow-download)"
    )
    p.add_argument("--out", required=True, metavar="FILE", help="manifest to write (JSONL)")
    p.add_argument(
        "--prompt", default=None, help="instruction for chat models (default: 'Describe this artwork')"
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=128, help="longest description in tokens (default 128)"
    )
    p.add_argument("--batch-size", type=int, default=4, help="images per generate call (default 4)")
    p.add_argument("--device", default="auto", help="torch device (default: cuda if available)")
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable images out instead of stopping")
    p.add_argument("--allow-download", action="store_true", help="let transformers download the model")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from melfusion.errors import MelfusionInputError
    from melfusion.pairing.describe import describe_folder
    from melfusion.pipelines.art2mus.constants import DESCRIBE_PROMPT

    if args.images is None and args.pairs is None:
        raise MelfusionInputError("give --images DIR, --pairs MANIFEST, or both")
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise MelfusionInputError("--batch-size and --max-new-tokens must be >= 1")
    report = describe_folder(
        args.images,
        args.out,
        model=args.model,
        prompt=args.prompt if args.prompt is not None else DESCRIBE_PROMPT,
        pairs=args.pairs,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        device=None if args.device == "auto" else args.device,
        allow_download=args.allow_download,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
    )
    kind = "description-music triplets" if args.pairs else "descriptions"
    print(
        f"wrote {len(report.rows)} {kind} to {report.manifest} "
        f"({report.described} new, {report.resumed} reused from an earlier run)"
    )
    return 0
