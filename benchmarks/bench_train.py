"""Training throughput of the tiny config on this machine, with and without the frozen-feature caches.

Prints samples/s for (a) no caches: every step re-runs the audio VAE encoder, the text encoder and the
image's DDIM inversion (Alg. 1 line 1) and (b) warm caches (second pass over the same crops), their ratio,
and the process peak RSS. On a GPU (--device is picked by accelerate) also give --full for the full-size
step time and memory with bf16 and gradient checkpointing (needs a converted pipeline folder).

    python benchmarks/bench_train.py [--steps 20] [--items 16] [--pretrained DIR --mixed-precision bf16]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from melfusion.training.config import load_config
from melfusion.training.trainer import MeLFusionTrainer


def write_data(root: Path, n: int, seconds: float, sr: int = 16000) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    rows = []
    for i in range(n):
        wave = 0.3 * np.sin(2 * np.pi * 220 * 2 ** (i / 12) * t) + 0.01 * rng.standard_normal(t.shape)
        sf.write(root / f"a{i}.wav", wave.astype(np.float32), sr)
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(root / f"i{i}.png")
        rows.append(
            {
                "id": f"x{i}",
                "image": f"i{i}.png",
                "audio": f"a{i}.wav",
                "text": f"tune {i % 5} in style {i % 3}",
            }
        )
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(manifest: Path, out: Path, steps: int, batch: int, cache: bool, extra: list[str]) -> float:
    cfg = load_config(
        None,
        [
            f"data.train_manifest={manifest}",
            f"train.output_dir={out}",
            f"train.max_steps={steps}",
            f"train.batch_size={batch}",
            f"train.use_cache={str(cache).lower()}",
            "train.report_to=none",
            "train.checkpoint_every=0",
            "train.validate_every=0",
            "data.random_crop=false",
            *extra,
        ],
    )
    trainer = MeLFusionTrainer(cfg)
    if cache:  # warm the caches with one pass, then time a fresh run over the same data
        trainer.train()
        cfg.train.output_dir = str(out / "timed")
        cfg.train.cache_dir = str(out / "cache")
        trainer = MeLFusionTrainer(cfg)
    start = time.perf_counter()
    trainer.train()
    return steps * batch / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--pretrained", default=None, help="pipeline folder (full size) instead of the tiny preset"
    )
    ap.add_argument("--mixed-precision", default="no")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    args = ap.parse_args()
    extra = [
        f"train.mixed_precision={args.mixed_precision}",
        f"train.gradient_checkpointing={str(args.gradient_checkpointing).lower()}",
    ]
    if args.pretrained:
        extra.append(f"model.pretrained={args.pretrained}")
    else:
        extra += ["model.tiny_pretrained_text_encoder=true", "model.tiny_audio_seconds=5.12"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = write_data(root, args.items, 5.5)
        cold = run(manifest, root / "nocache", args.steps, args.batch_size, False, extra)
        warm = run(manifest, root / "cache", args.steps, args.batch_size, True, extra)
    print(
        f"config: {'pretrained ' + args.pretrained if args.pretrained else 'tiny preset (5.12 s clips)'}, "
        f"batch {args.batch_size}, {args.steps} steps, threads {torch.get_num_threads()}"
    )
    print(f"samples/s without caches: {cold:.2f}")
    print(f"samples/s with warm caches: {warm:.2f}")
    print(f"ratio (cached / uncached): {warm / cold:.2f}x")
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")
    if torch.cuda.is_available():
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
