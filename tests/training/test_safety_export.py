"""`export` (and `melfusion train --export`) never deletes a folder it did not write, the run's own folder or
its inputs; re-exporting onto an earlier export still works."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from melfusion_testing import TRAIN_BASE, write_triplets

from melfusion.errors import MelfusionInputError
from melfusion.training.config import load_config
from melfusion.training.trainer import MeLFusionTrainer


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_triplets(tmp_path_factory.mktemp("data"), n=4, seconds=0.8)


def _melfusion(manifest, out, *extra) -> MeLFusionTrainer:
    return MeLFusionTrainer(
        load_config(
            None,
            [
                f"data.train_manifest={manifest}",
                f"train.output_dir={out}",
                *TRAIN_BASE,
                "train.max_steps=1",
                *extra,
            ],
        )
    )


def _component(manifest, out):
    from melfusion.recipes.embedded.components import ComponentTrainer, load_component_config

    return ComponentTrainer(
        load_component_config(
            None,
            [
                "model.component=image_vae",
                "model.block_out_channels=[8, 8]",
                "model.latent_channels=4",
                "model.image_size=16",
                f"data.train_manifest={manifest}",
                f"train.output_dir={out}",
                "train.batch_size=2",
                "train.max_steps=1",
                "train.checkpoint_every=0",
            ],
        )
    )


def _art2mus(manifest, out):
    from melfusion.training.art2mus import Art2MusTrainer

    return Art2MusTrainer(
        {
            "trainer": "art2mus",
            "data": {"train_manifest": str(manifest)},
            "train": {"output_dir": str(out), "max_steps": 1, "batch_size": 2, "report_to": "none"},
        }
    )


def _user_folder(path: Path) -> Path:
    (path / "notes").mkdir(parents=True)
    (path / "thesis.txt").write_text("years of work")
    (path / "notes" / "a.md").write_text("more")
    return path


def _files(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.parametrize(
    "make", [_melfusion, _component, _art2mus], ids=["melfusion", "component", "art2mus"]
)
def test_export_onto_a_folder_of_user_files_refuses_and_keeps_them(manifest, tmp_path, make):
    trainer = make(manifest, tmp_path / "run")
    user = _user_folder(tmp_path / "mine")
    before = _files(user)
    with pytest.raises(
        MelfusionInputError, match="non-empty folder that melfusion train did not export"
    ) as err:
        trainer.export(user)
    assert "\n" not in str(err.value)
    assert _files(user) == before and (user / "thesis.txt").read_text() == "years of work"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mine")]  # no temporary left behind


def test_export_onto_the_run_folder_or_around_it_refuses(manifest, tmp_path):
    out = tmp_path / "runs" / "run"
    trainer = _melfusion(manifest, out, "train.checkpoint_every=1")
    trainer.train()
    kept = _files(out)
    assert any(name.startswith("checkpoints/step-") for name in kept)
    for target in (out, out.parent, tmp_path, out / "checkpoints", out / "checkpoints" / "new", out / "."):
        with pytest.raises(MelfusionInputError, match="output folder|checkpoints folder"):
            trainer.export(target)
    assert _files(out) == kept


def test_re_export_onto_an_earlier_export_replaces_it(manifest, tmp_path):
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    trainer = _melfusion(manifest, tmp_path / "run")
    target = tmp_path / "exported"
    assert trainer.export(target) == target
    (target / "stale.txt").write_text("from the first export")
    (tmp_path / ".exported.dead.tmp").mkdir()  # a killed export's temporary
    trainer.export(target)
    assert not (target / "stale.txt").exists() and (target / "melfusion_export.json").is_file()
    MeLFusionPipeline.from_pretrained(target)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no .tmp / .old left
    # an export of an older version (no marker) at the run's default place is replaced too
    (tmp_path / "run" / "final").mkdir(parents=True)
    (tmp_path / "run" / "final" / "model_index.json").write_text("{}")
    trainer.export()
    assert (tmp_path / "run" / "final" / "melfusion_export.json").is_file()


def test_export_never_replaces_the_runs_input_model(manifest, tmp_path):
    base = _melfusion(manifest, tmp_path / "base").export(tmp_path / "models" / "base-model")
    trainer = _melfusion(manifest, tmp_path / "run", f"model.pretrained={base}")
    before = _files(base)
    with pytest.raises(MelfusionInputError, match="input"):
        trainer.export(base)
    with pytest.raises(MelfusionInputError, match="input"):
        trainer.export(tmp_path / "models")  # holds the input model
    assert _files(base) == before


def test_files_and_symlinks_are_refused(tmp_path):
    from melfusion.training.loop import check_export_target

    run = tmp_path / "run"
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(MelfusionInputError, match="is a file"):
        check_export_target(tmp_path / "a-file", run)
    real = _user_folder(tmp_path / "real")
    os.symlink(real, tmp_path / "link")
    with pytest.raises(MelfusionInputError, match="symbolic link"):
        check_export_target(tmp_path / "link", run)
    (tmp_path / "empty").mkdir()
    assert check_export_target(tmp_path / "empty", run) == tmp_path / "empty"
    assert check_export_target(tmp_path / "new" / "deep", run) == tmp_path / "new" / "deep"


def test_train_command_refuses_the_export_target_before_training(manifest, tmp_path, capsys):
    from melfusion.cli import main

    out = tmp_path / "run"
    user = _user_folder(tmp_path / "mine")
    before = _files(user)
    argv = ["train", f"data.train_manifest={manifest}", f"train.output_dir={out}", *TRAIN_BASE]
    assert main([*argv, "train.max_steps=1", "--export", str(user)]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "did not export" in line
    assert _files(user) == before
    assert not out.exists()  # refused before any training (no config.json, cache or checkpoint)
    assert main([*argv, "train.max_steps=1", "--export", str(out)]) == 2
    assert not out.exists()
