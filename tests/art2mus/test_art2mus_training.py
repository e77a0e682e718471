"""Art2Mus projection training: only the projection moves, the loss falls, checkpoints resume, configs load."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from melfusion_testing import write_triplets

from melfusion.errors import MelfusionInputError
from melfusion.training.art2mus import (
    Art2MusConfig,
    Art2MusTrainer,
    is_art2mus_config,
    load_art2mus_config,
    run_art2mus,
)
from melfusion.training.loop import find_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _config(manifest: Path, out: Path, **train) -> dict:
    return {
        "trainer": "art2mus",
        "data": {"train_manifest": str(manifest), "random_crop": False},
        "optim": {"lr": 3e-3, "warmup_steps": 0},
        "train": {
            "output_dir": str(out),
            "max_steps": 30,
            "batch_size": 4,
            "gradient_accumulation_steps": 1,
            "checkpoint_every": 0,
            "report_to": "none",
            "log_every": 1000,
            **train,
        },
    }


@pytest.fixture
def manifest(tmp_path) -> Path:
    return write_triplets(tmp_path / "data", n=4, seconds=1.0)


def _snapshot(trainer) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{k}": v.detach().clone()
        for name, module in trainer.pipe.components.items()
        if isinstance(module, torch.nn.Module)
        for k, v in module.state_dict().items()
    }


def test_only_the_projection_changes_and_the_loss_falls(manifest, tmp_path):
    trainer = Art2MusTrainer(_config(manifest, tmp_path / "run"))
    assert {id(p) for g in trainer.optimizer.param_groups for p in g["params"]} == {
        id(p) for p in trainer.pipe.image_projection.parameters()
    }
    assert trainer.config.train.min_snr_gamma == 5.0 and trainer.config.optim.max_grad_norm == 1.0
    before = _snapshot(trainer)
    loss_before = trainer.validation_loss(trainer.train_set)  # fixed noise and timesteps
    history = trainer.train()
    assert len(history) == 30 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    after = _snapshot(trainer)
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"image_projection"}
    loss_after = trainer.validation_loss(trainer.train_set)
    assert loss_after < loss_before
    # the trained projection beats random ones of the same scale on this tiny training set
    trained = {k: v.clone() for k, v in trainer.pipe.image_projection.state_dict().items()}
    random_losses = []
    for seed in range(3):
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in trainer.pipe.image_projection.parameters():
                p.copy_(torch.randn_like(p) * 0.3)
        random_losses.append(trainer.validation_loss(trainer.train_set))
    trainer.pipe.image_projection.load_state_dict(trained)
    assert loss_after < min(random_losses)


def test_checkpoint_resume_and_export(manifest, tmp_path):
    from melfusion.pipelines.art2mus import Art2MusPipeline

    cfg = _config(manifest, tmp_path / "run", max_steps=4, checkpoint_every=2, keep_checkpoints=1)
    trainer = Art2MusTrainer(cfg)
    trainer.train()
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step-0000004"]  # step-2 pruned, no temporary folder left
    weights = {k: v.clone() for k, v in trainer.pipe.image_projection.state_dict().items()}

    assert find_checkpoint(tmp_path / "run", "latest").name == "step-0000004"
    cfg["train"]["max_steps"] = 6
    resumed = Art2MusTrainer(cfg)
    resumed.load_checkpoint(tmp_path / "run" / "checkpoints" / "step-0000004")
    assert resumed.global_step == 4
    for k, v in resumed.pipe.image_projection.state_dict().items():
        torch.testing.assert_close(v, weights[k])
    history = resumed.train()
    assert [h["step"] for h in history] == [5, 6]

    path = resumed.export(tmp_path / "export")
    loaded = Art2MusPipeline.from_pretrained(path)
    for k, v in loaded.image_projection.state_dict().items():
        torch.testing.assert_close(v, resumed.pipe.image_projection.state_dict()[k])


def test_image_and_text_condition_trains_too(manifest, tmp_path):
    cfg = _config(manifest, tmp_path / "run", max_steps=2)
    cfg["model"] = {"condition": "image+text", "num_image_tokens": 4}
    trainer = Art2MusTrainer(cfg)
    assert trainer.pipe.image_projection.config.num_tokens == 4
    assert len(trainer.train()) == 2


def test_shipped_configs_load_and_dispatch_marker(tmp_path):
    for name in ("art2mus.yaml", "art2mus-4.yaml", "art2mus-tiny.yaml"):
        path = CONFIGS / name
        assert is_art2mus_config(path)
        cfg = load_art2mus_config(path, ["data.train_manifest=x.jsonl", "model.pretrained=/some/audioldm2"])
        cfg.validate()
        assert cfg.optim.lr > 0 and cfg.train.min_snr_gamma == 5.0
    assert load_art2mus_config(CONFIGS / "art2mus.yaml").optim.lr == 2e-5
    assert load_art2mus_config(CONFIGS / "art2mus-4.yaml").model.num_image_tokens == 4
    assert not is_art2mus_config(CONFIGS / "melfusion-tiny.yaml")
    assert not is_art2mus_config(tmp_path / "missing.yaml")


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(MelfusionInputError, match="train_manifest"):
        Art2MusConfig().validate()
    with pytest.raises(MelfusionInputError, match="has no setting 'lr_unet'"):
        Art2MusConfig.from_dict({"optim": {"lr_unet": 1e-4}})
    with pytest.raises(MelfusionInputError, match="must be a number"):
        load_art2mus_config(None, ["optim.lr=fast"])
    with pytest.raises(MelfusionInputError, match="needs model.pretrained"):
        load_art2mus_config(None, ["data.train_manifest=x", "model.image_encoder=imagebind"]).validate()
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: art2mus\nmodel:\n  condition: music\ndata:\n  train_manifest: x.jsonl\n")
    with pytest.raises(MelfusionInputError, match="model.condition"):
        load_art2mus_config(bad).validate()


def test_train_command_entry_point(manifest, tmp_path, capsys):
    """What `melfusion train --config configs/art2mus-tiny.yaml ...` runs once commands/train.py dispatches."""
    args = argparse.Namespace(
        config=str(CONFIGS / "art2mus-tiny.yaml"),
        overrides=[
            f"data.train_manifest={manifest}",
            f"train.output_dir={tmp_path / 'cli'}",
            "train.max_steps=2",
            "train.checkpoint_every=0",
        ],
        resume=None,
        export=str(tmp_path / "cli-export"),
        no_export=False,
    )
    assert run_art2mus(args) == 0
    assert "exported Art2Mus pipeline" in capsys.readouterr().out
    assert (tmp_path / "cli-export" / "model_index.json").is_file()
