from __future__ import annotations

import json
import subprocess
import sys

import pytest
import soundfile as sf
from melfusion_testing import make_image

from melfusion.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_components_factory):
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    path = tmp_path_factory.mktemp("models") / "tiny"
    MeLFusionPipeline(**tiny_components_factory(audio_seconds=1.28, image_size=32)).save_pretrained(path)
    return path


def test_generate_writes_audio_and_sidecar(model_dir, image_file, tmp_path, capsys):
    out = tmp_path / "song.wav"
    code = main(
        [
            "generate",
            "--image",
            str(image_file),
            "--text",
            "calm piano",
            "--out",
            str(out),
            "--steps",
            "3",
            "--seconds",
            "0.75",
            "--seed",
            "7",
            "--model",
            str(model_dir),
            "--num-samples",
            "2",
            "--scheduler",
            "ddpm",
        ]
    )
    assert code == 0
    for i in range(2):
        audio, sr = sf.read(tmp_path / f"song_{i}.wav")
        assert sr == 16000 and audio.shape == (12000,)
        meta = json.loads((tmp_path / f"song_{i}.json").read_text())
        assert meta["seed"] == 7 and meta["num_inference_steps"] == 3 and meta["guidance_scale"] == 7.0
        assert meta["model"] == str(model_dir.resolve()) and meta["sample_index"] == i
        assert meta["scheduler"] == "DDPMScheduler" and len(meta["image_file_sha256"]) == 64
    assert "wrote" in capsys.readouterr().out


def test_same_seed_same_file(model_dir, image_file, tmp_path):
    args = [
        "generate",
        "--image",
        str(image_file),
        "--text",
        "calm",
        "--steps",
        "2",
        "--seconds",
        "0.5",
        "--seed",
        "3",
        "--model",
        str(model_dir),
    ]
    main([*args, "--out", str(tmp_path / "a.flac")])
    main([*args, "--out", str(tmp_path / "b.flac")])
    assert (tmp_path / "a.flac").read_bytes() == (tmp_path / "b.flac").read_bytes()


def test_default_model_runs_offline(image_file, tmp_path):
    out = tmp_path / "default.wav"
    assert (
        main(
            [
                "generate",
                "--image",
                str(image_file),
                "--text",
                "calm",
                "--out",
                str(out),
                "--steps",
                "2",
                "--seconds",
                "1",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    audio, sr = sf.read(out)
    assert sr == 16000 and audio.shape == (16000,) and abs(audio).max() > 0
    assert json.loads(out.with_suffix(".json").read_text())["model"].startswith("embedded:melfusion-tiny")


def test_image_guidance_default_off_and_explicit(tiny_components_factory, image_file, tmp_path):
    """No flag: the model's default_image_guidance_scale; 'off': two-branch CFG; a number: that scale."""
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    model = tmp_path / "tuned"
    pipe = MeLFusionPipeline(**tiny_components_factory(audio_seconds=1.28, image_size=32))
    pipe.synapse.set_alphas(0.15)  # α = 0 would make every variant the text-only run
    pipe.register_to_config(default_image_guidance_scale=2.5)
    pipe.save_pretrained(model)
    base = ["generate", "--image", str(image_file), "--text", "calm", "--steps", "2", "--seconds", "0.5"]
    base += ["--seed", "1", "--model", str(model)]
    recorded = {}
    for name, extra in (
        ("default", []),
        ("off", ["--image-guidance", "off"]),
        ("three", ["--image-guidance", "3"]),
    ):
        assert main([*base, *extra, "--out", str(tmp_path / f"{name}.wav")]) == 0
        recorded[name] = json.loads((tmp_path / f"{name}.json").read_text())["image_guidance_scale"]
    assert recorded == {"default": 2.5, "off": None, "three": 3.0}
    assert (tmp_path / "default.wav").read_bytes() != (tmp_path / "off.wav").read_bytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--image": "missing.png"}, "image not found"),
        ({"--image": "NOTIMAGE"}, "not an image file"),
        ({"--image": "DIR"}, "is a directory"),
        ({"--text": "  "}, "prompt is empty"),
        ({"--seconds": "0"}, "--seconds must be"),
        ({"--seconds": "nan"}, "--seconds must be"),
        ({"--steps": "0"}, "--steps must be"),
        ({"--out": "x.aiff"}, "must end in .wav, .flac, .mp3 or .ogg"),
        ({"--model": "DIR"}, "not a melfusion model folder"),
        ({"--model": "nowhere"}, "model folder not found"),
        ({"--num-samples": "0"}, "--num-samples"),
        ({"--image-guidance": "-1"}, "--image-guidance must be >= 0"),
    ],
)
def test_bad_input_is_one_line_exit_2(change, message, image_file, tmp_path, capsys):
    notimage = tmp_path / "notes.png"
    notimage.write_text("hello")
    values = {"--image": str(image_file), "--text": "calm", "--out": str(tmp_path / "o.wav")}
    for k, v in change.items():
        values[k] = {"NOTIMAGE": str(notimage), "DIR": str(tmp_path)}.get(v, v)
    argv = ["generate"] + [x for kv in values.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o.wav").exists()


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "melfusion.cli",
            "generate",
            "--image",
            str(tmp_path / "none.png"),
            "--text",
            "x",
            "--out",
            str(tmp_path / "o.wav"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "image not found" in proc.stderr


def test_huge_image_refused(tmp_path, monkeypatch, capsys):
    big = tmp_path / "big.png"
    make_image(size=(400, 300)).save(big)
    monkeypatch.setattr("melfusion.guidance.preprocess.MAX_IMAGE_PIXELS", 100_000)
    assert main(["generate", "--image", str(big), "--text", "x", "--out", str(tmp_path / "o.wav")]) == 2
    assert "image too large" in capsys.readouterr().err
