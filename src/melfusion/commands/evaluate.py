"""`melfusion evaluate`: objective metrics of generated music against references, one report.

    melfusion evaluate --generated out/melfusion out/tango --reference data/ref \
        --manifest data/test.csv --out report/

writes report/report.json, report/report.md (the layout of MeLFusion's Table 1) and PNG plots.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from melfusion.errors import MelfusionInputError

METRIC_HELP = "fad, fad_inf, fd, kl, isc, clap, imsm, ibsc, spectral_kl"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="FAD, FD, KL, IS, CLAP, IMSM, IBSc of generated audio against references; writes a report",
        description="Evaluate folders of generated audio against a reference folder with the MeLFusion and "
        "Art2Mus metric conventions. Files pair by name (a.wav ↔ a.flac). Writes report.json, report.md and "
        "PNG plots into --out.",
    )
    p.add_argument(
        "--generated",
        nargs="+",
        required=True,
        metavar="[NAME=]DIR",
        help="one or more folders of generated audio (one table row each; NAME defaults to the folder name)",
    )
    p.add_argument(
        "--reference", required=True, metavar="DIR", help="folder of reference (ground-truth) audio"
    )
    p.add_argument("--manifest", metavar="FILE", help="CSV/TSV/JSONL/JSON with audio, text and image columns")
    p.add_argument(
        "--metrics",
        nargs="+",
        metavar="M",
        help=f"metrics, comma or space separated: {METRIC_HELP} "
        "(default: fad fd kl isc, plus clap and imsm when the manifest has prompts and images)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (created)")
    p.add_argument("--baseline", metavar="NAME", help="add paper-style Δ rows relative to this run")
    p.add_argument(
        "--weights-dir", metavar="DIR", help="folder holding checkpoints (VGGish, PANNs, CLAP, CLIP, ...)"
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=os.environ.get("MELFUSION_CACHE_DIR", "~/.cache/melfusion/embeddings"),
        help="embedding cache, keyed by file content hash (default: %(default)s)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument("--device", default="auto", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=int, default=None, help="embedding batch size (default per model)")
    p.add_argument("--clap-model", default="laion/clap-htsat-unfused", help="CLAP checkpoint or 'music'")
    p.add_argument("--clip-model", default="openai/clip-vit-base-patch32", help="CLIP checkpoint")
    p.add_argument(
        "--imsm-group-size", type=int, default=None, help="IMSM softmax over groups of N (default: all)"
    )
    p.add_argument("--no-sqrtm-check", action="store_true", help="skip the scipy sqrtm cross-check of FAD/FD")
    p.add_argument(
        "--offline", action="store_true", help="never download weights (also when HF_HUB_OFFLINE=1)"
    )
    p.add_argument(
        "--tiny-embedders",
        action="store_true",
        help="random tiny embedders for smoke tests and benchmarks (numbers are meaningless)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for FAD∞ resampling and CLAP crops")
    p.set_defaults(func=run)


def _parse_generated(values: list[str]) -> dict[str, str]:
    runs: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or os.path.isdir(value):
            name, path = os.path.basename(os.path.normpath(value)) or value, value
        if not name:
            raise MelfusionInputError(f"--generated {value!r}: empty run name")
        if name in runs:
            raise MelfusionInputError(
                f"two generated folders share the run name {name!r}: name them as NAME=DIR"
            )
        runs[name] = path
    return runs


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def run(args: argparse.Namespace) -> int:
    from melfusion.evaluation.report import write_report
    from melfusion.evaluation.runner import EvaluationOptions, evaluate

    metrics = None
    if args.metrics:
        metrics = [m for item in args.metrics for m in item.split(",") if m.strip()]
    if args.batch_size is not None and args.batch_size < 1:
        raise MelfusionInputError("--batch-size must be at least 1")
    if args.imsm_group_size is not None and args.imsm_group_size < 2:
        raise MelfusionInputError("--imsm-group-size must be at least 2")
    _maybe_init_distributed()
    options = EvaluationOptions(
        metrics=metrics,
        weights_dir=args.weights_dir,
        cache_dir=None if args.no_cache else args.cache_dir,
        device=args.device,
        batch_size=args.batch_size,
        allow_download=not (args.offline or _offline()),
        clap_model=args.clap_model,
        clip_model=args.clip_model,
        imsm_group_size=args.imsm_group_size,
        sqrtm_check=not args.no_sqrtm_check,
        tiny=args.tiny_embedders,
        progress=sys.stderr.isatty(),
        seed=args.seed,
    )
    report = evaluate(
        _parse_generated(args.generated), args.reference, manifest=args.manifest, options=options
    )
    from melfusion.evaluation.metrics.distributed import distributed_world

    if distributed_world()[0] != 0:
        return 0
    written = write_report(report, args.out, baseline=args.baseline)
    from melfusion.evaluation.report import markdown_table

    print(markdown_table(report, args.baseline))
    for r in report.runs:
        for note in r.notes:
            print(f"{r.name}: {note}", file=sys.stderr)
    print(f"wrote {len(written)} files to {args.out} in {report.seconds:.1f} s", file=sys.stderr)
    return 0


def _maybe_init_distributed() -> None:
    """Join the process group when launched by torchrun / accelerate launch (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
