"""`melfusion pair`: pair every artwork with its most similar music track, without replacement (Art2Mus §3.2).

    melfusion pair --images artworks/ --music fma_large/ --out data/pairs.jsonl --method greedy

writes the artwork–music manifest (standard JSONL triplets, text = "Music representing the content of this
artwork") and data/pairs.stats.json (both methods' totals and the paper's Table 1 statistics).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "pair",
        help="pair artworks with music tracks one-to-one by joint-embedding similarity (Art2Mus dataset)",
        description="Embed every image under --images and every audio file under --music with a joint encoder "
        "(ImageBind by default; embeddings cached per file, so reruns resume), pair each artwork with one track "
        "without replacement — 'greedy' is the paper's rule (each artwork in turn takes its best unused track), "
        "'optimal' maximises the total similarity — and write the triplet manifest plus a stats JSON.",
    )
    p.add_argument("--images", required=True, metavar="DIR", help="folder of artworks (searched recursively)")
    p.add_argument(
        "--music", required=True, metavar="DIR", help="folder of music tracks (searched recursively)"
    )
    p.add_argument("--out", required=True, metavar="FILE", help="manifest to write (JSONL)")
    p.add_argument(
        "--method", choices=("greedy", "optimal"), default="greedy", help="pairing rule (default greedy)"
    )
    p.add_argument(
        "--encoder",
        default="imagebind",
        help="joint encoder: imagebind (default), tiny (toy, offline), or package.module:factory",
    )
    p.add_argument("--weights-dir", metavar="DIR", help="folder holding imagebind_huge.pth")
    p.add_argument(
        "--device", default="auto", help="torch device for the encoder (default: cuda if available)"
    )
    p.add_argument("--batch-size", type=int, default=16, help="files per encoder batch (default 16)")
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="embedding cache (default: .melfusion-pair-cache next to --out); reruns reuse it",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave unusable files out (listed in the stats) instead of stopping",
    )
    p.add_argument(
        "--text",
        default=None,
        help="text column of every row (default: 'Music representing the content of this artwork')",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=32,
        help="candidate tracks kept per artwork in the similarity pass (default 32)",
    )
    p.add_argument(
        "--block-mb", type=int, default=64, help="memory for one similarity block in MiB (default 64)"
    )
    p.add_argument(
        "--dense-max",
        type=int,
        default=None,
        metavar="N",
        help="largest artworks×tracks count solved on the dense matrix (default 16,000,000)",
    )
    p.add_argument("--no-compare", action="store_true", help="do not compute the other method for comparison")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--allow-download", action="store_true", help="let the encoder download its weights")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from melfusion.errors import MelfusionInputError
    from melfusion.pairing.assign import DEFAULT_DENSE_MAX_ENTRIES
    from melfusion.pairing.tool import format_report, pair_folders
    from melfusion.pipelines.art2mus.constants import SUPPORT_PROMPT

    if args.batch_size < 1:
        raise MelfusionInputError("--batch-size must be >= 1")
    if args.top_k < 1:
        raise MelfusionInputError("--top-k must be >= 1")
    if args.block_mb < 1:
        raise MelfusionInputError("--block-mb must be >= 1")
    device = None if args.device == "auto" else args.device
    report = pair_folders(
        args.images,
        args.music,
        args.out,
        method=args.method,
        encoder=args.encoder,
        weights_dir=args.weights_dir,
        device=device,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        skip_bad=args.skip_bad,
        text=args.text if args.text is not None else SUPPORT_PROMPT,
        k=args.top_k,
        block_mb=args.block_mb,
        dense_max_entries=args.dense_max if args.dense_max is not None else DEFAULT_DENSE_MAX_ENTRIES,
        compare=not args.no_compare,
        progress=not args.no_progress,
        allow_download=args.allow_download,
    )
    print(format_report(report))
    return 0
