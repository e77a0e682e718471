"""Resume never unpickles: checkpoints are safetensors + JSON, pickles and old-format folders are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from melfusion_testing import TRAIN_BASE, write_triplets

from melfusion.errors import MelfusionInputError
from melfusion.training.config import load_config
from melfusion.training.loop import find_checkpoint
from melfusion.training.trainer import MeLFusionTrainer

COMMON = ["train.ema_decay=0.9", "optim.lr_unet=1e-3", "optim.lr_alpha=1e-2"]


class _Payload:
    """Unpickling this creates `marker` (open(marker, "w")): proof that a pickle ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _config(manifest, out, *extra):
    return load_config(
        None, [f"data.train_manifest={manifest}", f"train.output_dir={out}", *TRAIN_BASE, *extra]
    )


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_triplets(tmp_path_factory.mktemp("data"), n=4, seconds=0.8)


@pytest.fixture(scope="module")
def checkpoint(manifest, tmp_path_factory) -> Path:
    """A genuine step-1 checkpoint (EMA on), kept pristine: tests copy it."""
    out = tmp_path_factory.mktemp("run")
    trainer = MeLFusionTrainer(
        _config(manifest, out, "train.max_steps=1", "train.checkpoint_every=1", *COMMON)
    )
    trainer.train()
    return find_checkpoint(out, "latest")


@pytest.fixture(scope="module")
def resumer(manifest, tmp_path_factory) -> MeLFusionTrainer:
    out = tmp_path_factory.mktemp("resume")
    return MeLFusionTrainer(_config(manifest, out, "train.max_steps=2", *COMMON))


def _copy(checkpoint: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "checkpoints" / checkpoint.name
    shutil.copytree(checkpoint, dst)
    return dst


def test_checkpoint_holds_only_safetensors_and_json(checkpoint):
    names = sorted(p.name for p in checkpoint.iterdir())
    assert all(n.endswith((".safetensors", ".json")) for n in names), names
    assert {"model.safetensors", "ema.json", "ema.safetensors", "optimizer.json", "rng_0.json"} <= set(names)
    assert json.loads((checkpoint / "trainer_state.json").read_text())["checkpoint_format"] == 2


@pytest.mark.parametrize(
    "name", ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin", "extra.pt"]
)
def test_crafted_pickle_in_a_checkpoint_is_refused_and_never_run(checkpoint, resumer, tmp_path, name):
    ckpt = _copy(checkpoint, tmp_path)
    marker = tmp_path / "PWNED"
    torch.save({"state": _Payload(marker)}, ckpt / name)
    with pytest.raises(MelfusionInputError, match=name.replace(".", r"\.")) as err:
        resumer.load_checkpoint(ckpt)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_resume_latest_refuses_the_crafted_checkpoint_through_train(checkpoint, manifest, tmp_path):
    out = tmp_path / "run"
    ckpt = _copy(checkpoint, out)
    marker = tmp_path / "PWNED"
    torch.save({"shadow_params": _Payload(marker)}, ckpt / "custom_checkpoint_0.pkl")
    trainer = MeLFusionTrainer(_config(manifest, out, "train.max_steps=2", *COMMON))
    with pytest.raises(MelfusionInputError, match="custom_checkpoint_0.pkl"):
        trainer.train(resume="latest")
    assert not marker.exists() and trainer.global_step == 0


def test_old_pickle_format_checkpoint_is_refused_with_a_clear_message(resumer, tmp_path):
    """What the previous version wrote: accelerate save_state (pickled optimizer/RNG/EMA) + trainer_state."""
    ckpt = tmp_path / "checkpoints" / "step-0000001"
    resumer.accelerator.save_state(str(ckpt), safe_serialization=True)
    state = {"global_step": 1, "epoch": 0, "batches_in_epoch": 1, "num_skipped": 0, "num_processes": 1}
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(MelfusionInputError, match="older melfusion"):
        resumer.load_checkpoint(ckpt)


def _reshape_first_tensor(stem: Path) -> None:
    """Replace one tensor of a state file with one of another shape (a checkpoint of another model)."""
    from safetensors.torch import load_file, save_file

    file = stem.with_name(stem.name + ".safetensors")
    tensors = load_file(file)
    key = max(tensors, key=lambda k: tensors[k].ndim)
    tensors[key] = torch.zeros(3, 5)
    save_file(tensors, file)


@pytest.mark.parametrize(
    "tamper, match",
    [
        (lambda c: (c / "trainer_state.json").write_text("{not json"), "trainer_state.json is unreadable"),
        (lambda c: (c / "ema.json").unlink(), "no ema state"),
        (lambda c: (c / "optimizer.safetensors").write_bytes(b"junk"), "optimizer does not load"),
        (lambda c: (c / "model.safetensors").unlink(), "model.safetensors does not load"),
        (lambda c: _reshape_first_tensor(c / "ema"), "registered state does not load"),
        (lambda c: _reshape_first_tensor(c / "optimizer"), "optimizer does not load"),
        (
            lambda c: (c / "ema.json").write_text(
                json.dumps({"__ndarray__": [1], "dtype": "|O", "shape": [1]})
            ),
            "ema does not load",
        ),
    ],
)
def test_damaged_checkpoint_files_are_one_line_errors(checkpoint, resumer, tmp_path, tamper, match):
    ckpt = _copy(checkpoint, tmp_path)
    tamper(ckpt)
    with pytest.raises(MelfusionInputError, match=match) as err:
        resumer.load_checkpoint(ckpt)
    assert "\n" not in str(err.value)


def test_state_files_round_trip_what_json_alone_loses(tmp_path):
    import numpy as np

    from melfusion.training.loop import load_state_files, save_state_files

    state = {
        "tuple": (3, (1, 2), None),
        "ints": {0: {"step": torch.tensor(2.0), "exp": torch.arange(3.0)}},
        "floats": [float("inf"), float("-inf"), 0.5],
        "array": np.arange(6, dtype=np.uint32).reshape(2, 3),
        "shared": [torch.zeros(2)] * 2,
        "__odd": "key",
    }
    save_state_files(state, tmp_path / "s")
    back = load_state_files(tmp_path / "s")
    assert back["tuple"] == (3, (1, 2), None)
    assert torch.equal(back["ints"][0]["exp"], torch.arange(3.0)) and back["ints"][0]["step"].item() == 2.0
    assert back["floats"][:2] == [float("inf"), float("-inf")]
    assert back["array"].dtype == np.uint32 and back["array"].shape == (2, 3)
    assert back["__odd"] == "key" and len(back["shared"]) == 2


def test_resume_with_gradient_accumulation_matches_an_uninterrupted_run(manifest, tmp_path):
    """Exact with gradient accumulation too (optimiser moments, scheduler, EMA and RNG all restored)."""
    common = [*COMMON, "train.gradient_accumulation_steps=2", "train.checkpoint_every=1"]
    full = MeLFusionTrainer(_config(manifest, tmp_path / "full", "train.max_steps=2", *common))
    full.train()
    first = MeLFusionTrainer(_config(manifest, tmp_path / "split", "train.max_steps=1", *common))
    first.train()
    del first
    second = MeLFusionTrainer(_config(manifest, tmp_path / "split", "train.max_steps=2", *common))
    second.train(resume="latest")
    assert second.global_step == 2
    for (name, a), b in zip(full.pipe.unet.named_parameters(), second.pipe.unet.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), name
    for a, b in zip(full.ema.shadow_params, second.ema.shadow_params):
        assert torch.allclose(a, b, atol=1e-6)
