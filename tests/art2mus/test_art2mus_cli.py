"""`melfusion generate --model <an Art2Mus folder>`: the Art2Mus path of the command line."""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from melfusion.cli import main


@pytest.fixture
def art2mus_dir(tiny_art2mus, tmp_path):
    path = tmp_path / "a2m"
    tiny_art2mus.save_pretrained(path)
    return path


def _args(art2mus_dir, image_file, out, *extra):
    return ["generate", "--model", str(art2mus_dir), "--image", str(image_file), "--text", "a calm piano piece",
            "--out", str(out), "--steps", "2", "--seconds", "0.32", "--seed", "3", *extra]  # fmt: skip


def test_generate_with_an_art2mus_folder_writes_a_clip_and_its_parameters(art2mus_dir, image_file, tmp_path):
    out = tmp_path / "a.wav"
    assert main(_args(art2mus_dir, image_file, out)) == 0
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["mode"] == "image+text" and info["seed"] == 3 and info["guidance_scale"] == 3.5
    assert info["model"] == str(art2mus_dir.resolve())
    assert sf.info(out).duration == pytest.approx(0.32, abs=0.02)
    again = tmp_path / "b.wav"
    assert main(_args(art2mus_dir, image_file, again)) == 0
    assert (sf.read(out)[0] == sf.read(again)[0]).all()  # the seed reproduces the clip


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--image-guidance", "3"], "--image-guidance applies to MeLFusion models"),
        (["--capture", "reverse"], "--capture applies to MeLFusion models"),
    ],
)
def test_melfusion_only_options_are_refused_for_art2mus(
    art2mus_dir, image_file, tmp_path, capsys, extra, message
):
    assert main(_args(art2mus_dir, image_file, tmp_path / "a.wav", *extra)) == 2
    assert message in capsys.readouterr().err


def test_a_plain_audioldm2_folder_is_refused_with_the_way_forward(tmp_path, image_file, capsys):
    folder = tmp_path / "aldm2"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "AudioLDM2Pipeline"}))
    assert main(_args(folder, image_file, tmp_path / "a.wav")) == 2
    assert "train Art2Mus on it first" in capsys.readouterr().err


def test_art2mus_options_are_refused_before_any_model_loads(
    art2mus_dir, image_file, tmp_path, capsys, monkeypatch
):
    import melfusion.commands.generate as generate

    monkeypatch.setattr(generate, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    assert (
        main(
            _args(art2mus_dir, image_file, tmp_path / "a.wav", "--image-steps", "5", "--window-overlap", "1")
        )
        == 2
    )
    assert "--image-steps, --window-overlap apply to MeLFusion models" in capsys.readouterr().err
    argv = ["generate", "--model", str(art2mus_dir), "--image-dir", str(image_file.parent), "--text", "x",
            "--out-dir", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2 and "batch mode" in capsys.readouterr().err
