"""`melfusion generate`: music from an image and a text prompt."""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from melfusion.errors import MelfusionInputError
from melfusion.limits import MAX_AUDIO_SECONDS, MAX_SAMPLES, MAX_STEPS, SEED_MAX
from melfusion.loading import (
    SCHEDULERS,
    check_model_folder,
    is_art2mus,
    load_pipeline,
    pipeline_class_name,
    resolve_device,
    set_scheduler,
)

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")  # melfusion.audio.io.SAVE_FORMATS
# Disk space a clip needs, at most: float32 samples (the WAV/FLAC written are 16-bit) plus its sidecar
BYTES_PER_SAMPLE = 4
SIDECAR_BYTES = 64 * 1024


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate music from an image and a text prompt",
        description="Generate music that fits an image and a text prompt (MeLFusion).",
    )
    p.add_argument("--image", help="input image (PNG, JPEG, WebP, ...)")
    p.add_argument("--text", help='text prompt, e.g. "a soft folk track on violin"')
    p.add_argument(
        "--out",
        help="output audio file (.wav, .flac, .mp3 or .ogg); a .json sidecar is written next to it. An existing file is "
        "replaced only if melfusion generate wrote it (its sidecar says so and holds its hash), never an input",
    )
    p.add_argument(
        "--manifest", help="batch mode: generate for every row of a triplet manifest (JSONL/CSV/MeLBench/...)"
    )
    p.add_argument(
        "--image-dir",
        help="batch mode: generate for every image directly in this folder (one clip each, named after the "
        "image) with --text for all or --prompts per image; needs --out-dir; resumable like --manifest; every "
        "image uses --seed (default 0)",
    )
    p.add_argument(
        "--prompts",
        help='with --image-dir: per-image prompts, a JSON object {"a.png": "calm piano"} or lines '
        "'<file name><TAB><prompt>'; images it does not name use --text",
    )
    p.add_argument(
        "--out-dir",
        help="batch mode: output folder; files are named after each row's reference audio (or, when those "
        "repeat, the row's id made a plain file name), so the folder pairs with the references in `melfusion "
        "evaluate`; existing outputs made with the same settings are skipped (resumable), outputs made with "
        "other settings stop the run (use a fresh folder)",
    )
    p.add_argument("--format", default="auto", help="batch mode: manifest format (default: auto-detect)")
    p.add_argument("--negative", default=None, help="negative prompt for classifier-free guidance")
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help=f"clip length in seconds, up to {MAX_AUDIO_SECONDS:g} (default: the model's window; longer clips are made window by "
        "window and crossfaded)",
    )
    p.add_argument(
        "--window-overlap",
        type=float,
        default=None,
        help="long clips: overlap of consecutive windows in seconds (default: a quarter of the model's window)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="denoising steps (default: the model's; MeLFusion 50, Art2Mus 200)",
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="text guidance scale (default: the model's; MeLFusion 7 as in the paper, Art2Mus 3.5)",
    )
    p.add_argument(
        "--image-guidance",
        type=image_guidance_arg,
        default=None,
        help="separate image guidance scale (three CFG branches), or 'off' (image in both CFG branches, the "
        "released code's behaviour); default: the model's (the embedded model: 14; converted paper models: off)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed in [0, 2^64) (default: drawn and recorded in the sidecar; batch mode: 0, row i "
        "uses seed + i)",
    )
    p.add_argument("--num-samples", type=int, default=1, help="number of clips (out_0.wav, out_1.wav, ...)")
    p.add_argument("--model", default=None, help="pipeline folder (default: the embedded model)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default=None, help="sampler (default: the model's)")
    p.add_argument(
        "--capture",
        choices=("trajectory", "inversion-lagged", "reverse", "inversion"),
        default=None,
        help="image features: 'trajectory' (default; ε(z_t, t) on the inverted path, what training uses, 2N "
        "image UNet calls), 'inversion-lagged' (recorded during inversion, ε(z_prev, t): N calls, not the "
        "training features; 'inversion' is its old name) or 'reverse' (a second DDIM pass)",
    )
    p.add_argument(
        "--image-steps",
        type=int,
        default=None,
        help="image-branch DDIM inversion steps (default: the sampler's own timesteps); fewer = cheaper, "
        "nearest-timestep features",
    )
    p.add_argument(
        "--loudness",
        type=float,
        default=None,
        help="loudness target in LUFS, in [-70, 0], e.g. -14 (default: peak-safe only)",
    )
    p.set_defaults(func=run)


def image_guidance_arg(value: str) -> float | str:
    """``--image-guidance``: a number, or ``off`` for the two-branch CFG."""
    if value.strip().lower() == "off":
        return "off"
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'off', got {value!r}") from None


def apply_image_guidance(pipe: Any, value: float | str | None) -> float | None:
    """The scale to pass to the pipeline; ``off`` also clears the model's default."""
    if value == "off":
        pipe.register_to_config(default_image_guidance_scale=None)
        return None
    return value  # None: the model's default_image_guidance_scale


def validate_args(args: argparse.Namespace) -> None:
    """Every check of the options that needs no model, before any is loaded (the web app's form too)."""
    from melfusion.audio.io import check_loudness_target
    from melfusion.guidance.preprocess import load_image

    if args.manifest is not None and args.image_dir is not None:
        raise MelfusionInputError("give one of --manifest and --image-dir")
    if args.prompts is not None and args.image_dir is None:
        raise MelfusionInputError("--prompts goes with --image-dir (a manifest holds its own prompts)")
    if args.image_dir is not None:
        if args.image or args.out:
            raise MelfusionInputError("--image-dir replaces --image/--out; give --image-dir with --out-dir")
        if not args.out_dir:
            raise MelfusionInputError("--image-dir needs --out-dir (the folder to write the clips to)")
        if args.text is None and args.prompts is None:
            raise MelfusionInputError("--image-dir needs --text (one prompt for all) or --prompts FILE")
        if args.text is not None and not args.text.strip():
            raise MelfusionInputError(
                "the text prompt is empty; describe the music, e.g. --text 'a calm piano piece'"
            )
        if args.num_samples != 1:
            raise MelfusionInputError(
                "--num-samples applies to single clips; --image-dir makes one clip per image"
            )
    elif args.manifest is not None:
        if args.image or args.text or args.out:
            raise MelfusionInputError(
                "--manifest replaces --image/--text/--out; give --manifest with --out-dir"
            )
        if not args.out_dir:
            raise MelfusionInputError("--manifest needs --out-dir (the folder to write the clips to)")
        if args.num_samples != 1:
            raise MelfusionInputError(
                "--num-samples applies to single clips; --manifest makes one clip per row (repeat a row with "
                "another id for more)"
            )
        if not Path(args.manifest).exists():
            raise MelfusionInputError(f"manifest not found: {args.manifest}")
        if not Path(args.manifest).is_file():
            raise MelfusionInputError(
                f"manifest is not a regular file: {args.manifest} (a folder, FIFO or device; give the file)"
            )
    else:
        missing = [f"--{n}" for n in ("image", "text", "out") if getattr(args, n) is None]
        if missing:
            raise MelfusionInputError(f"missing {', '.join(missing)} (or use --manifest with --out-dir)")
        load_image(args.image)  # missing / unreadable / not an image / huge → MelfusionInputError
        if not args.text.strip():
            raise MelfusionInputError(
                "the text prompt is empty; describe the music, e.g. --text 'a calm piano piece'"
            )
        if Path(args.out).suffix.lower() not in AUDIO_SUFFIXES:
            raise MelfusionInputError(f"--out must end in .wav, .flac, .mp3 or .ogg, got {args.out!r}")
    if args.seconds is not None and (
        not math.isfinite(args.seconds) or not 0 < args.seconds <= MAX_AUDIO_SECONDS
    ):
        raise MelfusionInputError(f"--seconds must be in (0, {MAX_AUDIO_SECONDS:g}], got {args.seconds}")
    if args.window_overlap is not None and (
        not math.isfinite(args.window_overlap) or args.window_overlap <= 0
    ):
        raise MelfusionInputError(f"--window-overlap must be > 0 seconds, got {args.window_overlap}")
    for flag, steps in (("--image-steps", args.image_steps), ("--steps", args.steps)):
        if steps is not None and not 1 <= steps <= MAX_STEPS:
            raise MelfusionInputError(f"{flag} must be in [1, {MAX_STEPS}], got {steps}")
    if args.guidance is not None and (not math.isfinite(args.guidance) or args.guidance < 0):
        raise MelfusionInputError(f"--guidance must be >= 0, got {args.guidance}")
    if isinstance(args.image_guidance, float) and (
        not math.isfinite(args.image_guidance) or args.image_guidance < 0
    ):
        raise MelfusionInputError(f"--image-guidance must be >= 0, got {args.image_guidance}")
    if not 1 <= args.num_samples <= MAX_SAMPLES:
        raise MelfusionInputError(f"--num-samples must be in [1, {MAX_SAMPLES}], got {args.num_samples}")
    check_loudness_target(args.loudness, "--loudness")
    if args.seed is not None and not 0 <= args.seed <= SEED_MAX:
        raise MelfusionInputError(f"--seed must be in [0, 2^64 - 1], got {args.seed}")
    if args.model is not None:
        check_model_folder(args.model)
        if pipeline_class_name(args.model) == "Art2MusPipeline":
            check_art2mus_options(args)


def resolve_call_settings(pipe: Any, args: argparse.Namespace) -> None:
    """Fill the options left to the model (steps, guidance, capture) and refuse those it does not have."""
    import inspect

    defaults = inspect.signature(type(pipe).__call__).parameters
    if args.steps is None:
        args.steps = int(defaults["num_inference_steps"].default)
    if args.guidance is None:
        args.guidance = float(defaults["guidance_scale"].default)
    if is_art2mus(pipe):
        check_art2mus_options(args)
    elif args.capture is None:
        args.capture = "trajectory"


def check_art2mus_options(args: argparse.Namespace) -> None:
    """Refuse the options an Art2Mus model does not have, and batch mode (no model needs loading)."""
    given = [
        flag
        for flag, value in (
            ("--image-guidance", args.image_guidance),
            ("--capture", args.capture),
            ("--image-steps", args.image_steps),
            ("--window-overlap", args.window_overlap),
        )
        if value is not None
    ]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise MelfusionInputError(
            f"{', '.join(given)} {verb} to MeLFusion models; {args.model} is an Art2Mus model (leave "
            f"{'it' if len(given) == 1 else 'them'} out)"
        )
    if args.manifest is not None or args.image_dir is not None:
        raise MelfusionInputError(
            "batch mode (--manifest / --image-dir) takes MeLFusion models; for Art2Mus call "
            "Art2MusPipeline in Python, or generate one clip per command"
        )


def call_kwargs(pipe: Any, args: argparse.Namespace, image_guidance: float | None) -> dict[str, Any]:
    """The pipeline keywords of this command's options (Art2Mus takes the common ones)."""
    kwargs: dict[str, Any] = {
        "audio_length_in_s": args.seconds,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
    }
    if args.negative is not None or not is_art2mus(pipe):  # Art2Mus keeps its own default negative
        kwargs["negative_prompt"] = args.negative
    if not is_art2mus(pipe):
        kwargs |= {
            "image_guidance_scale": image_guidance,
            "guidance_capture": args.capture,
            "image_inversion_steps": args.image_steps,
            "window_overlap_s": args.window_overlap,
        }
    return kwargs


def default_seconds(pipe: Any) -> float:
    if hasattr(pipe, "default_audio_length_in_s"):
        return float(pipe.default_audio_length_in_s)
    from melfusion.pipelines.art2mus.constants import AUDIO_LENGTH_S

    return AUDIO_LENGTH_S


def check_window_overlap(pipe: Any, overlap: float | None) -> None:
    """``--window-overlap`` against the loaded model's window, once before any clip is made (the pipeline checks
    it too, but in batch mode every row would then fail on its own)."""
    if overlap is None:
        return
    window = pipe.default_audio_length_in_s
    if overlap >= window:
        raise MelfusionInputError(
            f"--window-overlap {overlap:g} s must be shorter than the model's {window:g} s window"
        )


def output_paths(out: str | os.PathLike, n: int) -> list[Path]:
    out = Path(out)
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(n)]


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # symlink loop
        return path.absolute()


def check_output_folder(folder: Path, what: str, names: Iterable[str] = ()) -> None:
    """The folder `what` writes to can be written: it (or the nearest existing ancestor, where it will be
    created) is a writable folder, and the temporary of each name in `names` fits the file-name limit."""
    from melfusion.utils.files import longest_temporary_name

    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise MelfusionInputError(
            f"cannot write {what}: {existing} is a file, not a folder; choose another output path"
        )
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    for name in names:
        if len(os.fsencode(longest_temporary_name(folder / name))) > name_max:
            raise MelfusionInputError(f"file name too long for {what}: {name}; choose a shorter one")
    try:  # a real write: permissions, read-only mounts and ACLs all show up here
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".melfusion-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise MelfusionInputError(
            f"cannot write {what}: {existing} is not writable ({err.strerror}); check its permissions "
            "or choose another output folder"
        ) from None


def _written_by_generate(info: dict[str, Any] | None) -> bool:
    return info is not None and str(info.get("command", "")).startswith("melfusion generate")


def check_replaceable(path: Path, inputs: dict[Path, str], flag: str, verify_hash: bool = True) -> bool:
    """Whether `path` (an audio output) and its sidecar exist; refuse (MelfusionInputError) when writing them
    would replace an input or a file `melfusion generate` did not write.

    The rule: an existing audio file may be replaced only when its sidecar is a `melfusion generate` sidecar
    that names this file and holds its SHA-256 (older sidecars, without the hash: names it); an existing
    sidecar only when it is such a sidecar. Anything else, links and non-regular files included, is kept.
    ``verify_hash=False`` (batch mode, where an existing clip is skipped, never replaced) skips hashing."""
    from melfusion.audio.io import read_sidecar, sidecar_matches_audio, sidecar_path

    side = sidecar_path(path)
    for target in (path, side):
        source = inputs.get(_resolved(target))
        if source is not None:
            raise MelfusionInputError(
                f"{flag} would overwrite the input {source} ({target}); choose another output"
            )
    present = [t for t in (path, side) if os.path.lexists(t)]
    if not present:
        return False
    for target in present:
        if not stat.S_ISREG(os.lstat(target).st_mode):
            kind = "a folder" if target.is_dir() else "not a regular file (a link, FIFO or device)"
            raise MelfusionInputError(f"{flag}: {target} exists and is {kind}; choose another output")
    info = read_sidecar(path) if side in present else None
    fix = f"choose another {flag}, or delete it if it can go"
    if side in present and not _written_by_generate(info):
        raise MelfusionInputError(f"{flag}: {side} exists and was not written by melfusion generate; {fix}")
    if side in present and info.get("audio_file", path.name) != path.name:
        raise MelfusionInputError(
            f"{flag}: {side} is the sidecar of {info['audio_file']}, not {path.name}; {fix}"
        )
    if path in present and info is None:
        raise MelfusionInputError(
            f"{flag}: {path} exists and melfusion generate did not write it (no sidecar next to it); {fix}"
        )
    if path in present and verify_hash and not sidecar_matches_audio(path, info):
        raise MelfusionInputError(
            f"{flag}: {path} was changed after melfusion generate wrote it (its SHA-256 differs from "
            f"{side.name}'s); {fix}"
        )
    return path in present


def _free_bytes(folder: Path) -> int:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return -1  # unknown: do not block


def check_free_space(folder: Path, n_clips: int, seconds: float, sample_rate: int) -> None:
    need = n_clips * (math.ceil(seconds * sample_rate) * BYTES_PER_SAMPLE + SIDECAR_BYTES)
    free = _free_bytes(folder)
    if 0 <= free < need:
        raise MelfusionInputError(
            f"not enough disk space in {folder}: {free / 1e6:.1f} MB free, {n_clips} clip(s) of {seconds:g} s "
            f"need up to {need / 1e6:.1f} MB; free some space or choose another output folder"
        )


def _save(path: Path, audio: Any, sample_rate: int, loudness: float | None, meta: dict[str, Any]) -> None:
    """save_audio with write failures (disk full, folder gone or read-only) as one-line errors."""
    import soundfile as sf

    from melfusion.audio.io import save_audio

    try:
        save_audio(path, audio, sample_rate, loudness_lufs=loudness, metadata=meta)
    except (OSError, sf.SoundFileError) as err:
        reason = getattr(err, "strerror", None) or (str(err).splitlines() or [type(err).__name__])[0]
        raise MelfusionInputError(
            f"could not write {path} ({reason}); check free disk space and write permission, or choose "
            "another output"
        ) from None


def prepare_single_outputs(args: argparse.Namespace) -> list[Path]:
    """Checks on `--out` that need no model: folder writable, nothing foreign or an input replaced."""
    from melfusion.audio.io import recover_audio_pairs, sidecar_path

    paths = output_paths(args.out, args.num_samples)
    folder = paths[0].parent
    check_output_folder(
        folder, f"--out {args.out}", [n for p in paths for n in (p.name, sidecar_path(p).name)]
    )
    recover_audio_pairs(folder)  # finish or drop commits a killed run left here
    inputs = {_resolved(Path(args.image)): f"--image {args.image}"}
    if args.model is not None:
        inputs[_resolved(Path(args.model) / "model_index.json")] = (
            f"the model's {Path(args.model) / 'model_index.json'}"
        )
    for path in paths:
        check_replaceable(path, inputs, "--out")
    return paths


def run(args: argparse.Namespace) -> int:
    validate_args(args)
    if args.manifest is not None or args.image_dir is not None:
        return run_batch(args)
    import torch
    import transformers

    from melfusion import __version__
    from melfusion.utils.files import sha256_file

    transformers.logging.set_verbosity_error()
    paths = prepare_single_outputs(args)
    device = resolve_device(args.device)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    pipe, model_name = load_pipeline(args.model, device)
    resolve_call_settings(pipe, args)
    check_window_overlap(pipe, args.window_overlap)
    set_scheduler(pipe, args.scheduler)
    image_guidance = None if is_art2mus(pipe) else apply_image_guidance(pipe, args.image_guidance)
    seconds = args.seconds if args.seconds is not None else default_seconds(pipe)
    sample_rate = pipe.sample_rate if hasattr(pipe, "sample_rate") else int(pipe.vocoder.config.sampling_rate)
    check_free_space(paths[0].parent, len(paths), seconds, sample_rate)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    start = time.perf_counter()
    result = pipe(
        image=args.image,
        prompt=args.text,
        num_waveforms_per_prompt=args.num_samples,
        generator=generator,
        **call_kwargs(pipe, args, image_guidance),
        **({} if is_art2mus(pipe) else {"seed": seed}),
    )
    elapsed = time.perf_counter() - start
    image_sha = sha256_file(args.image)
    for i, (path, audio) in enumerate(zip(paths, result.audios)):
        meta = {
            **result.parameters,
            "model": model_name,
            "image": str(Path(args.image).resolve()),
            "image_file_sha256": image_sha,
            "sample_index": i,
            "device": device,
            "generation_seconds": round(elapsed, 3),
            "seed": seed,
            "image_guidance": "off" if args.image_guidance == "off" else image_guidance,
            "loudness_target_lufs": args.loudness,
            "melfusion_version": __version__,
            "command": "melfusion generate",
        }
        _save(path, audio, result.sample_rate, args.loudness, meta)
        print(f"wrote {path} ({len(audio) / result.sample_rate:.2f} s, seed {seed})")
    return 0


def clip_names(records: Sequence[Any]) -> list[str]:
    """One output file name per manifest row, always a plain name inside --out-dir: the reference audio's
    stem (so `melfusion evaluate` pairs the folders); when those repeat, the row's id made a safe file name
    (path separators, "..", leading dots and control characters removed; ``row<i>`` when nothing is left).
    Two rows whose names still collide (case-insensitively) are refused."""
    from melfusion.utils.files import safe_file_stem

    stems = [safe_file_stem(r.audio.stem) if r.audio else "" for r in records]
    if "" in stems or len({x.casefold() for x in stems}) != len(stems):  # several rows share one reference
        stems = [safe_file_stem(str(r.id)) or f"row{i}" for i, r in enumerate(records)]
    seen: dict[str, int] = {}
    for i, stem in enumerate(stems):
        j = seen.setdefault(stem.casefold(), i)
        if j != i:
            raise MelfusionInputError(
                f"rows {j} and {i} (ids {records[j].id!r}, {records[i].id!r}) would both write {stem}.wav; "
                "give the rows distinct plain ids (letters, digits, '-', '_')"
            )
    return [f"{stem}.wav" for stem in stems]


def expected_settings(
    args: argparse.Namespace, pipe: Any, model_name: str, image_guidance: float | None
) -> dict[str, Any]:
    """The settings a resumed batch compares with each clip's sidecar that are the same for every row (as the
    sidecar records them); the row's prompt, image and seed are added per row."""
    from melfusion.guidance.conditioner import normalize_capture

    seconds = float(args.seconds if args.seconds is not None else pipe.default_audio_length_in_s)
    return {
        "negative_prompt": args.negative,
        "model": model_name,
        "audio_length_in_s": seconds,
        "window_overlap_s": pipe.window_overlap_seconds(pipe.window_plan(seconds, args.window_overlap)),
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "image_guidance_scale": (
            image_guidance if image_guidance is not None else pipe.config.get("default_image_guidance_scale")
        ),
        "scheduler": type(pipe.scheduler).__name__,
        "guidance_capture": normalize_capture(args.capture),
        "image_inversion_steps": args.image_steps,
        "loudness_target_lufs": args.loudness,
    }


def _differences(info: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Settings that differ; image paths compare resolved (a resume may spell the manifest path otherwise)."""

    def same(key: str, old: Any, new: Any) -> bool:
        if key == "image" and isinstance(old, str) and isinstance(new, str):
            return _resolved(Path(old)) == _resolved(Path(new))
        return old == new

    return [f"{k} {info.get(k)!r}, now {v!r}" for k, v in expected.items() if not same(k, info.get(k), v)]


def run_batch(args: argparse.Namespace) -> int:
    """Batch generation: one clip per manifest row (``--manifest``, for evaluation) or per image in a folder
    (``--image-dir``), named by `clip_names` (the reference audio's or the image's stem).

    Rows are sharded across processes (``accelerate launch -m melfusion.cli generate --manifest ...``);
    each manifest row's seed is ``--seed + row index`` so the result does not depend on the number of
    processes; every image of ``--image-dir`` uses ``--seed`` (adding images to the folder changes no seed).
    Resuming: a row whose clip and sidecar already exist is skipped when its sidecar records this run's
    settings (prompt, image, model, seed, length, steps, guidance, sampler, ...); when any clip was made
    with other settings the run stops before generating and asks for a fresh --out-dir (mixing settings in
    one evaluation folder is never silent). Commits a killed run left are finished or dropped first."""
    import torch
    import transformers
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from melfusion import __version__
    from melfusion.audio.io import read_sidecar, recover_audio_pairs
    from melfusion.data.manifest import read_image_dir, read_manifest, read_prompts_file

    transformers.logging.set_verbosity_error()
    if args.image_dir is not None:
        prompts = read_prompts_file(args.prompts) if args.prompts is not None else None
        records = read_image_dir(args.image_dir, args.text, prompts)
        inputs = {_resolved(Path(args.prompts)): f"--prompts {args.prompts}"} if args.prompts else {}
    else:
        records = read_manifest(args.manifest, args.format, require_audio=False)  # references are optional
        if not records:
            raise MelfusionInputError(f"{args.manifest} has no usable row")
        inputs = {_resolved(Path(args.manifest)): f"--manifest {args.manifest}"}
    flag = "--image-dir" if args.image_dir is not None else "--manifest"
    base_seed = args.seed if args.seed is not None else 0

    def seed_of(i: int) -> int:
        return base_seed if args.image_dir is not None else base_seed + i

    if seed_of(len(records) - 1) > SEED_MAX:
        raise MelfusionInputError(
            f"--seed {base_seed} + row index exceeds 2^64 - 1 for {len(records)} rows; use a smaller --seed"
        )
    out_dir = Path(args.out_dir)
    names = clip_names(records)
    root = _resolved(out_dir)
    for n in names:  # belt and braces: every output is a direct child of --out-dir
        if _resolved(out_dir / n).parent != root:
            raise MelfusionInputError(f"row output {n!r} would leave --out-dir; give the row a plain id")
    check_output_folder(
        out_dir, f"--out-dir {out_dir}", [n for name in names for n in (name, f"{name[:-4]}.json")]
    )
    recover_audio_pairs(out_dir)
    for r in records:
        inputs.update({_resolved(Path(im)): f"image {im}" for im in r.images})
        if r.audio:
            inputs[_resolved(Path(r.audio))] = f"reference audio {r.audio}"
    existing = [
        i
        for i, n in enumerate(names)
        if check_replaceable(out_dir / n, inputs, "--out-dir", verify_hash=False)
    ]

    state = PartialState()
    device = str(state.device) if args.device == "auto" else resolve_device(args.device)
    pipe, model_name = load_pipeline(args.model, device)
    resolve_call_settings(pipe, args)
    check_window_overlap(pipe, args.window_overlap)
    set_scheduler(pipe, args.scheduler)
    image_guidance = apply_image_guidance(pipe, args.image_guidance)
    pipe.set_progress_bar_config(disable=True)

    common = expected_settings(args, pipe, model_name, image_guidance)
    done: set[int] = set()
    stale: list[str] = []
    for i in existing:
        info = read_sidecar(out_dir / names[i]) or {}
        rec = records[i]
        diff = _differences(
            info,
            {
                **common,
                "prompt": [rec.text],
                "image": str(_resolved(Path(rec.images[0]))),
                "seed": seed_of(i),
            },
        )
        if diff:
            stale.append(f"{names[i]}: {diff[0]}")
        else:
            done.add(i)
    if stale:
        raise MelfusionInputError(
            f"--out-dir {out_dir} holds {len(stale)} clip(s) made with other settings ({stale[0]}); use a "
            "fresh --out-dir, or delete those clips and their .json files to regenerate them"
        )
    todo = [i for i in range(len(names)) if i not in done]
    check_free_space(out_dir, len(todo), common["audio_length_in_s"], pipe.sample_rate)
    state.wait_for_everyone()  # every process has listed the existing clips before any writes
    failed = 0
    with state.split_between_processes(todo) as mine:
        bar = tqdm(mine, desc=f"generate [{state.process_index}]", disable=not state.is_local_main_process)
        for i in bar:
            rec = records[i]
            seed = seed_of(i)
            try:
                result = pipe(
                    image=str(rec.images[0]),
                    prompt=rec.text,
                    generator=torch.Generator(device="cpu").manual_seed(seed),
                    seed=seed,
                    progress=False,
                    **call_kwargs(pipe, args, image_guidance),
                )
            except MelfusionInputError as err:  # a bad row is reported and skipped, never a crash mid-run
                failed += 1
                tqdm.write(f"skipped row {i} ({rec.id}): {err}")
                continue
            meta = {
                **result.parameters,
                "model": model_name,
                "image": str(_resolved(Path(rec.images[0]))),
                "row": i,
                "id": rec.id,
                "reference_audio": str(rec.audio) if rec.audio is not None else None,
                "loudness_target_lufs": args.loudness,
                "melfusion_version": __version__,
                "command": f"melfusion generate {flag}",
            }
            _save(out_dir / names[i], result.audios[0], result.sample_rate, args.loudness, meta)
    state.wait_for_everyone()
    if state.is_main_process:
        done_now = sum((out_dir / n).exists() for n in names)
        print(f"{done_now}/{len(names)} clips in {out_dir} ({len(done)} were already there)")
    return 0 if failed == 0 else 1
