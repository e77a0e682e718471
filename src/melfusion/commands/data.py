"""`melfusion data`: inspect and convert triplet manifests.

melfusion data check data/train.jsonl --min-seconds 5 --json report.json
melfusion data convert musiccaps-public.csv data/train.jsonl --audio-root clips --image-root images
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

FORMAT_HELP = (
    "auto (default: from the extension and keys), jsonl, csv, melfusion, extended_musiccaps, melbench"
)


def _add_reader_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="auto", help=f"manifest format: {FORMAT_HELP}")
    p.add_argument(
        "--audio-root", metavar="DIR", help="base folder of relative audio paths (default: the manifest's)"
    )
    p.add_argument(
        "--image-root", metavar="DIR", help="base folder of relative image paths (default: the manifest's)"
    )


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "data",
        help="check or convert ⟨image, text, audio⟩ training manifests",
        description="Check the files a triplet manifest names, or convert a dataset's own format to the "
        "standard JSONL manifest.",
    )
    sub = p.add_subparsers(dest="data_command", required=True)

    c = sub.add_parser(
        "check",
        help="open every file of a manifest; report missing, unreadable, corrupt, silent and too-short ones",
        description="Open every audio file and image a manifest names and count the problems of each kind "
        "(it never stops at the first). Exits 0 when at least one item is usable, 2 when none is.",
    )
    c.add_argument("manifest", metavar="MANIFEST", help="JSONL/CSV manifest or a supported dataset file")
    _add_reader_options(c)
    c.add_argument("--sample-rate", type=int, default=16000, help="model sample rate in Hz (default 16000)")
    c.add_argument(
        "--min-seconds", type=float, default=1.0, help="shorter audio is 'too short' (default 1.0)"
    )
    c.add_argument(
        "--silence-dbfs",
        type=float,
        default=-60.0,
        help="audio with an RMS level below this is 'silent' (dBFS, default -60)",
    )
    c.add_argument("--workers", type=int, default=4, help="threads reading files (default 4)")
    c.add_argument("--json", metavar="OUT", help="also write the full report (every problem) as JSON")
    c.add_argument(
        "--write-usable", metavar="OUT", help="write the usable items as a standard JSONL manifest"
    )
    c.add_argument("--show", type=int, default=20, help="problems listed on the terminal (default 20)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=run_check)

    v = sub.add_parser(
        "convert",
        help="read any supported manifest format and write the standard JSONL manifest",
        description="Convert a manifest (MeLFusion JSON, Extended MusicCaps, MeLBench, CSV) to the standard "
        "JSONL format with paths relative to the output file.",
    )
    v.add_argument("manifest", metavar="MANIFEST")
    v.add_argument("out", metavar="OUT", help="output .jsonl")
    _add_reader_options(v)
    v.set_defaults(func=run_convert)


def _read(args: argparse.Namespace):
    from melfusion.data.manifest import read_manifest_with_problems

    return read_manifest_with_problems(
        args.manifest, args.format, audio_root=args.audio_root, image_root=args.image_root
    )


def run_check(args: argparse.Namespace) -> int:
    from melfusion.data.check import check_manifest, describe_unusable
    from melfusion.data.manifest import write_manifest
    from melfusion.errors import MelfusionInputError
    from melfusion.utils.files import atomic_write_json

    if args.sample_rate <= 0:
        raise MelfusionInputError(f"--sample-rate must be positive, got {args.sample_rate}")
    if args.min_seconds < 0:
        raise MelfusionInputError(f"--min-seconds must be >= 0, got {args.min_seconds}")
    records, row_problems = _read(args)
    report = check_manifest(
        records,
        sample_rate=args.sample_rate,
        min_seconds=args.min_seconds,
        silence_dbfs=args.silence_dbfs,
        progress=not args.no_progress,
        num_workers=args.workers,
        row_problems=row_problems,
    )
    print(f"{args.manifest}: {report.num_usable} of {report.num_items} item(s) usable")
    print(report.summary_table())
    if report.problems:
        print(f"\nproblems ({len(report.problems)}):")
        for p in report.problems[: max(0, args.show)]:
            if p.item_id is None:
                print(f"  invalid row {p.path}: {p.reason}")
            else:
                print(f"  {p.item_id}: {p.modality} {p.kind.replace('_', ' ')}: {p.path} ({p.reason})")
        if len(report.problems) > args.show:
            more = " (see --json)" if not args.json else ""
            print(f"  ... and {len(report.problems) - args.show} more{more}")
    if args.json:
        atomic_write_json(args.json, {"manifest": str(args.manifest), **report.to_dict()})
        print(f"report written to {args.json}")
    if not report.ok:
        raise MelfusionInputError(describe_unusable(report, args.manifest))
    if args.write_usable:
        write_manifest(args.write_usable, report.usable)
        print(f"{report.num_usable} usable item(s) written to {args.write_usable}")
    sys.stdout.flush()
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from melfusion.data.manifest import write_manifest
    from melfusion.errors import MelfusionInputError

    records, problems = _read(args)
    for p in problems[:20]:
        print(f"skipped {p}", file=sys.stderr)
    if not records:
        raise MelfusionInputError(f"{args.manifest} has no valid row; nothing to convert")
    write_manifest(args.out, records)
    print(
        f"{len(records)} record(s) written to {args.out}"
        + (f" ({len(problems)} row(s) skipped)" if problems else "")
    )
    return 0
