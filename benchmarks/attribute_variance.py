"""How much of the training audio each corpus attribute explains: what a denoising loss can reward.

The optimal x0 estimate at high noise is E[x0 | condition], so an attribute whose per-class mean
mel spectrogram (or audio-VAE latent) barely differs gives the diffusion loss little to gain from knowing it,
whether text or image carries it. For each attribute this prints R² = between-class / total sum of squares
(`melfusion.evaluation.metrics.explained_variance`) and its no-effect expectation (k − 1)/(n − 1), on the
position-wise mel (time × band, as the UNet sees it), the time-averaged mel (spectral envelope) and, with
--model, the model's audio-VAE latent means. `key+mode` against `key` is what the mode adds once the key is
known; `mode` alone is what it gives when the key is random (the text never names it).

    .venv/bin/python benchmarks/attribute_variance.py --n 1000 [--n-mels 64 128] [--model DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from melfusion.audio.io import load_audio
from melfusion.audio.mel import MelConfig, mel_spectrogram
from melfusion.evaluation.metrics import explained_variance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_adherence import ROOT, read_rows  # noqa: E402

ATTRIBUTES: dict[str, Callable[[dict], object]] = {
    "tempo_class": lambda r: r["tempo_class"],
    "bpm (8-bpm bins)": lambda r: int(r["bpm"]) // 8,
    "mode": lambda r: r["mode"],
    "key": lambda r: r["key"],
    "key+mode": lambda r: (r["key"], r["mode"]),
    "family": lambda r: r["family"],
    "genre": lambda r: r["genre"],
    "energy": lambda r: r["energy"],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=ROOT / "runs" / "corpus", help="synthetic corpus folder")
    p.add_argument("--split", default="train", help="manifest split to read (default train)")
    p.add_argument("--n", type=int, default=1000, help="items (first n rows of the split)")
    p.add_argument("--n-mels", type=int, nargs="+", default=[64], help="mel band counts to compare")
    p.add_argument("--seconds", type=float, default=5.12, help="clip length read from each file's start")
    p.add_argument("--model", default=None, help="pipeline folder: also report on its audio-VAE latents")
    args = p.parse_args(argv)
    manifest = args.corpus / f"{args.split}.jsonl"
    rows = read_rows(manifest)[: args.n]
    base = MelConfig()
    samples = int(round(args.seconds * base.sample_rate))
    audio = []
    for r in tqdm(rows, desc="load audio"):
        a = torch.as_tensor(load_audio(args.corpus / r["audio"], base.sample_rate), dtype=torch.float32)
        a = a.flatten()[:samples]
        audio.append(torch.nn.functional.pad(a, (0, samples - a.numel())))
    wave = torch.stack(audio)  # (n, samples)

    views: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for n_mels in args.n_mels:
            mel = mel_spectrogram(wave, dataclasses.replace(base, n_mels=n_mels))  # (n, frames, n_mels)
            views[f"mel{n_mels}, time x band"] = mel.numpy()
            views[f"mel{n_mels}, time-averaged"] = mel.mean(1).numpy()
        if args.model:
            from melfusion.pipelines.melfusion import MeLFusionPipeline
            from melfusion.training.trainer import mel_config_for

            pipe = MeLFusionPipeline.from_pretrained(args.model, local_files_only=True)
            mel = mel_spectrogram(wave, mel_config_for(pipe)).unsqueeze(1).to(pipe.vae.dtype)
            latents = [pipe.vae.encode(chunk).latent_dist.mean for chunk in mel.split(64)]
            views["audio-VAE latent"] = torch.cat(latents).float().numpy()

    print(f"{len(rows)} items of {manifest}; R² (no-effect expectation in brackets)\n")
    print("| attribute | classes | " + " | ".join(views) + " |\n|---|---|" + "---|" * len(views))
    for name, label_of in ATTRIBUTES.items():
        labels = [label_of(r) for r in rows]
        res = [explained_variance(v, labels) for v in views.values()]
        cells = " | ".join(f"{x.r2:.4f} ({x.null:.4f})" for x in res)
        print(f"| {name} | {res[0].num_classes} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
