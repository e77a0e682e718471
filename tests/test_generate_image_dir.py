"""`melfusion generate --image-dir`: one clip per image of a folder, resumable; and long clips from the CLI."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
from melfusion_testing import make_image

from melfusion.cli import main
from melfusion.data.manifest import read_image_dir, read_prompts_file
from melfusion.errors import MelfusionInputError


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(("b.png", "a.jpg", "c.webp")):
        make_image(i).convert("RGB").save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _args(image_dir, out, model_dir, *extra):
    return ["generate", "--image-dir", str(image_dir), "--out-dir", str(out), "--model", str(model_dir),
            "--steps", "2", "--seconds", "0.5", *extra]  # fmt: skip


def test_image_dir_makes_one_clip_per_image_and_resumes(image_dir, model_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    prompts = tmp_path / "prompts.tsv"
    prompts.write_text("# per-image prompts\nc.webp\ta bright march on brass\n")
    assert main(_args(image_dir, out, model_dir, "--text", "calm piano", "--prompts", str(prompts))) == 0
    assert sorted(p.name for p in out.glob("*.wav")) == ["a.wav", "b.wav", "c.wav"]
    infos = {p.stem: json.loads(p.with_suffix(".json").read_text()) for p in out.glob("*.wav")}
    assert infos["c"]["prompt"] == ["a bright march on brass"] and infos["a"]["prompt"] == ["calm piano"]
    assert {i["seed"] for i in infos.values()} == {0}  # every image uses --seed
    assert infos["b"]["image"] == str((image_dir / "b.png").resolve())
    assert infos["b"]["command"] == "melfusion generate --image-dir"
    assert sf.info(out / "a.wav").duration == pytest.approx(0.5, abs=1e-3)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")}
    capsys.readouterr()
    assert main(_args(image_dir, out, model_dir, "--text", "calm piano", "--prompts", str(prompts))) == 0
    assert "3 were already there" in capsys.readouterr().out
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")}
    # other settings in the same folder stop the run before anything is made
    assert main(_args(image_dir, out, model_dir, "--text", "loud rock")) == 2
    assert "made with other settings" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra,message",
    [
        ([], "needs --text"),
        (["--text", "x", "--image", "y.png"], "replaces --image"),
        (["--text", "x", "--num-samples", "2"], "one clip per image"),
        (["--text", "x", "--manifest", "m.jsonl"], "one of --manifest and --image-dir"),
        (["--text", "x", "--window-overlap", "-1"], "--window-overlap must be > 0"),
    ],
)
def test_image_dir_flags_are_checked(image_dir, model_dir, tmp_path, capsys, extra, message):
    assert main(_args(image_dir, tmp_path / "gen", model_dir, *extra)) == 2
    assert message in capsys.readouterr().err


def test_image_dir_reader_errors_name_the_problem(image_dir, tmp_path):
    records = read_image_dir(image_dir, "calm")
    assert [r.id for r in records] == ["a", "b", "c"] and all(r.audio is None for r in records)
    with pytest.raises(MelfusionInputError, match="have no prompt, e.g. 'a.jpg'"):
        read_image_dir(image_dir, None, {"b.png": "x", "c.webp": "y"})
    with pytest.raises(MelfusionInputError, match="not in"):
        read_image_dir(image_dir, "calm", {"zzz.png": "x"})
    with pytest.raises(MelfusionInputError, match="no image in"):
        read_image_dir(tmp_path, "calm")  # only a sub-folder in it
    bad = tmp_path / "bad.tsv"
    bad.write_text("a.jpg only a name\n")
    with pytest.raises(MelfusionInputError, match="bad.tsv:1: expected"):
        read_prompts_file(bad)
    good = tmp_path / "p.json"
    good.write_text(json.dumps({"a.jpg": " calm "}))
    assert read_prompts_file(good) == {"a.jpg": "calm"}


def test_clashing_stems_keep_the_file_name(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    make_image(0).save(folder / "x.png")
    make_image(1).convert("RGB").save(folder / "x.jpg")
    assert [r.id for r in read_image_dir(folder, "calm")] == ["x.jpg", "x.png"]


def test_long_clip_from_the_cli_records_its_windows(model_dir, tmp_path, image_file):
    out = tmp_path / "long.wav"
    args = ["generate", "--image", str(image_file), "--text", "calm", "--out", str(out), "--model",
            str(model_dir), "--steps", "2", "--seconds", "2.5", "--window-overlap", "0.16"]  # fmt: skip
    assert main(args) == 0
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["windows"] > 1 and info["window_overlap_s"] == pytest.approx(0.16)
    assert sf.info(out).duration == pytest.approx(2.5, abs=1e-3)
    assert main([*args[:-1], "0.64", "--out", str(tmp_path / "x.wav")]) == 2  # the tiny model's window
