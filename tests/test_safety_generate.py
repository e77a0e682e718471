"""`melfusion generate` under adversarial inputs: outputs stay in --out-dir, inputs and foreign files are
never replaced, bad settings fail before generating (one line, exit 2), killed writes leave a consistent
pair, resumed batches never mix settings."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from melfusion_testing import make_image, write_triplets

from melfusion.cli import main
from melfusion.utils.files import sha256_file

COMMON = ["--steps", "2", "--seconds", "0.5"]


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: the refusal must come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was refused")

    monkeypatch.setattr("melfusion.commands.generate.load_pipeline", refuse)


def _single(image, out, model_dir, *extra) -> list[str]:
    argv = ["generate", "--image", str(image), "--text", "calm", "--out", str(out), "--model", str(model_dir)]
    return [*argv, *COMMON, *extra]


def _batch(manifest, out_dir, model_dir, *extra) -> list[str]:
    argv = ["generate", "--manifest", str(manifest), "--out-dir", str(out_dir), "--model", str(model_dir)]
    return [*argv, *COMMON, "--seed", "10", *extra]


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]  # (model loading may print progress bars)
    assert len(lines) == 1 and lines[0].startswith("melfusion generate: error: "), err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# 1. manifest ids never leave --out-dir ------------------------------------------------------------------


def test_manifest_ids_with_paths_stay_inside_out_dir(model_dir, tmp_path):
    data = tmp_path / "a" / "b" / "data"
    write_triplets(data, n=2, seconds=0.6)
    absolute = tmp_path / "abs" / "Y"
    rows = [  # both rows share one reference, so the clips are named by id
        {"id": "../../X", "image": "img0.png", "audio": "clip0.wav", "text": "a calm tune"},
        {"id": str(absolute), "image": "img1.png", "audio": "clip0.wav", "text": "a fast tune"},
    ]
    manifest = data / "ids.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "a" / "b" / "gen"
    before = _files(tmp_path)
    assert main(_batch(manifest, out, model_dir)) == 0
    new = _files(tmp_path) - before
    assert new and all(p.parent == out for p in new), sorted(map(str, new))
    assert not (tmp_path / "a" / "X.wav").exists() and not absolute.with_suffix(".wav").exists()
    wavs = sorted(p.name for p in out.glob("*.wav"))
    assert wavs[0] == "X.wav" and wavs[1].endswith("abs_Y.wav") and not wavs[1].startswith(".")
    assert json.loads((out / "X.json").read_text())["id"] == "../../X"  # the sidecar keeps the real id


def test_ids_colliding_as_file_names_are_refused(tmp_path, capsys, no_model):
    data = tmp_path / "data"
    write_triplets(data, n=2, seconds=0.6)
    rows = [
        {"id": "a/b", "image": "img0.png", "audio": "clip0.wav", "text": "x"},
        {"id": "a_b", "image": "img1.png", "audio": "clip0.wav", "text": "y"},
    ]
    (data / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["generate", "--manifest", str(data / "m.jsonl"), "--out-dir", str(tmp_path / "gen")]
    assert main(argv) == 2
    _one_line_error(capsys, "would both write a_b.wav")


# 2. never replace an input or a file melfusion did not write ---------------------------------------------


def test_out_never_replaces_inputs_or_foreign_files(model_dir, image_file, tmp_path, capsys, monkeypatch):
    png_named_wav = tmp_path / "picture.wav"  # an image Pillow reads whatever its name
    make_image().save(png_named_wav, format="PNG")
    foreign_json = tmp_path / "notes.json"
    foreign_json.write_text('{"mine": true}')
    foreign_wav = tmp_path / "take.wav"
    sf.write(foreign_wav, [0.0] * 100, 16000)
    json_image = tmp_path / "photo.json"  # ... and one named like the sidecar of photo.wav
    make_image().save(json_image, format="PNG")
    cases = [
        (png_named_wav, png_named_wav, "would overwrite the input --image"),
        (json_image, tmp_path / "photo.wav", "would overwrite the input --image"),
        (image_file, tmp_path / "notes.wav", "notes.json exists and was not written by melfusion generate"),
        (image_file, foreign_wav, "did not write it (no sidecar next to it)"),
    ]
    snapshot = {p: p.read_bytes() for p in (png_named_wav, json_image, foreign_json, foreign_wav)}
    with monkeypatch.context() as m:
        m.setattr("melfusion.commands.generate.load_pipeline", _refuse_load)
        for image, out, message in cases:
            assert main(_single(image, out, model_dir)) == 2, (image, out)
            _one_line_error(capsys, message)
    assert {p: p.read_bytes() for p in snapshot} == snapshot
    # our own output may be replaced; once changed by someone else, it may not
    ours = tmp_path / "song.wav"
    assert main(_single(image_file, ours, model_dir, "--seed", "1")) == 0
    assert main(_single(image_file, ours, model_dir, "--seed", "2")) == 0
    assert json.loads(ours.with_suffix(".json").read_text())["seed"] == 2
    ours.write_bytes(ours.read_bytes()[:-2] + b"\x00\x01")
    capsys.readouterr()
    assert main(_single(image_file, ours, model_dir, "--seed", "3")) == 2
    _one_line_error(capsys, "was changed after melfusion generate wrote it")
    # a .flac next to song.wav would take over song.wav's sidecar
    assert main(_single(image_file, tmp_path / "song.flac", model_dir)) == 2
    _one_line_error(capsys, "song.json is the sidecar of song.wav")


def _refuse_load(*args, **kwargs):
    raise AssertionError("the model was loaded before the output was refused")


def test_batch_never_replaces_references_or_the_manifest(model_dir, tmp_path, capsys, no_model):
    data = tmp_path / "data"
    manifest = write_triplets(data, n=2, seconds=0.6)
    before = {p: p.read_bytes() for p in _files(data)}
    assert main(_batch(manifest, data, model_dir)) == 2  # --out-dir = the references' folder
    _one_line_error(capsys, "would overwrite the input reference audio")
    # a manifest named like a row's sidecar, inside --out-dir
    out = tmp_path / "gen"
    out.mkdir()
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    doc = out / "clip1.json"
    doc.write_text(
        json.dumps([{**r, "image": str(data / r["image"]), "audio": str(data / r["audio"])} for r in rows])
    )
    assert main(_batch(doc, out, model_dir)) == 2
    _one_line_error(capsys, "would overwrite the input --manifest")
    doc.unlink()
    (out / "clip0.json").write_text("[]")  # some other JSON file where a sidecar would go
    assert main(_batch(manifest, out, model_dir)) == 2
    _one_line_error(capsys, "clip0.json exists and was not written by melfusion generate")
    assert {p: p.read_bytes() for p in before} == before


# 3. loudness ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e6", "-1e6", "-71", "3"])
def test_bad_loudness_is_one_line(value, image_file, tmp_path, capsys, no_model):
    argv = ["generate", "--image", str(image_file), "--text", "x", "--out", str(tmp_path / "o.wav")]
    assert main([*argv, f"--loudness={value}"]) == 2
    _one_line_error(capsys, "--loudness must be a LUFS value in [-70, 0]")
    assert not (tmp_path / "o.wav").exists()


# 4. audio and sidecar committed as a pair -----------------------------------------------------------------

CHILD = r"""
import os, signal, sys
target, when = sys.argv[1], sys.argv[2]
real_replace = os.replace

