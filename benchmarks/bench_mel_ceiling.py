"""How much mode and tempo information survives the mel front end + Griffin-Lim, per number of mel bands.

The embedded model's audio stack (AudioLDM-S mel: 64 bands up to 8 kHz, then Griffin-Lim) bounds what any
generated clip can show. This applies the adherence probes (`melfusion.recipes.embedded.probes`) to held-out real
clips of the synthetic corpus and to the same clips after mel → Griffin-Lim, for each --n-mels, and prints
the accuracies side by side (one run). Each --vae DIR (a trained audio VAE folder) adds a row for mel → VAE
(posterior mode) → decode → Griffin-Lim, at the VAE's own band count (its ``sample_size``).

    .venv/bin/python benchmarks/bench_mel_ceiling.py --n 24 --n-mels 64 128
    .venv/bin/python benchmarks/bench_mel_ceiling.py --n 24 --n-mels 128 --vae runs/embedded/audio-vae-128/final
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from melfusion.audio.io import load_audio
from melfusion.audio.mel import MelConfig, mel_spectrogram, pad_frames_to_multiple
from melfusion.models.vocoder import GriffinLimVocoder
from melfusion.recipes.embedded.probes import estimate_mode, estimate_tempo, tempo_class

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_adherence import ROOT, read_rows, select_items  # noqa: E402


@torch.no_grad()
def vae_roundtrip(
    vae: AutoencoderKL, cfg: MelConfig, vocoder: GriffinLimVocoder, audio: np.ndarray
) -> np.ndarray:
    """(T,) audio → mel (frames padded to the VAE's multiple with the log floor) → posterior mode → decode →
    Griffin-Lim → (T,) audio."""
    mel = mel_spectrogram(torch.from_numpy(audio)[None], cfg)  # (1, F, n_mels)
    multiple = 2 ** (len(vae.config.block_out_channels) - 1)
    mel = pad_frames_to_multiple(mel, multiple).unsqueeze(1)  # (1, 1, F', n_mels)
    decoded = vae.decode(vae.encode(mel).latent_dist.mode()).sample  # (1, 1, F', n_mels)
    return vocoder(decoded[:, 0])[0, : len(audio)].numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=ROOT / "runs" / "corpus", help="synthetic corpus folder")
    p.add_argument("--n", type=int, default=24, help="test items (balanced over mode × tempo class)")
    p.add_argument("--n-mels", type=int, nargs="+", default=[64, 128], help="mel band counts to compare")
    p.add_argument(
        "--gl-iters", type=int, default=32, help="Griffin-Lim iterations (the shipped vocoder: 32)"
    )
    p.add_argument(
        "--vae", type=Path, action="append", default=[], help="a trained audio VAE folder (repeatable)"
    )
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.n < 1 or any(m < 8 for m in args.n_mels):
        p.error("--n must be >= 1 and every --n-mels >= 8")
    torch.set_num_threads(args.threads)
    items = select_items(read_rows(args.corpus / "test.jsonl"), args.n)
    configs = {m: MelConfig(n_mels=m) for m in args.n_mels}
    vocoders = {m: GriffinLimVocoder(**c.to_dict(), n_iter=args.gl_iters) for m, c in configs.items()}
    vaes = {}
    for folder in args.vae:
        if not (folder / "config.json").is_file():
            p.error(f"--vae {folder}: no config.json there; pass a trained audio VAE folder (its final/)")
        vae = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32).eval()
        n_mels = int(vae.config.sample_size)
        cfg = MelConfig(n_mels=n_mels)
        vaes[folder] = (vae, cfg, GriffinLimVocoder(**cfg.to_dict(), n_iter=args.gl_iters))
    hits: dict[str, dict[str, list[bool]]] = {}

    def score(name: str, audio: np.ndarray, sr: int, row: dict) -> None:
        mode = estimate_mode(audio, sr)[0]
        tempo = tempo_class(estimate_tempo(audio, sr))
        h = hits.setdefault(name, {"mode": [], "tempo_class": []})
        h["mode"].append(mode == row["mode"])
        h["tempo_class"].append(tempo == row["tempo_class"])

    for row in items:
        sr = configs[args.n_mels[0]].sample_rate
        real = load_audio(args.corpus / row["audio"], sr)
        score("real audio", real, sr, row)
        for m, cfg in configs.items():
            mel = mel_spectrogram(torch.from_numpy(real)[None], cfg)  # (1, frames, m)
            score(f"real → {m}-band mel → Griffin-Lim", vocoders[m](mel)[0].numpy(), sr, row)
        for folder, (vae, cfg, vocoder) in vaes.items():
            score(
                f"real → {cfg.n_mels}-band mel → VAE {folder} → Griffin-Lim",
                vae_roundtrip(vae, cfg, vocoder, real),
                sr,
                row,
            )
    print(f"{len(items)} test clips, Griffin-Lim {args.gl_iters} iterations\n")
    print("| audio | mode | tempo class |\n|---|---|---|")
    for name, h in hits.items():
        print(f"| {name} | {100 * np.mean(h['mode']):.1f}% | {100 * np.mean(h['tempo_class']):.1f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
