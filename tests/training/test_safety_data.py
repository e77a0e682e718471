"""Training refuses a corpus with nothing to learn (every item unreadable or silent) instead of looping on it
or exporting a model, and warns once, with counts, about silent and short clips it does use."""

from __future__ import annotations

import contextlib
import logging
import signal

import numpy as np
import pytest
import soundfile as sf
from melfusion_testing import TRAIN_BASE, write_triplets

from melfusion.cli import main
from melfusion.errors import MelfusionInputError
from melfusion.training.config import load_config
from melfusion.training.trainer import MeLFusionTrainer


class _Overtime(BaseException):
    """Not an OSError/Exception: the loaders' per-item error handling must not swallow it."""


@contextlib.contextmanager
def _deadline(seconds: int):
    """Fail instead of hanging (the old loop spun forever on an all-unreadable corpus)."""

    def _raise(*_):
        raise _Overtime(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _argv(manifest, out, *extra):
    return ["train", f"data.train_manifest={manifest}", f"train.output_dir={out}", *TRAIN_BASE, *extra]


def _config(manifest, out, *extra):
    return load_config(None, _argv(manifest, out, *extra)[1:])


def test_all_unreadable_corpus_is_refused_not_looped_on(tmp_path, capsys):
    manifest = write_triplets(tmp_path / "data", n=4, seconds=0.8)
    for clip in (tmp_path / "data").glob("*.wav"):
        clip.write_bytes(b"not audio at all" * 10)  # non-empty: passes the dataset's stat check
    out = tmp_path / "run"
    with _deadline(120):
        code = main(_argv(manifest, out, "train.max_steps=2", "train.use_cache=false"))
    assert code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "melfusion train: error:" in line]
    assert "nothing to train on" in line and "4 could not be read" in line
    assert not (out / "final").exists()


def test_all_silent_corpus_with_check_off_is_refused_and_nothing_exported(tmp_path, capsys):
    manifest = write_triplets(tmp_path / "data", n=4, seconds=0.8)
    for clip in (tmp_path / "data").glob("*.wav"):
        sf.write(clip, np.zeros(12800, dtype=np.float32), 16000)
    out = tmp_path / "run"
    with _deadline(120):
        code = main(_argv(manifest, out, "train.max_steps=1", "data.check=false", "train.use_cache=false"))
    assert code == 2
    assert "0 could not be read and 2 are silent" in capsys.readouterr().err  # the 2 items of its one step
    assert not (out / "final").exists()


def test_silent_and_short_clips_in_use_are_reported_once_with_counts(tmp_path, caplog):
    manifest = write_triplets(tmp_path / "data", n=4, seconds=0.8)
    sf.write(tmp_path / "data" / "clip0.wav", np.zeros(12800, dtype=np.float32), 16000)
    sf.write(tmp_path / "data" / "clip1.wav", np.full(12800, 0.2, dtype=np.float32), 16000)  # DC only
    t = np.arange(4000) / 16000
    sf.write(tmp_path / "data" / "clip2.wav", (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16000)
    trainer = MeLFusionTrainer(
        _config(manifest, tmp_path / "run", "train.max_steps=4", "train.use_cache=false")
    )
    with caplog.at_level(logging.WARNING, logger="melfusion.training.loop"):
        trainer.train()  # 2 epochs of 2 batches
    notes = [r.getMessage() for r in caplog.records if "training data" in r.getMessage()]
    assert len(notes) == 1, notes
    assert (
        "of 4 item(s) read, 2 are silent" in notes[0] and "1 are shorter than the training window" in notes[0]
    )
    assert trainer.global_step == 4


def test_component_trainer_refuses_an_all_silent_audio_corpus(tmp_path):
    from melfusion.recipes.embedded.components import ComponentTrainer, load_component_config

    manifest = write_triplets(tmp_path / "data", n=3, seconds=1.5)
    for clip in (tmp_path / "data").glob("*.wav"):
        sf.write(clip, np.zeros(24000, dtype=np.float32), 16000)
    config = load_component_config(
        None,
        [
            "model.component=audio_vae",
            "model.block_out_channels=[8, 16]",
            "model.latent_channels=4",
            "model.audio_seconds=1.28",
            f"data.train_manifest={manifest}",
            f"train.output_dir={tmp_path / 'run'}",
        ],
    )
    with pytest.raises(MelfusionInputError, match="no usable item .*3 silent"):
        ComponentTrainer(config)
