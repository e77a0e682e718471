"""`melfusion convert tango`: a TANGO checkpoint + a Stable Diffusion folder -> one MeLFusion pipeline folder."""

from __future__ import annotations

import argparse
import inspect
import math
import sys
from pathlib import Path
from typing import Any

from melfusion.errors import MelfusionInputError

_DTYPES = ("float32", "float16", "bfloat16")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert full-size checkpoints into a MeLFusion pipeline folder",
        description="Convert full-size checkpoints into a MeLFusion pipeline folder (safetensors).",
    )
    sub = parser.add_subparsers(dest="convert_command", required=True)
    tango = sub.add_parser(
        "tango",
        help="TANGO music LDM + Stable Diffusion image LDM -> MeLFusion folder",
        description=(
            "Build a MeLFusion pipeline folder from a TANGO checkpoint folder ({main,vae,stft}_config.json + "
            "pytorch_model_{main,vae,stft}.bin) and a diffusers Stable Diffusion 1.5/2.1 folder or hub id. "
            "The visual synapse starts at alpha = 0 (the converted pipeline equals TANGO until trained)."
        ),
    )
    tango.add_argument("--tango", required=True, metavar="DIR", help="TANGO checkpoint folder")
    tango.add_argument(
        "--image-ldm", required=True, metavar="DIR_OR_ID", help="diffusers Stable Diffusion folder or hub id"
    )
    tango.add_argument("--out", required=True, metavar="DIR", help="output folder (must be new or empty)")
    tango.add_argument(
        "--text-encoder",
        metavar="DIR_OR_ID",
        default=None,
        help="T5 config + tokenizer (default: main_config.json's text_encoder_name, google/flan-t5-large)",
    )
    tango.add_argument(
        "--unet-config", metavar="JSON", default=None, help="TANGO UNet config (default: TANGO's own)"
    )
    tango.add_argument(
        "--rho", type=float, default=5.0, help="synapse scale: alpha = (2 sigmoid(a) - 1) / rho"
    )
    tango.add_argument("--dtype", choices=_DTYPES, default="float32", help="dtype of the saved weights")
    tango.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    tango.set_defaults(func=run)


def _pipeline_classes() -> tuple[Any, Any]:
    try:
        from melfusion.models.synapse import VisualSynapse
        from melfusion.pipelines.melfusion import MeLFusionPipeline
    except ImportError as err:  # a build problem, not a user-input one
        raise RuntimeError(f"this melfusion build cannot assemble pipelines: {err}") from err
    return VisualSynapse, MeLFusionPipeline


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise MelfusionInputError(f"--out {out} is a file; pass a folder path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MelfusionInputError(f"--out {out} is not empty; choose a new folder or pass --overwrite")


def _pipeline_kwargs(pipeline_cls: Any, components: dict[str, Any]) -> dict[str, Any]:
    """The components the pipeline's __init__ takes; ``mel_config`` is dropped only if it takes none."""
    params = inspect.signature(pipeline_cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(components)
    unknown = sorted(k for k in components if k not in params and k != "mel_config")
    if unknown:
        raise RuntimeError(f"{pipeline_cls.__name__} does not take the components {unknown}")
    return {k: v for k, v in components.items() if k in params}


def _warn_if_mel_config_differs(mel_config: dict[str, Any]) -> None:
    """The pipeline takes its audio front end from defaults + the vocoder; say so when TANGO's differs."""
    from melfusion.audio.mel import MelConfig

    default = MelConfig().to_dict()
    diff = {k: v for k, v in mel_config.items() if k in default and default[k] != v}
    if diff:
        print(
            f"warning: the checkpoint's STFT/mel settings differ from melfusion's defaults: {diff}",
            file=sys.stderr,
        )


def run(args: argparse.Namespace) -> int:
    import torch

    from melfusion.convert.stable_diffusion import load_image_ldm_components
    from melfusion.convert.tango import load_tango_music_components

    if not math.isfinite(args.rho) or args.rho <= 0:
        raise MelfusionInputError(f"--rho must be a positive number, got {args.rho}")
    out = Path(args.out).expanduser()
    _check_out(out, args.overwrite)
    dtype = getattr(torch, args.dtype)

    print(f"loading TANGO from {args.tango}", file=sys.stderr)
    music = load_tango_music_components(
        args.tango, text_encoder=args.text_encoder, unet_config=args.unet_config, torch_dtype=dtype
    )
    print(f"loading the image LDM from {args.image_ldm}", file=sys.stderr)
    image = load_image_ldm_components(args.image_ldm, torch_dtype=dtype)

    visual_synapse_cls, pipeline_cls = _pipeline_classes()
    try:
        synapse = visual_synapse_cls.from_unets(music["unet"], image["image_unet"], rho=args.rho)
    except ValueError as err:  # widths of the two decoders differ
        raise MelfusionInputError(f"{args.tango} and {args.image_ldm} cannot be paired: {err}") from err
    components = {**music, **image, "synapse": synapse}
    kwargs = _pipeline_kwargs(pipeline_cls, components)
    if "mel_config" not in kwargs:
        _warn_if_mel_config_differs(music["mel_config"])
    pipe = pipeline_cls(**kwargs)
    # ∅ of the image LDM goes into the synapse's weights: inference then needs no image text encoder
    # (OpenCLIP-H for SD 2.1), so it is not written
    pipe.store_image_null_prompt()
    pipe.register_modules(image_text_encoder=None, image_tokenizer=None)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    print(f"wrote {out}", file=sys.stderr)
    print(
        f"note: its visual synapse starts at alpha = 0, so it ignores the image (it is TANGO) until trained: "
        f"melfusion train model.pretrained={out} ...",
        file=sys.stderr,
    )
    return 0
