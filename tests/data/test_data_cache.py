from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import load_file

from melfusion.data.cache import (
    AUDIO_LATENTS,
    FeatureCache,
    cache_key,
    fingerprint,
    model_fingerprint,
)

KEY = "ab" + "0" * 62


def test_round_trip_metadata_and_counters(tmp_path):
    cache = FeatureCache(tmp_path)
    assert cache.get("audio_latents", KEY) is None
    latents = torch.randn(8, 16, 4)
    mask = torch.ones(7, dtype=torch.bool)
    path = cache.put(
        "audio_latents", KEY, {"latents": latents, "mask": mask}, {"clip": "a.wav", "seconds": 1.5}
    )
    assert path == tmp_path / "audio_latents" / "ab" / f"{KEY}.safetensors"
    tensors, meta = cache.get_with_metadata("audio_latents", KEY)
    assert torch.equal(tensors["latents"], latents) and tensors["mask"].dtype == torch.bool
    assert meta == {"clip": "a.wav", "seconds": "1.5"}
    assert cache.stats == {"hits": 1, "misses": 1, "writes": 1, "corrupt": 0}


def test_get_or_compute_calls_once_and_resumes_across_instances(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(6.0).view(2, 3)}

    first = FeatureCache(tmp_path).get_or_compute("text_states", KEY, compute)
    again = FeatureCache(tmp_path)  # a new run reuses what is on disk
    second = again.get_or_compute("text_states", KEY, compute)
    assert len(calls) == 1 and torch.equal(first["x"], second["x"]) and again.hits == 1


def test_keys_follow_content_and_config(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    a = tmp_path / "a.wav"
    a.write_bytes(b"abc")
    moved = tmp_path / "moved.wav"
    moved.write_bytes(b"abc")
    config = {"vae": "f00", "sample_rate": 16000, "crop": (0, 163840)}
    key = cache.file_key(a, config)
    assert key == cache.file_key(moved, {"crop": [0, 163840], "sample_rate": 16000, "vae": "f00"})
    assert key != cache.file_key(a, {**config, "sample_rate": 22050})
    a.write_bytes(b"abd")
    assert key != cache.file_key(a, config)  # edited file -> new key (memo is keyed by mtime and size)
    assert cache.text_key("calm piano", config) != cache.text_key("calm piano.", config)
    assert len(cache_key("h", config)) == 64


def test_fingerprint_is_canonical():
    @dataclass
    class Cfg:
        n: int = 1
        dtype: torch.dtype = torch.float16

    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": (1, 2), "a": 1})
    assert fingerprint(Cfg()) != fingerprint(Cfg(n=2))
    assert fingerprint(torch.zeros(3)) != fingerprint(torch.zeros(4))
    with pytest.raises(TypeError, match="cannot fingerprint"):
        fingerprint(object())
    lin = torch.nn.Linear(2, 2)
    before = model_fingerprint(lin)
    with torch.no_grad():
        lin.weight.add_(1)
    assert model_fingerprint(lin) != before


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "other_key"])
def test_damaged_file_is_a_miss_and_gets_replaced(tmp_path, damage):
    cache = FeatureCache(tmp_path)
    good = {"latents": torch.randn(4, 4)}
    path = cache.put(AUDIO_LATENTS, KEY, good)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) - 9])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 50)
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a valid file written for another key, copied into this key's place
        other = cache.put(AUDIO_LATENTS, "cd" + "1" * 62, {"latents": torch.zeros(1)})
        path.write_bytes(other.read_bytes())
    assert cache.get(AUDIO_LATENTS, KEY) is None and cache.corrupt == 1
    out = cache.get_or_compute(AUDIO_LATENTS, KEY, lambda: good)
    assert torch.equal(out["latents"], good["latents"])
    assert torch.equal(cache.get(AUDIO_LATENTS, KEY)["latents"], good["latents"])


def test_kind_helpers_and_disabled_cache(tmp_path):
    cache = FeatureCache(tmp_path)
    states, mask = torch.randn(5, 8), torch.tensor([1, 1, 1, 0, 0])
    cache.put_text_states(KEY, states, mask)
    got_states, got_mask = cache.get_text_states(KEY)
    assert torch.equal(got_states, states) and torch.equal(got_mask, mask)
    cache.put_audio_latents(KEY, states[:2])
    assert torch.equal(cache.get_audio_latents(KEY), states[:2])
    shared = torch.randn(4, 3)
    cache.put("image_latents", KEY, {"z0": shared, "z0_view": shared[:2]})  # shared storage is cloned
    assert torch.equal(cache.get("image_latents", KEY)["z0_view"], shared[:2])
    off = FeatureCache(None)
    assert not off.enabled and off.put("k1", KEY, {"x": states}) is None and off.get("k1", KEY) is None
    with pytest.raises(ValueError, match="cache kind"):
        cache.put("../escape", KEY, {"x": states})


def _writer(root: str, key: str, seed: int, rounds: int) -> None:
    cache = FeatureCache(root)
    for i in range(rounds):
        g = torch.Generator().manual_seed(seed * 1000 + i)
        cache.put("audio_latents", key, {"latents": torch.randn(64, 256, generator=g)}, {"writer": str(seed)})


def test_two_processes_writing_the_same_key_leave_one_valid_file(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), KEY, seed, 25)) for seed in (1, 2)]
    for p in procs:
        p.start()
    reader = FeatureCache(tmp_path)
    while any(p.is_alive() for p in procs):  # reads during the writes never see a partial file
        reader.get("audio_latents", KEY)
        time.sleep(0.002)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    path = tmp_path / "audio_latents" / KEY[:2] / f"{KEY}.safetensors"
    assert [f for f in tmp_path.rglob("*") if f.is_file()] == [path]  # no temporaries left
    assert load_file(path)["latents"].shape == (64, 256)
    assert reader.corrupt == 0 and reader.get("audio_latents", KEY) is not None


def test_model_fingerprint_ignores_where_the_model_was_loaded_from(tmp_path):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=2)
    vae.save_pretrained(tmp_path / "a")
    vae.save_pretrained(tmp_path / "b")
    a, b = AutoencoderKL.from_pretrained(tmp_path / "a"), AutoencoderKL.from_pretrained(tmp_path / "b")
    assert a.config["_name_or_path"] != b.config["_name_or_path"]
    assert model_fingerprint(a) == model_fingerprint(b) == model_fingerprint(vae)
    a.register_to_config(scaling_factor=0.5)
    assert model_fingerprint(a) != model_fingerprint(b)  # real config still counts