def replace(src, dst, *args, **kwargs):
    if os.path.basename(os.fspath(dst)) == target:
        if when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)  # the audio is in place, its sidecar not yet
    return real_replace(src, dst, *args, **kwargs)

os.replace = replace
from melfusion.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("when", ["before", "between"])
def test_sigkill_during_the_write_leaves_a_consistent_pair(when, model_dir, image_file, tmp_path):
    out = tmp_path / "gen" / "song.wav"
    assert main(_single(image_file, out, model_dir, "--seed", "1")) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, "song.wav", when, *_single(image_file, out, model_dir, "--seed", "2")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert any(p.name.startswith(".") for p in out.parent.iterdir())  # the killed run's temporaries
    # the next run in that folder finishes (or drops) the cut-off commit before anything else
    assert main(_single(image_file, out.parent / "next.wav", model_dir, "--seed", "3")) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["audio_sha256"] == sha256_file(out) and meta["audio_file"] == "song.wav"
    assert meta["seed"] == (1 if when == "before" else 2)  # both old, or both new
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]


# 5. what can be checked is checked before generating --------------------------------------------------


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("out_is_dir", "exists and is a folder"),
        ("parent_is_file", "is a file, not a folder"),
        ("read_only_probe", "is not writable"),
        ("seed_too_big", "--seed must be in [0, 2^64 - 1]"),
        ("seed_negative", "--seed must be in [0, 2^64 - 1]"),
        ("model_index_list", "holds a JSON list, not an object"),
        ("model_index_string", "holds a JSON str, not an object"),
        ("name_too_long", "file name too long"),
    ],
)
def test_refused_before_the_model_loads(
    case, message, image_file, model_dir, tmp_path, capsys, monkeypatch, no_model
):
    out, extra, model = tmp_path / "o.wav", [], model_dir
    if case == "out_is_dir":
        out.mkdir()
    elif case == "parent_is_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "sub" / "o.wav"
    elif case == "read_only_probe":  # what a read-only mount (EROFS) looks like, for any user

        def erofs(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr("melfusion.commands.generate.tempfile.mkstemp", erofs)
    elif case == "seed_too_big":
        extra = ["--seed", str(2**64)]
    elif case == "seed_negative":
        extra = ["--seed", "-1"]
    elif case.startswith("model_index"):
        model = tmp_path / "model"
        model.mkdir()
        (model / "model_index.json").write_text("[1, 2]" if case.endswith("list") else '"MeLFusionPipeline"')
    elif case == "name_too_long":
        out = tmp_path / ("n" * 250 + ".wav")
    assert main(_single(image_file, out, model, *extra)) == 2
    _one_line_error(capsys, message)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder(image_file, model_dir, tmp_path, capsys, no_model):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert main(_single(image_file, folder / "o.wav", model_dir)) == 2
        _one_line_error(capsys, "is not writable")
    finally:
        folder.chmod(0o755)


def test_disk_full(image_file, model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("melfusion.commands.generate._free_bytes", lambda folder: 1000)
    assert main(_single(image_file, tmp_path / "o.wav", model_dir)) == 2
    _one_line_error(capsys, "not enough disk space")
    monkeypatch.undo()

    def enospc(*args, **kwargs):  # the disk fills up while writing
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sf, "write", enospc)
    assert main(_single(image_file, tmp_path / "o.wav", model_dir)) == 2
    _one_line_error(capsys, "could not write", "No space left on device")
    assert not list(tmp_path.glob("o.*")) and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_batch_seed_range_is_checked_up_front(model_dir, tmp_path, capsys, no_model):
    manifest = write_triplets(tmp_path / "data", n=3, seconds=0.6)
    argv = _batch(manifest, tmp_path / "gen", model_dir)
    argv[argv.index("--seed") + 1] = str(2**64 - 2)  # rows 0, 1 fit; row 2 would overflow
    assert main(argv) == 2
    _one_line_error(capsys, "exceeds 2^64 - 1 for 3 rows")
    argv[argv.index("--seed") + 1] = "-5"
    assert main(argv) == 2
    _one_line_error(capsys, "--seed must be in [0, 2^64 - 1]")
    assert not (tmp_path / "gen").exists()


# 6. resumed batches never mix settings ---------------------------------------------------------------


def test_resume_with_other_settings_is_refused(model_dir, tmp_path, capsys):
    manifest = write_triplets(tmp_path / "data", n=2, seconds=0.6)
    out = tmp_path / "gen"
    assert main(_batch(manifest, out, model_dir)) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    for extra in (
        ["--guidance", "3"],
        ["--image-guidance", "2"],
        ["--scheduler", "ddpm"],
        ["--loudness", "-20"],
    ):
        assert main(_batch(manifest, out, model_dir, *extra)) == 2
        _one_line_error(capsys, "made with other settings", "use a fresh --out-dir")
    steps = _batch(manifest, out, model_dir)
    steps[steps.index("--steps") + 1] = "3"
    assert main(steps) == 2
    _one_line_error(capsys, "num_inference_steps 2, now 3")
    seed = _batch(manifest, out, model_dir)
    seed[seed.index("--seed") + 1] = "11"
    assert main(seed) == 2
    _one_line_error(capsys, "seed 10, now 11")
    changed = manifest.read_text().replace("a calm tune number 0", "a loud tune number 0")
    manifest.write_text(changed)
    assert main(_batch(manifest, out, model_dir)) == 2
    _one_line_error(capsys, "clip0.wav: prompt")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    # same settings: nothing is regenerated
    manifest.write_text(changed.replace("a loud tune number 0", "a calm tune number 0"))
    assert main(_batch(manifest, out, model_dir)) == 0
    assert "2 were already there" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    shutil.rmtree(out)
