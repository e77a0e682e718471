"""`melfusion generate`: music from an image and a text prompt."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

from melfusion.errors import MelfusionInputError

SCHEDULERS = ("ddim", "ddpm", "dpmsolver++")
AUDIO_SUFFIXES = (".wav", ".flac")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate music from an image and a text prompt",
        description="Generate music that fits an image and a text prompt (MeLFusion).",
    )
    p.add_argument("--image", help="input image (PNG, JPEG, WebP, ...)")
    p.add_argument("--text", help='text prompt, e.g. "a soft folk track on violin"')
    p.add_argument("--out", help="output audio file (.wav or .flac); a .json sidecar is written next to it")
    p.add_argument(
        "--manifest", help="batch mode: generate for every row of a triplet manifest (JSONL/CSV/MeLBench/...)"
    )
    p.add_argument(
        "--out-dir",
        help="batch mode: output folder; files are named after each row's reference audio, so the folder pairs "
        "with the references in `melfusion evaluate`; existing outputs are skipped (resumable)",
    )
    p.add_argument("--format", default="auto", help="batch mode: manifest format (default: auto-detect)")
    p.add_argument("--negative", default=None, help="negative prompt for classifier-free guidance")
    p.add_argument(
        "--seconds", type=float, default=None, help="clip length in seconds (default: the model's)"
    )
    p.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    p.add_argument(
        "--guidance", type=float, default=7.0, help="text guidance scale (default 7, as in the paper)"
    )
    p.add_argument(
        "--image-guidance",
        type=image_guidance_arg,
        default=None,
        help="separate image guidance scale (three CFG branches), or 'off' (image in both CFG branches, the "
        "released code's behaviour); default: the model's (the embedded model: 14; converted paper models: off)",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="random seed (default: drawn and recorded in the sidecar)"
    )
    p.add_argument("--num-samples", type=int, default=1, help="number of clips (out_0.wav, out_1.wav, ...)")
    p.add_argument("--model", default=None, help="pipeline folder (default: the embedded model)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default=None, help="sampler (default: the model's)")
    p.add_argument(
        "--capture",
        choices=("trajectory", "inversion-lagged", "reverse", "inversion"),
        default="trajectory",
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
        help="loudness target in LUFS, e.g. -14 (default: peak-safe only)",
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


def _validate(args: argparse.Namespace) -> None:
    """Fail fast, before any model is loaded."""
    from melfusion.guidance.preprocess import load_image

    if args.manifest is not None:
        if args.image or args.text or args.out:
            raise MelfusionInputError(
                "--manifest replaces --image/--text/--out; give --manifest with --out-dir"
            )
        if not args.out_dir:
            raise MelfusionInputError("--manifest needs --out-dir (the folder to write the clips to)")
        if not Path(args.manifest).is_file():
            raise MelfusionInputError(f"manifest not found: {args.manifest}")
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
            raise MelfusionInputError(f"--out must end in .wav or .flac, got {args.out!r}")
    if args.seconds is not None and (not math.isfinite(args.seconds) or not 0 < args.seconds <= 600):
        raise MelfusionInputError(f"--seconds must be in (0, 600], got {args.seconds}")
    if args.image_steps is not None and not 1 <= args.image_steps <= 1000:
        raise MelfusionInputError(f"--image-steps must be in [1, 1000], got {args.image_steps}")
    if not 1 <= args.steps <= 1000:
        raise MelfusionInputError(f"--steps must be in [1, 1000], got {args.steps}")
    if not math.isfinite(args.guidance) or args.guidance < 0:
        raise MelfusionInputError(f"--guidance must be >= 0, got {args.guidance}")
    if isinstance(args.image_guidance, float) and (
        not math.isfinite(args.image_guidance) or args.image_guidance < 0
    ):
        raise MelfusionInputError(f"--image-guidance must be >= 0, got {args.image_guidance}")
    if not 1 <= args.num_samples <= 64:
        raise MelfusionInputError(f"--num-samples must be in [1, 64], got {args.num_samples}")
    if args.model is not None:
        check_model_folder(args.model)


def check_model_folder(path: str | os.PathLike) -> None:
    p = Path(path)
    if not p.is_dir():
        raise MelfusionInputError(f"model folder not found: {p} (give a folder written by save_pretrained)")
    index = p / "model_index.json"
    if not index.is_file():
        raise MelfusionInputError(
            f"{p} is not a melfusion model folder: no model_index.json (convert a checkpoint with "
            "'melfusion convert' or save one with MeLFusionPipeline.save_pretrained)"
        )
    try:
        name = json.loads(index.read_text()).get("_class_name")
    except (OSError, json.JSONDecodeError) as err:
        raise MelfusionInputError(f"{index} is unreadable or not JSON ({err})") from None
    if name != "MeLFusionPipeline":
        raise MelfusionInputError(f"{p} holds a {name!r} pipeline, not a MeLFusionPipeline")


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MelfusionInputError(
            f"--device {name}: CUDA is not available on this machine (use --device cpu)"
        )
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise MelfusionInputError(f"--device must be cpu, cuda, cuda:N, mps or auto, got {name!r}")
    return name


def load_pipeline(model: str | None, device: str) -> tuple[Any, str]:
    """(pipeline, model name for the sidecar). ``model=None`` → the embedded default."""

    if model is None:
        from melfusion.models.embedded import load_embedded_pipeline

        pipe, name = load_embedded_pipeline()
    else:
        from melfusion.models.embedded import load_pipeline_folder

        try:
            pipe = load_pipeline_folder(model)  # packed folders too (e.g. a copy of the embedded model)
        except (OSError, ValueError, KeyError) as err:
            raise MelfusionInputError(
                f"could not load the model folder {model}: {str(err).splitlines()[0]}"
            ) from None
        name = str(Path(model).resolve())
    return pipe.to(device), name


def set_scheduler(pipe: Any, name: str | None) -> None:
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    if name is None:
        return
    cls = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "dpmsolver++": DPMSolverMultistepScheduler}[name]
    extra = {"algorithm_type": "dpmsolver++"} if name == "dpmsolver++" else {}
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)


def output_paths(out: str | os.PathLike, n: int) -> list[Path]:
    out = Path(out)
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(n)]


def run(args: argparse.Namespace) -> int:
    _validate(args)
    if args.manifest is not None:
        return run_manifest(args)
    import torch
    import transformers

    from melfusion import __version__
    from melfusion.audio.io import save_audio
    from melfusion.utils.files import sha256_file

    transformers.logging.set_verbosity_error()
    device = resolve_device(args.device)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    pipe, model_name = load_pipeline(args.model, device)
    set_scheduler(pipe, args.scheduler)
    image_guidance = apply_image_guidance(pipe, args.image_guidance)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    start = time.perf_counter()
    result = pipe(
        image=args.image,
        prompt=args.text,
        negative_prompt=args.negative,
        audio_length_in_s=args.seconds,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        image_guidance_scale=image_guidance,
        num_waveforms_per_prompt=args.num_samples,
        generator=generator,
        guidance_capture=args.capture,
        image_inversion_steps=args.image_steps,
        seed=seed,
    )
    elapsed = time.perf_counter() - start
    image_sha = sha256_file(args.image)
    paths = output_paths(args.out, args.num_samples)
    for i, (path, audio) in enumerate(zip(paths, result.audios)):
        meta = {
            **result.parameters,
            "model": model_name,
            "image": str(Path(args.image).resolve()),
            "image_file_sha256": image_sha,
            "sample_index": i,
            "device": device,
            "generation_seconds": round(elapsed, 3),
            "melfusion_version": __version__,
            "command": "melfusion generate",
        }
        save_audio(path, audio, result.sample_rate, loudness_lufs=args.loudness, metadata=meta)
        print(f"wrote {path} ({len(audio) / result.sample_rate:.2f} s, seed {seed})")
    return 0


def run_manifest(args: argparse.Namespace) -> int:
    """Batch generation for evaluation: one clip per manifest row, named ``<reference audio stem>.wav``.

    Rows are sharded across processes (``accelerate launch -m melfusion.cli generate --manifest ...``);
    each row's seed is ``--seed + row index`` so the result does not depend on the number of processes;
    rows whose output and sidecar already exist are skipped, so a killed run resumes."""
    import torch
    import transformers
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from melfusion import __version__
    from melfusion.audio.io import save_audio
    from melfusion.data.manifest import read_manifest

    transformers.logging.set_verbosity_error()
    records = read_manifest(args.manifest, args.format)
    if not records:
        raise MelfusionInputError(f"{args.manifest} has no usable row")
    out_dir = Path(args.out_dir)
    names = [f"{(r.audio.stem if r.audio else r.id)}.wav" for r in records]
    if len(set(names)) != len(names):
        names = [f"{r.id}.wav" for r in records]  # several rows share one reference: name by id
    base_seed = args.seed if args.seed is not None else 0
    state = PartialState()
    todo = [
        i
        for i, n in enumerate(names)
        if not ((out_dir / n).exists() and (out_dir / n).with_suffix(".json").exists())
    ]
    device = str(state.device) if args.device == "auto" else resolve_device(args.device)
    pipe, model_name = load_pipeline(args.model, device)
    set_scheduler(pipe, args.scheduler)
    image_guidance = apply_image_guidance(pipe, args.image_guidance)
    pipe.set_progress_bar_config(disable=True)
    failed = 0
    with state.split_between_processes(todo) as mine:
        bar = tqdm(mine, desc=f"generate [{state.process_index}]", disable=not state.is_local_main_process)
        for i in bar:
            rec = records[i]
            seed = base_seed + i
            try:
                result = pipe(
                    image=str(rec.images[0]),
                    prompt=rec.text,
                    negative_prompt=args.negative,
                    audio_length_in_s=args.seconds,
                    num_inference_steps=args.steps,
                    guidance_scale=args.guidance,
                    image_guidance_scale=image_guidance,
                    generator=torch.Generator(device="cpu").manual_seed(seed),
                    guidance_capture=args.capture,
                    image_inversion_steps=args.image_steps,
                    seed=seed,
                    progress=False,
                )
            except MelfusionInputError as err:  # a bad row is reported and skipped, never a crash mid-run
                failed += 1
                tqdm.write(f"skipped row {i} ({rec.id}): {err}")
                continue
            meta = {
                **result.parameters,
                "model": model_name,
                "image": str(rec.images[0]),
                "row": i,
                "id": rec.id,
                "reference_audio": str(rec.audio),
                "melfusion_version": __version__,
                "command": "melfusion generate --manifest",
            }
            save_audio(
                out_dir / names[i],
                result.audios[0],
                result.sample_rate,
                loudness_lufs=args.loudness,
                metadata=meta,
            )
    state.wait_for_everyone()
    if state.is_main_process:
        done = sum((out_dir / n).exists() for n in names)
        print(f"{done}/{len(names)} clips in {out_dir} ({len(names) - len(todo)} were already there)")
    return 0 if failed == 0 else 1
