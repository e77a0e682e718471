"""Evaluation throughput (files/s) and the Fréchet-distance cross-check against peer toolkits.

    .venv/bin/python benchmarks/bench_eval.py                      # tiny embedders, CPU
    .venv/bin/python benchmarks/bench_eval.py --full --device cuda # full-size architectures (random weights)
    .venv/bin/python benchmarks/bench_eval.py --peer-wheel fad.whl --peer-wheel fadtk.whl

Prints, per embedder, files/s of embedding extraction (audio loading and resampling included), then
files/s of a whole `evaluate` run (all metrics, reference + generated files, no cache) and of a second
run served from the embedding cache, then the relative difference between our Fréchet distance and each
available peer's on identical embedding arrays (peers: installed frechet-audio-distance / fadtk, or
only their Fréchet function taken from wheels fetched with `pip download --no-deps`).
`--full` builds VGGish, Cnn14, CLAP (HTSAT-tiny) and CLIP ViT-B/32 at full size with random weights:
the compute of the real checkpoints, without needing them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from melfusion.encoders.base import module_fingerprint
from melfusion.evaluation import EvaluationOptions, evaluate
from melfusion.evaluation.audio import list_audio_files, load_audio
from melfusion.evaluation.embedders import (
    ClapEmbedder,
    ClipEmbedder,
    Cnn14,
    PANNsEmbedder,
    VGGish,
    VGGishEmbedder,
)
from melfusion.evaluation.metrics import embedding_statistics, frechet_distance
from melfusion.recipes.peer_check import peer_frechet_functions


def make_dataset(root: Path, n: int, seconds: float) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    for d in ("ref", "gen", "images"):
        (root / d).mkdir(parents=True, exist_ok=True)
    rows = []
    t = np.arange(int(seconds * 16000)) / 16000
    for i in range(n):
        f = 110.0 * 2 ** (i % 24 / 12)
        ref = 0.3 * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(t.size)
        gen = 0.3 * np.sin(2 * np.pi * f * 1.01 * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(root / "ref" / f"clip{i:04d}.wav", ref.astype(np.float32), 16000)
        sf.write(root / "gen" / f"clip{i:04d}.wav", gen.astype(np.float32), 16000)
        img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"clip{i:04d}.png")
        rows.append({"audio": f"clip{i:04d}.wav", "image": f"images/clip{i:04d}.png", "text": f"tune {i}"})
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return {"ref": root / "ref", "gen": root / "gen", "manifest": root / "manifest.jsonl"}


def full_size_embedders(device: str) -> dict[str, Any]:
    """Full-size architectures with random weights (the compute of the real checkpoints)."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, CLIPConfig, CLIPModel

    from melfusion.encoders.base import HashTokenizer
    from melfusion.encoders.clip import _image_processor_class

    torch.manual_seed(0)
    vgg, cnn = VGGish(), Cnn14()
    clap = ClapModel(ClapConfig())  # defaults: HTSAT-tiny audio tower, RoBERTa-base text tower (unfused size)
    clip = CLIPModel(CLIPConfig())  # defaults: ViT-B/32
    proc = _image_processor_class()(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    return {
        "vggish": VGGishEmbedder(vgg, fingerprint="full-random", device=device),
        "panns": PANNsEmbedder(cnn, fingerprint=module_fingerprint(cnn.fc1), device=device),
        "clap": ClapEmbedder(
            clap,
            ClapFeatureExtractor(),
            HashTokenizer(1000, 77, pad_id=1),
            model_id="full",
            fingerprint="r",
            device=device,
        ),
        "clip": ClipEmbedder(
            clip, proc, HashTokenizer(1000, 77), model_id="full", fingerprint="r", device=device
        ),
    }


def tiny_embedders(device: str) -> dict[str, Any]:
    return {
        "vggish": VGGishEmbedder.tiny(device=device),
        "panns": PANNsEmbedder.tiny(device=device),
        "clap": ClapEmbedder.tiny(device=device),
        "clip": ClipEmbedder.tiny(device=device),
    }


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_extraction(
    embedders: dict[str, Any], files: list[Path], images: list[Path]
) -> list[tuple[str, int, float]]:
    rows = []
    for name in ("vggish", "panns", "clap"):
        emb = embedders[name]
        emb.embed_waveforms([load_audio(files[0], emb.sample_rate)])  # warm-up
        _sync()
        t0 = time.perf_counter()
        waves = [load_audio(f, emb.sample_rate) for f in files]
        emb.embed_waveforms(waves)
        _sync()
        rows.append((name, len(files), time.perf_counter() - t0))
    clip = embedders["clip"]
    clip.embed_images(images[:1])
    t0 = time.perf_counter()
    clip.embed_images(images)
    _sync()
    rows.append(("clip (images)", len(images), time.perf_counter() - t0))
    return rows


def bench_run(
    data: dict[str, Path], embedders: dict[str, Any], cache: Path, device: str
) -> list[tuple[str, int, float]]:
    opts = EvaluationOptions(
        metrics=["fad", "fd", "kl", "isc", "clap", "imsm", "spectral_kl"],
        cache_dir=str(cache),
        device=device,
        progress=False,
    )
    n = len(list_audio_files(data["gen"])) + len(list_audio_files(data["ref"]))
    out = []
    for label in ("whole run, cold cache", "whole run, warm cache"):
        t0 = time.perf_counter()
        evaluate([data["gen"]], data["ref"], manifest=data["manifest"], options=opts, embedders=embedders)
        out.append((label, n, time.perf_counter() - t0))
    return out


def bench_peers(wheels: list[str], dims: list[int]) -> list[tuple[str, int, float, float, float]]:
    peers = peer_frechet_functions(wheels or None)
    rows = []
    for d in dims:
        rng = np.random.default_rng(d)
        x = rng.standard_normal((2 * d + 100, d))
        y = rng.standard_normal((2 * d + 100, d)) @ (np.eye(d) + 0.1 * rng.standard_normal((d, d))) + 0.2
        mu1, s1 = embedding_statistics(x)
        mu2, s2 = embedding_statistics(y)
        t0 = time.perf_counter()
        ours = frechet_distance(mu1, s1, mu2, s2)
        t_ours = time.perf_counter() - t0
        for name, fn in peers:
            t0 = time.perf_counter()
            theirs = fn(mu1, s1, mu2, s2)
            rows.append((name, d, abs(ours - theirs) / abs(theirs), t_ours, time.perf_counter() - t0))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=16, help="clips per folder (reference and generated)")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length")
    p.add_argument("--full", action="store_true", help="full-size architectures (random weights)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--peer-wheel", action="append", default=[], help="peer wheel (pip download --no-deps)")
    p.add_argument(
        "--peer-dims", type=int, nargs="+", default=[128, 512], help="embedding sizes to cross-check"
    )
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args(argv)

    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    if not args.skip_throughput:
        with tempfile.TemporaryDirectory() as tmp:
            data = make_dataset(Path(tmp), args.files, args.seconds)
            embedders = full_size_embedders(args.device) if args.full else tiny_embedders(args.device)
            kind = "full-size, random weights" if args.full else "tiny"
            files = list_audio_files(data["gen"])
            images = sorted((Path(tmp) / "images").iterdir())
            print(f"\n{kind} embedders, {args.files} clips of {args.seconds:g} s per folder")
            print(f"{'what':<28}{'files':>7}{'seconds':>10}{'files/s':>10}")
            for name, n, s in bench_extraction(embedders, files, images) + bench_run(
                data, embedders, Path(tmp) / "cache", args.device
            ):
                print(f"{name:<28}{n:>7}{s:>10.2f}{n / s:>10.1f}")
    rows = bench_peers(args.peer_wheel, args.peer_dims)
    print("\nFréchet distance vs peers on identical arrays")
    if not rows:
        print("  no peer available (pass --peer-wheel, see the docstring)")
    for name, d, rel, t_ours, t_peer in rows:
        print(
            f"  {name:<55} D={d:<5} relative difference {rel:.2e}  (ours {t_ours:.2f} s, peer {t_peer:.2f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
