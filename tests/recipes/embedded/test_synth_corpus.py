"""`generate_corpus` / `melfusion data synth`: deterministic bytes, resumable, the standard manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from melfusion.cli import main
from melfusion.data.manifest import read_manifest
from melfusion.errors import MelfusionInputError
from melfusion.recipes.embedded.synth import SynthConfig, generate_corpus
from melfusion.recipes.embedded.synth.generate import CONFIG_FILE

SMALL = SynthConfig(seed=7, seconds=1.0, image_size=32)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file, minus the config's timing-free fields (it has none)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(tmp_path):
    a = generate_corpus(tmp_path / "a", 5, SMALL, progress=False)
    b = generate_corpus(tmp_path / "b", 5, SMALL, progress=False)
    assert a.written == b.written == 5
    files_a, files_b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert files_a.keys() == files_b.keys()
    assert len([k for k in files_a if k.startswith("audio/")]) == 5
    assert files_a == files_b  # manifests, audio, images, config: byte for byte

    generate_corpus(tmp_path / "c", 5, SynthConfig(seed=8, seconds=1.0, image_size=32), progress=False)
    files_c = _tree_bytes(tmp_path / "c")
    assert files_c["audio/000000.wav"] != files_a["audio/000000.wav"]
    assert files_c["all.jsonl"] != files_a["all.jsonl"]


def test_manifest_is_the_standard_triplet_format(tmp_path):
    result = generate_corpus(tmp_path, 6, SMALL, progress=False)
    records = read_manifest(tmp_path / "all.jsonl")
    assert [r.id for r in records] == [f"{i:06d}" for i in range(6)]
    for r in records:
        assert r.audio.is_file() and r.image.is_file()
        assert r.text
        for key in ("genre", "instrument", "family", "bpm", "tempo_class", "key", "mode", "energy", "split"):
            assert key in r.extra
        audio, rate = sf.read(r.audio, dtype="float32")
        assert rate == 16000 and audio.shape == (16000,) and np.isfinite(audio).all()
        assert np.sqrt(np.mean(audio**2)) > 0.01  # not silent
        assert Image.open(r.image).size == (32, 32)
    split_total = sum(
        len(read_manifest(tmp_path / f"{s}.jsonl")) if result.split_counts[s] else 0
        for s in result.split_counts
    )
    assert split_total == 6 == sum(result.split_counts.values())
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["num_items"] == 6 and config["seed"] == 7


def test_resume_skips_done_items_and_restores_missing_ones(tmp_path):
    generate_corpus(tmp_path, 4, SMALL, progress=False)
    before = _tree_bytes(tmp_path)
    (tmp_path / "audio" / "000002.wav").unlink()
    (tmp_path / "images" / "000003.png").unlink()
    result = generate_corpus(tmp_path, 4, SMALL, progress=False)
    assert (result.written, result.skipped) == (2, 2)
    assert _tree_bytes(tmp_path) == before
    # extending keeps the first items and matches a fresh larger run
    more = generate_corpus(tmp_path, 6, SMALL, progress=False)
    assert (more.written, more.skipped) == (2, 4)
    fresh = generate_corpus(tmp_path / "fresh", 6, SMALL, progress=False)
    assert fresh.written == 6
    assert {k: v for k, v in _tree_bytes(tmp_path).items() if not k.startswith("fresh/")} == _tree_bytes(
        tmp_path / "fresh"
    )


def test_other_options_or_foreign_folders_are_refused(tmp_path):
    generate_corpus(tmp_path / "c", 2, SMALL, progress=False)
    with pytest.raises(MelfusionInputError, match="seed"):
        generate_corpus(tmp_path / "c", 2, SynthConfig(seed=1, seconds=1.0, image_size=32), progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(MelfusionInputError, match="not empty"):
        generate_corpus(tmp_path / "other", 2, SMALL, progress=False)
    with pytest.raises(MelfusionInputError, match="--n"):
        generate_corpus(tmp_path / "d", 0, SMALL, progress=False)
    with pytest.raises(MelfusionInputError, match="--seconds"):
        generate_corpus(tmp_path / "d", 1, SynthConfig(seconds=0.1), progress=False)


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "corpus"
    args = ["data", "synth", "--n", "3", "--out", str(out), "--renderer", "numpy", "--seconds", "1"]
    args += ["--image-size", "16", "--no-progress", "--seed", "3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "3 item(s)" in printed and "renderer numpy" in printed and "3 written" in printed
    assert len(read_manifest(out / "all.jsonl")) == 3
    assert main(args) == 0
    assert "0 written, 3 already there" in capsys.readouterr().out
    assert main(["data", "synth", "--n", "3", "--out", str(out), "--seed", "4", "--renderer", "numpy"]) == 2
    assert "other options" in capsys.readouterr().err


def test_tonic_in_text_changes_only_the_texts_and_older_folders_still_resume(tmp_path):
    import dataclasses

    plain = generate_corpus(tmp_path / "plain", 3, SMALL, progress=False)
    tonic = generate_corpus(
        tmp_path / "tonic", 3, dataclasses.replace(SMALL, tonic_in_text=True), progress=False
    )
    a, b = read_manifest(plain.out_dir / "all.jsonl"), read_manifest(tonic.out_dir / "all.jsonl")
    for ra, rb in zip(a, b, strict=True):
        assert rb.text.startswith(ra.text + " ") and rb.text != ra.text
        assert Path(ra.audio).read_bytes() == Path(rb.audio).read_bytes()
        assert Path(ra.images[0]).read_bytes() == Path(rb.images[0]).read_bytes()
    # a folder written before the option existed (no tonic_in_text in its config) resumes with the default
    cfg_path = plain.out_dir / CONFIG_FILE
    cfg = json.loads(cfg_path.read_text())
    del cfg["tonic_in_text"]
    cfg_path.write_text(json.dumps(cfg))
    assert generate_corpus(plain.out_dir, 3, SMALL, progress=False).skipped == 3
    with pytest.raises(MelfusionInputError, match="tonic_in_text: False there, True now"):
        generate_corpus(plain.out_dir, 3, dataclasses.replace(SMALL, tonic_in_text=True), progress=False)


def test_tonics_fix_the_key_keep_every_other_attribute_and_resume(tmp_path, capsys):
    import dataclasses

    one = dataclasses.replace(SMALL, tonics=("C",))
    plain = generate_corpus(tmp_path / "plain", 4, SMALL, progress=False)
    fixed = generate_corpus(tmp_path / "fixed", 4, one, progress=False)
    a, b = read_manifest(plain.out_dir / "all.jsonl"), read_manifest(fixed.out_dir / "all.jsonl")
    for ra, rb in zip(a, b, strict=True):
        assert rb.extra["key"] == "C"
        for attr in ("genre", "instrument", "bpm", "mode", "energy", "split"):
            assert rb.extra[attr] == ra.extra[attr], attr
        assert rb.text == ra.text
    assert {r.extra["key"] for r in a} != {"C"}  # the default draws other keys for these items
    # the config round-trips through JSON (a list there, a tuple here): the same options resume
    assert generate_corpus(fixed.out_dir, 4, one, progress=False).skipped == 4
    with pytest.raises(MelfusionInputError, match="tonics"):
        generate_corpus(fixed.out_dir, 4, SMALL, progress=False)
    with pytest.raises(MelfusionInputError, match="--tonics takes comma-separated pitch classes"):
        generate_corpus(tmp_path / "bad", 1, dataclasses.replace(SMALL, tonics=("H",)), progress=False)
    args = ["data", "synth", "--n", "1", "--renderer", "numpy", "--seconds", "1", "--out"]
    assert main([*args, str(tmp_path / "cli"), "--tonics", "C, G"]) == 0
    assert read_manifest(tmp_path / "cli" / "all.jsonl")[0].extra["key"] in ("C", "G")
    assert main([*args, str(tmp_path / "cli2"), "--tonics", "Cb"]) == 2
    assert "--tonics takes" in capsys.readouterr().err
