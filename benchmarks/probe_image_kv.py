"""Does the image side carry what the synapse should pass on? A ridge linear probe of mode and tempo class on
the image LDM's decoder self-attention K/V (mean-pooled over tokens, all layers) at the DDIM-inverted latent,
fit on synthetic-corpus train images and scored on held-out test images, at a few timesteps.

    .venv/bin/python benchmarks/probe_image_kv.py [--model DIR] [--corpus runs/corpus] [--train 300 --test 150]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from melfusion.guidance.preprocess import preprocess_image

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="pipeline folder (default: the embedded model)")
    p.add_argument("--corpus", type=Path, default=ROOT / "runs" / "corpus")
    p.add_argument("--train", type=int, default=300)
    p.add_argument("--test", type=int, default=150)
    p.add_argument("--timesteps", type=int, nargs="+", default=[100, 500, 900])
    p.add_argument("--steps", type=int, default=20, help="inversion steps")
    args = p.parse_args()
    if args.model:
        from melfusion.pipelines.melfusion import MeLFusionPipeline

        pipe = MeLFusionPipeline.from_pretrained(args.model, local_files_only=True)
    else:
        from melfusion.loading import load_embedded_pipeline

        pipe, _ = load_embedded_pipeline()

    def rows(split: str, n: int) -> list[dict]:
        return [json.loads(line) for line in (args.corpus / f"{split}.jsonl").read_text().splitlines()][:n]

    items = rows("train", args.train) + rows("test", args.test)
    n_train = min(args.train, len(items))
    size = pipe.image_resolution
    px = torch.cat([preprocess_image(args.corpus / r["image"], *size) for r in items])
    conditioner = pipe.image_conditioner("cpu")  # the features training and sampling use
    labels = {
        "mode": np.array([r["mode"] == "major" for r in items]),
        "tempo class": np.array([r["tempo_class"] == "fast" for r in items]),
    }
    with torch.no_grad():
        trajs = conditioner.invert(conditioner.encode(px), conditioner.inversion_grid(args.steps))
        print("| timestep | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels))
        for t in args.timesteps:
            tt = torch.full((len(items),), t)
            kv = conditioner.features_on(trajs, tt)  # per layer (K, V), each (B, N_l, C_l)
            feats = torch.cat([torch.cat([k.mean(1), v.mean(1)], -1) for k, v in kv], -1).double().numpy()
            mu, sd = feats[:n_train].mean(0), feats[:n_train].std(0) + 1e-6
            x = np.c_[(feats - mu) / sd, np.ones(len(items))]
            accs = []
            for y in labels.values():
                a = x[:n_train]
                w = np.linalg.solve(a.T @ a + 10.0 * np.eye(a.shape[1]), a.T @ (2.0 * y[:n_train] - 1.0))
                accs.append(float(((x[n_train:] @ w > 0) == y[n_train:]).mean()))
            print(f"| {t} | " + " | ".join(f"{a:.1%}" for a in accs) + " |")


if __name__ == "__main__":
    main()
