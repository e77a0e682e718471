"""`melfusion describe` with a toy ViT→GPT-2 captioner built in code and saved locally (no network)."""

from __future__ import annotations

import json
import string

import pytest
import torch
from _art2mus_helpers import write_image_folder, write_music_folder

from melfusion.errors import MelfusionInputError
from melfusion.pairing.describe import ImageDescriber, describe_folder


@pytest.fixture(scope="module")
def captioner_dir(tmp_path_factory):
    from transformers import (
        GPT2Config,
        GPT2Tokenizer,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessorPil,
    )

    path = tmp_path_factory.mktemp("captioner")
    vocab = {"<|endoftext|>": 0}
    for c in string.ascii_lowercase + " ":
        vocab.setdefault("Ġ" if c == " " else c, len(vocab))
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=[])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        encoder = ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
        decoder = GPT2Config(
            n_embd=16, n_layer=1, n_head=2, vocab_size=len(vocab), n_positions=64, add_cross_attention=True
        )
        config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
        config.decoder_start_token_id = config.pad_token_id = 0
        model = VisionEncoderDecoderModel(config)
    model.generation_config.decoder_start_token_id = 0
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None  # toy weights: always write max_new_tokens characters
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def test_describe_folder_writes_one_description_per_artwork_and_resumes(captioner_dir, tmp_path):
    write_image_folder(tmp_path / "art", 3)
    out = tmp_path / "descriptions.jsonl"
    report = describe_folder(
        tmp_path / "art", out, model=str(captioner_dir), max_new_tokens=6, progress=False
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["art00", "art01", "art02"]
    assert all(isinstance(r["text"], str) and r["text"] for r in rows)
    assert rows[0]["image"] == "art/art00.png" and rows[0]["description_model"] == str(captioner_dir)
    assert report.described == 3 and not (tmp_path / "descriptions.jsonl.partial.jsonl").exists()
    # an interrupted run keeps what it described in the partial file; the next run only does the rest
    describer = ImageDescriber.from_pretrained(captioner_dir, max_new_tokens=6)
    real = describer.describe
    calls = []

    def flaky(images):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(images)

    describer.describe = flaky
    out.unlink()
    with pytest.raises(KeyboardInterrupt):
        describe_folder(tmp_path / "art", out, model=describer, batch_size=1, progress=False)
    assert not out.exists() and (tmp_path / "descriptions.jsonl.partial.jsonl").is_file()
    describer.describe = real
    again = describe_folder(tmp_path / "art", out, model=describer, batch_size=1, progress=False)
    assert (again.resumed, again.described) == (1, 2)
    assert [r["text"] for r in again.rows] == [r["text"] for r in rows]  # greedy decoding: same texts


def test_describe_with_pairs_builds_the_description_music_dataset(captioner_dir, tmp_path):
    from melfusion.pairing.tool import pair_folders

    write_image_folder(tmp_path / "art", 2)
    write_music_folder(tmp_path / "music", 3)
    pairs = pair_folders(
        tmp_path / "art", tmp_path / "music", tmp_path / "pairs.jsonl", encoder="tiny", progress=False
    )
    report = describe_folder(
        None, tmp_path / "desc_music.jsonl", model=str(captioner_dir), pairs=pairs.manifest, max_new_tokens=4,
        progress=False,
    )  # fmt: skip
    from melfusion.data.manifest import read_manifest

    records = read_manifest(report.manifest)
    assert len(records) == 2
    by_image = {r.image: r.audio for r in read_manifest(pairs.manifest)}
    assert all(by_image[r.image] == r.audio for r in records)  # each description keeps its artwork's track


def test_describe_errors(captioner_dir, tmp_path, capsys):
    from melfusion.cli import main

    write_image_folder(tmp_path / "art", 2)
    with pytest.raises(MelfusionInputError, match="not found"):
        describe_folder(
            tmp_path / "art", tmp_path / "d.jsonl", model=str(tmp_path / "no-model"), progress=False
        )
    (tmp_path / "art" / "art01.png").write_text("not an image")
    with pytest.raises(MelfusionInputError, match="not an image file.*1 description"):
        describe_folder(
            tmp_path / "art", tmp_path / "d.jsonl", model=str(captioner_dir), batch_size=1, max_new_tokens=3,
            progress=False,
        )  # fmt: skip
    assert (tmp_path / "d.jsonl.partial.jsonl").read_text().count("\n") == 1  # art00 kept for the next run
    rc = main(["describe", "--images", str(tmp_path / "art"), "--model", str(captioner_dir)]
              + ["--out", str(tmp_path / "d.jsonl"), "--skip-bad", "--no-progress", "--max-new-tokens", "3"])  # fmt: skip
    assert rc == 0 and "1 description" in capsys.readouterr().out
