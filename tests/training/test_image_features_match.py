"""Alg. 1 line 7 and Alg. 2 read the same features: the trainer and the pipeline share one image conditioner."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler
from melfusion_testing import TRAIN_BASE, write_triplets

from melfusion.guidance.preprocess import preprocess_image
from melfusion.training.config import load_config
from melfusion.training.trainer import MeLFusionTrainer

BASE = [*TRAIN_BASE, "train.inversion_steps=10", "train.use_cache=false"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_triplets(tmp_path_factory.mktemp("data"), n=2, seconds=0.8)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("image_timestep", [None, 300])
def test_training_features_equal_sampling_features(manifest, tmp_path, prediction_type, image_timestep):
    """For the same image and timestep the trainer's K^I/V^I equal what the pipeline feeds at that music step
    (float64, so the comparison is of definitions, not of batched-matmul rounding)."""
    extra = [] if image_timestep is None else [f"model.synapse_image_timestep={image_timestep}"]
    overrides = [f"data.train_manifest={manifest}", f"train.output_dir={tmp_path}", *BASE, *extra]
    trainer = MeLFusionTrainer(load_config(None, overrides))
    pipe = trainer.pipe
    pipe.image_scheduler = DDIMScheduler.from_config(
        pipe.image_scheduler.config, prediction_type=prediction_type
    )
    pipe.image_unet.double()
    pipe.image_vae.double()
    trainer.conditioner = pipe.image_conditioner("cpu")  # as the trainer builds it, on the new image LDM
    if image_timestep is not None:
        assert pipe.synapse.config.image_inversion_grid == trainer.image_grid.tolist()  # recorded for inference

    record = trainer.train_set.records[0]
    pixels = trainer.train_set[0]["pixel_values"]
    assert torch.equal(preprocess_image(record.images[0], *pipe.image_resolution)[0], pixels)
    pipe.scheduler.set_timesteps(10)
    timesteps = pipe.scheduler.timesteps
    guidance = pipe.visual_guidance(record.images[0], timesteps=timesteps, progress=False)
    for t in timesteps.tolist():
        train_kv = trainer.image_features(pixels[None], torch.tensor([t]))
        sample_t = int(pipe.synapse.image_timestep_for(torch.tensor(t)))
        sample_kv = guidance.at(sample_t)
        assert guidance.timesteps[guidance.index_for(sample_t)] == sample_t  # an exact, not a nearest, match
        assert len(train_kv) == len(sample_kv) == pipe.synapse.num_layers
        for (k_train, v_train), (k_sample, v_sample) in zip(train_kv, sample_kv):
            assert k_train.dtype == torch.float64
            torch.testing.assert_close(k_train, k_sample, rtol=0, atol=1e-6)
            torch.testing.assert_close(v_train, v_sample, rtol=0, atol=1e-6)


def test_trainer_grid_follows_the_music_schedulers_spacing(manifest, tmp_path):
    overrides = [f"data.train_manifest={manifest}", f"train.output_dir={tmp_path}", *BASE]
    trainer = MeLFusionTrainer(load_config(None, overrides))
    trainer.pipe.scheduler.set_timesteps(10)
    assert trainer.image_grid.tolist() == sorted(trainer.pipe.scheduler.timesteps.tolist())
