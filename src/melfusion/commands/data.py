"""`melfusion data`: inspect and convert triplet manifests.

melfusion data check data/train.jsonl --min-seconds 5 --json report.json
melfusion data convert musiccaps-public.csv data/train.jsonl --audio-root clips --image-root images
melfusion data synth --n 20000 --out data/synth --workers 2
"""

from __future__ import annotations

import argparse
import math
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

    y = sub.add_parser(
        "synth",
        help="generate the synthetic ⟨image, text, audio⟩ corpus the embedded model trains on",
        description="Generate scores from attributes (genre, instrument, tempo, key and mode, energy), render "
        "them (FluidSynth with a General-MIDI soundfont when installed, else a numpy synthesiser), describe "
        "instrument and genre in text and carry mode and tempo in the image's colours. Writes audio/, "
        "images/ and all/train/val/test.jsonl manifests; val and test hold attribute combinations never seen "
        "in training. Deterministic under --seed; rerun the same command to resume or extend (--n larger).",
    )
    y.add_argument("--n", type=int, required=True, help="number of items")
    y.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (new, empty, or an earlier run's)"
    )
    y.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    y.add_argument("--seconds", type=float, default=5.12, help="clip length in seconds (default 5.12)")
    y.add_argument(
        "--renderer",
        choices=("auto", "numpy", "fluidsynth"),
        default="auto",
        help="audio renderer: auto (default: fluidsynth when installed, else numpy), numpy, fluidsynth",
    )
    y.add_argument(
        "--soundfont", metavar="SF2", help="General-MIDI soundfont for fluidsynth (default: found)"
    )
    y.add_argument("--sample-rate", type=int, default=16000, help="audio sample rate in Hz (default 16000)")
    y.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    y.add_argument("--audio-format", choices=("wav", "flac"), default="wav", help="audio files (default wav)")
    y.add_argument(
        "--tonic-in-text",
        action="store_true",
        help="descriptions also name the key's tonic (never the mode, which the image tells)",
    )
    y.add_argument(
        "--tonics",
        metavar="PCS",
        help="keys only on these comma-separated tonics, e.g. C or C,G (default: all 12 pitch classes)",
    )
    y.add_argument("--workers", type=int, default=1, help="processes rendering in parallel (default 1)")
    y.add_argument("--no-progress", action="store_true", help="no progress bar")
    y.set_defaults(func=run_synth)


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
    if not args.min_seconds >= 0:  # also NaN
        raise MelfusionInputError(f"--min-seconds must be >= 0, got {args.min_seconds}")
    if not -math.inf < args.silence_dbfs <= 0:  # NaN would make nothing silent, > 0 everything
        raise MelfusionInputError(
            f"--silence-dbfs must be a level <= 0 dBFS (e.g. -60), got {args.silence_dbfs}"
        )
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


def run_synth(args: argparse.Namespace) -> int:
    from melfusion.recipes.embedded.synth.generate import SynthConfig, generate_corpus, resolve_renderer

    renderer, soundfont = resolve_renderer(args.renderer, args.soundfont)
    config = SynthConfig(
        seed=args.seed,
        seconds=args.seconds,
        sample_rate=args.sample_rate,
        image_size=args.image_size,
        renderer=renderer,
        soundfont=soundfont,
        audio_format=args.audio_format,
        tonic_in_text=args.tonic_in_text,
        tonics=tuple(t.strip() for t in args.tonics.split(",")) if args.tonics is not None else None,
    )
    result = generate_corpus(args.out, args.n, config, workers=args.workers, progress=not args.no_progress)
    counts = ", ".join(f"{k} {v}" for k, v in result.split_counts.items())
    speed = f", {result.clips_per_second:.1f} clips/s" if result.written else ""
    print(
        f"{result.num_items} item(s) in {result.out_dir} ({counts}); renderer {renderer}; "
        f"{result.written} written, {result.skipped} already there{speed}"
    )
    for name, path in result.manifests.items():
        print(f"  {name}: {path}")
    return 0
