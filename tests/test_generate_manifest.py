from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from melfusion_testing import write_triplets

from melfusion.cli import main


def _args(manifest, out, model_dir, *extra):
    return [
        "generate",
        "--manifest",
        str(manifest),
        "--out-dir",
        str(out),
        "--model",
        str(model_dir),
        "--steps",
        "2",
        "--seconds",
        "0.5",
        "--seed",
        "10",
        *extra,
    ]


def test_manifest_batch_generation_pairs_resumes_and_matches_single_calls(model_dir, tmp_path, capsys):
    manifest = write_triplets(tmp_path / "data", n=3, seconds=0.6)
    out = tmp_path / "gen"
    assert main(_args(manifest, out, model_dir)) == 0
    names = sorted(p.name for p in out.glob("*.wav"))
    assert names == ["clip0.wav", "clip1.wav", "clip2.wav"]  # pair with the references by stem
    meta = json.loads((out / "clip1.json").read_text())
    assert meta["seed"] == 11 and meta["row"] == 1 and meta["id"] == "item1"
    # the same clip as a single call with that row's seed
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert (
        main(
            [
                "generate",
                "--image",
                str(tmp_path / "data" / rows[1]["image"]),
                "--text",
                rows[1]["text"],
                "--out",
                str(tmp_path / "single.wav"),
                "--model",
                str(model_dir),
                "--steps",
                "2",
                "--seconds",
                "0.5",
                "--seed",
                "11",
            ]
        )
        == 0
    )
    assert np.array_equal(sf.read(out / "clip1.wav")[0], sf.read(tmp_path / "single.wav")[0])
    # resumable: existing outputs are skipped, a missing one is redone
    before = (out / "clip0.wav").stat().st_mtime_ns
    (out / "clip2.wav").unlink()
    capsys.readouterr()
    assert main(_args(manifest, out, model_dir)) == 0
    assert (out / "clip0.wav").stat().st_mtime_ns == before and (out / "clip2.wav").exists()
    assert "2 were already there" in capsys.readouterr().out


def test_bad_row_is_reported_and_skipped(model_dir, tmp_path, capsys):
    manifest = write_triplets(tmp_path / "data", n=2, seconds=0.6)
    (tmp_path / "data" / "img1.png").write_text("not a png")
    assert main(_args(manifest, tmp_path / "gen", model_dir)) == 1
    assert (tmp_path / "gen" / "clip0.wav").exists() and not (tmp_path / "gen" / "clip1.wav").exists()
    assert "skipped row 1" in capsys.readouterr().out + capsys.readouterr().err


def test_manifest_flags_are_checked(tmp_path, capsys):
    assert main(["generate", "--manifest", str(tmp_path / "none.jsonl"), "--out-dir", str(tmp_path)]) == 2
    assert "manifest not found" in capsys.readouterr().err
    assert main(["generate", "--manifest", "m.jsonl"]) == 2
    assert "needs --out-dir" in capsys.readouterr().err
    assert main(["generate", "--text", "x"]) == 2
    assert "missing --image, --out" in capsys.readouterr().err
    (tmp_path / "m.jsonl").write_text("{}\n")
    assert main(["generate", "--manifest", str(tmp_path / "m.jsonl"), "--out-dir", "o", "--num-samples", "2"]) == 2
    assert "--num-samples applies to single clips" in capsys.readouterr().err  # never silently ignored


def test_rows_without_reference_audio_generate(model_dir, tmp_path):
    """Generation needs an image and a text, not a reference: such rows are named after their ids."""
    data = tmp_path / "data"
    manifest = write_triplets(data, n=2, seconds=0.6)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for row in rows:
        del row["audio"]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(_args(manifest, tmp_path / "gen", model_dir)) == 0
    for row in rows:
        info = json.loads((tmp_path / "gen" / f"{row['id']}.json").read_text())
        assert info["reference_audio"] is None and info["id"] == row["id"]


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process test runs on linux")
def test_two_processes_shard_the_rows(model_dir, tmp_path):
    manifest = write_triplets(tmp_path / "data", n=4, seconds=0.6)
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(
        [
            accelerate,
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            "29541",
            "-m",
            "melfusion.cli",
            *_args(manifest, tmp_path / "gen", model_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metas = [json.loads(p.read_text()) for p in sorted((tmp_path / "gen").glob("*.json"))]
    assert [m["row"] for m in metas] == [0, 1, 2, 3]
