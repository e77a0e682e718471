"""`melfusion weights` and evaluate's one message for every missing embedder weight file."""

from __future__ import annotations

import pytest
import torch

from melfusion.cli import main
from melfusion.evaluation.embedders import MissingWeightsError
from melfusion.evaluation.embedders.weights import check_weights, weight_status


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("MELFUSION_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "w"
    weights.mkdir()
    return weights


def test_status_finds_files_and_hub_folders_in_the_weights_dir(isolated):
    assert not weight_status("vggish", isolated).ok
    (isolated / "vggish-10086976.pth").write_bytes(b"x")
    assert weight_status("vggish", isolated).found == str(isolated / "vggish-10086976.pth")
    (isolated / "clip-vit-base-patch32").mkdir()
    (isolated / "clip-vit-base-patch32" / "config.json").write_text("{}")
    assert weight_status("clip", isolated).ok
    assert not weight_status("clap", isolated).ok
    assert "clap-htsat-unfused" in weight_status("clap", isolated).instruction()


def test_check_weights_lists_every_missing_file_in_one_line(isolated):
    (isolated / "vggish-10086976.pth").write_bytes(b"x")
    check_weights(["vggish"], isolated)  # all here: no error
    with pytest.raises(MissingWeightsError) as info:
        check_weights(["vggish", "panns", "clap", "clip"], isolated)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("3 of the 4 embedders")
    for part in (
        "Cnn14_16k_mAP=0.438.pth",
        "zenodo.org",
        "laion/clap-htsat-unfused",
        "openai/clip-vit-base-patch32",
    ):
        assert part in msg
    assert "vggish-10086976.pth" not in msg and str(isolated) in msg


def test_evaluate_names_all_missing_weights_before_any_work(dataset, isolated, tmp_path, capsys):
    argv = ["evaluate", "--generated", str(dataset["good"]), "--reference", str(dataset["ref"]), "--offline",
            "--out", str(tmp_path / "o"), "--no-cache", "--metrics", "fad", "fd", "--weights-dir", str(isolated)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "vggish-10086976.pth" in err and "Cnn14_16k_mAP=0.438.pth" in err
    assert not (tmp_path / "o").exists()


def test_weights_command_lists_each_embedder(isolated, capsys):
    (isolated / "Cnn14_16k_mAP=0.438.pth").write_bytes(b"x")
    assert main(["weights", "--weights-dir", str(isolated)]) == 0
    out = capsys.readouterr().out
    assert f"PANNs Cnn14 (16 kHz) [fd, kl, isc]: found: {isolated / 'Cnn14_16k_mAP=0.438.pth'}" in out
    assert "VGGish [fad, fad_inf]: MISSING" in out and "looked in:" in out and "ImageBind" in out
    assert out.strip().endswith("1 of 5 embedders have their weights here")
    assert main(["weights", "--weights-dir", str(isolated), "--check"]) == 1
