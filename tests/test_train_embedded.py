"""The one reproduction command of the embedded model, run for a few steps of every stage."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_reproduction_command_runs_every_stage_and_resumes(tmp_path):
    env = {
        **os.environ,
        "RUNS": str(tmp_path / "runs"),
        "N_ITEMS": "40",
        "QUICK": "1",
        "DEST": str(tmp_path / "packed"),
        "OMP_NUM_THREADS": "2",
        "BALANCE_WITHIN": "[]",  # 40 items leave no (genre, instrument) with every mood: balance globally
    }
    cmd = ["bash", str(ROOT / "scripts" / "train_embedded.sh")]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    stages = (
        "audio-vae",
        "image-vae",
        "image-ldm",
        "music",
        "synapse",
        "synapse-fixed-t",
        "synapse-projection",
        "audio-vae-128",
        "music-128",
        "music-128-balanced",
        "music-128-balanced-2",
    )
    assert first.stdout.count("balanced epochs: ") == 2  # the two stage-6 runs alone draw balanced epochs
    balanced_stages = first.stdout.split("== music-128-balanced")[1:]
    assert len(balanced_stages) == 2
    for out in balanced_stages:  # both reuse music-128's features
        assert "music-128/cache: 0 items computed" in out
    for stage in stages:
        assert (tmp_path / "runs" / "embedded" / stage / "final").is_dir(), stage
        assert list((tmp_path / "runs" / "embedded" / stage / "checkpoints").glob("step-*")), stage
    from melfusion.data.manifest import read_manifest
    from melfusion.loading import load_pipeline_folder

    pipe = load_pipeline_folder(tmp_path / "packed")
    assert pipe.unet.config.in_channels == pipe.vae.config.latent_channels
    assert pipe.synapse.config.image_timestep == 200 and pipe.synapse.config.image_projection
    assert pipe.config.default_image_guidance_scale == 14.0
    assert pipe.vae.config.sample_size == 128 and pipe.vocoder.config.n_mels == 128  # the 128-band stage
    keys = {r.extra["key"] for r in read_manifest(tmp_path / "runs" / "corpus-c" / "all.jsonl")}
    assert keys == {"C"}, keys  # stage 5's corpus: every key on C
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count(": done (") == len(stages)  # finished stages are skipped on a rerun
