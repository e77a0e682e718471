"""Helpers shared by tests (importable because pyproject sets pytest pythonpath = tests)."""

from __future__ import annotations

import numpy as np
from PIL import Image

# Tiny trainer runs: the overrides every trainer test starts from
TRAIN_BASE = [
    "train.batch_size=2",
    "model.tiny_pretrained_text_encoder=false",
    "model.tiny_audio_seconds=0.64",
    "model.tiny_image_size=16",
    "train.inversion_steps=8",
    "train.report_to=none",
    "train.checkpoint_every=0",
    "train.validate_every=0",
    "train.log_every=1000",
]


def tiny_image_unet(seed: int = 0, damp: float = 1.0):
    """A small SD-layout image UNet (4 decoder self-attention layers, widths 32); ``damp`` scales its output
    layer, which makes the random ε_ψ smoother, closer to a trained one."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=4,
        cross_attention_dim=12,
    ).eval()
    with torch.no_grad():
        unet.conv_out.weight.mul_(damp)
        unet.conv_out.bias.mul_(damp)
    return unet


def make_image(seed: int = 0, size: tuple[int, int] = (48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    return Image.fromarray(arr)


def write_triplets(root, n: int = 4, seconds: float = 1.5, sample_rate: int = 16000, seed: int = 0):
    """n ⟨image, text, audio⟩ triplets (sine chords, random-colour PNGs) and a JSONL manifest; returns its path."""
    import json

    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rows = []
    for i in range(n):
        freq = 220.0 * 2 ** (i / 4)
        wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(2 * np.pi * 2 * freq * t)
        wave += 0.01 * rng.standard_normal(t.shape)
        sf.write(root / f"clip{i}.wav", wave.astype(np.float32), sample_rate)
        make_image(seed + i, (40, 40)).save(root / f"img{i}.png")
        rows.append(
            {
                "id": f"item{i}",
                "image": f"img{i}.png",
                "audio": f"clip{i}.wav",
                "text": f"a {['calm', 'fast', 'sad', 'happy'][i % 4]} tune number {i}",
            }
        )
    manifest = root / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest
