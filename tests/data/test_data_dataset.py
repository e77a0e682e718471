from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from _data_helpers import write_png, write_ramp, write_sine
from torch.utils.data import DataLoader

from melfusion.audio.io import load_audio
from melfusion.data.dataset import SkipCounter, TripletDataset, collate_triplets, read_audio_window
from melfusion.data.manifest import TripletRecord
from melfusion.errors import MelfusionInputError

SR = 16000


@pytest.fixture
def files(tmp_path):
    return {
        "ramp": write_ramp(tmp_path / "ramp.wav", 3 * SR),
        "stereo22k": write_sine(tmp_path / "s22.wav", 1.0, rate=22050, freq=1000.0, amp=0.5, channels=2),
        "short": write_sine(tmp_path / "short.wav", 0.25),
        "red": write_png(tmp_path / "red.png", (255, 0, 0), size=(30, 20)),
        "green": write_png(tmp_path / "green.png", (0, 255, 0)),
        "blue": write_png(tmp_path / "blue.png", (0, 0, 255)),
    }


def _ds(records, **kw):
    kw = {"sample_rate": SR, "num_samples": SR, "image_size": (8, 12), **kw}
    return TripletDataset(records, **kw)


def test_item_shapes_ranges_and_padding(files):
    ds = _ds([TripletRecord("short", [files["red"]], "t", files["short"])])
    item = ds[0]
    assert item["audio"].shape == (SR,) and item["audio"].dtype == torch.float32
    assert item["audio_length"] == SR // 4 and torch.all(item["audio"][SR // 4 :] == 0)
    assert item["pixel_values"].shape == (3, 8, 12)
    assert item["pixel_values"].min() >= -1 and item["pixel_values"].max() <= 1
    assert torch.allclose(item["pixel_values"][0], torch.ones(8, 12))  # red channel at +1
    assert item["image_index"] == 0 and item["image_path"].endswith("red.png")


def test_resample_and_mono_mix(files):
    ds = _ds([TripletRecord("s", [files["red"]], "t", files["stereo22k"])], num_samples=SR // 2)
    audio = ds[0]["audio"].numpy()
    # channels are 0.5x and 1.0x of a 0.5-amplitude sine: mono mix has amplitude 0.375, still 1 kHz at 16 kHz
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * SR / len(audio) - 1000.0) < 3
    assert abs(np.abs(audio).max() - 0.375) < 0.01


def test_windowed_read_equals_whole_file_resampled(tmp_path):
    path = write_sine(tmp_path / "s44.wav", 3.0, rate=44100, freq=523.0, channels=2)
    whole = load_audio(path, SR)  # the whole file, mono, resampled
    for seed in range(3):
        audio, offset, length = read_audio_window(path, SR, SR // 2, rng=np.random.default_rng(seed))
        assert length == SR // 2
        np.testing.assert_allclose(audio, whole[offset : offset + SR // 2], atol=1e-5)
    audio, offset, length = read_audio_window(path, SR, SR // 2, start_s=1.0, end_s=1.2)
    assert (offset, length) == (0, SR // 5) and not audio[length:].any()
    np.testing.assert_allclose(audio[:length], whole[SR : SR + length], atol=1e-5)


def test_crop_is_deterministic_and_changes_with_epoch(files):
    rec = TripletRecord("r", [files["red"]], "t", files["ramp"])
    ds = _ds([rec], seed=3)
    first = ds[0]
    again = _ds([rec], seed=3)[0]
    assert first["audio_offset"] == again["audio_offset"] and torch.equal(first["audio"], again["audio"])
    # same rate: the crop is exactly the ramp's slice at the offset
    expected = (np.arange(first["audio_offset"], first["audio_offset"] + SR) / (3 * SR)).astype(np.float32)
    np.testing.assert_allclose(first["audio"].numpy(), expected, atol=1e-6)
    offsets = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        offsets.add(ds[0]["audio_offset"])
    assert len(offsets) > 1 and all(0 <= o <= 2 * SR for o in offsets)
    fixed = _ds([rec], random_crop=False)
    fixed.set_epoch(5)
    assert fixed[0]["audio_offset"] == 0 and fixed[0]["audio"][1].item() == pytest.approx(1 / (3 * SR))


def test_segment_bounds_are_respected(files):
    rec = TripletRecord("r", [files["red"]], "t", files["ramp"], start_s=1.0, end_s=2.5)
    ds = _ds([rec], num_samples=SR // 2)
    for epoch in range(5):
        ds.set_epoch(epoch)
        audio = ds[0]["audio"].numpy()
        assert audio.min() >= 1 / 3 - 1e-6 and audio.max() <= 2.5 / 3 + 1e-6
    short_segment = _ds([TripletRecord("r", [files["red"]], "t", files["ramp"], start_s=2.75)])[0]
    assert short_segment["audio_length"] == SR // 4


def test_one_image_per_epoch_deterministic(files):
    rec = TripletRecord("multi", [files["red"], files["green"], files["blue"]], "t", files["ramp"])
    ds = _ds([rec], seed=1, load_audio=False)
    picks = []
    for epoch in range(12):
        ds.set_epoch(epoch)
        item = ds[0]
        assert item["image_index"] == ds.image_index(0)
        assert item["image_path"] == str(rec.images[item["image_index"]])
        picks.append(item["image_index"])
    assert set(picks) == {0, 1, 2}
    other = _ds([rec], seed=1, load_audio=False)
    assert [(other.set_epoch(e), other[0]["image_index"])[1] for e in range(12)] == picks
    # the crop stream is independent of the image choice
    single = TripletRecord("multi", [files["red"]], "t", files["ramp"])
    assert _ds([rec], seed=1)[0]["audio_offset"] == _ds([single], seed=1)[0]["audio_offset"]


def test_bad_items_are_skipped_and_counted(files, tmp_path, caplog):
    gone = write_sine(tmp_path / "gone.wav", 1.0)
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio at all" * 10)
    records = [
        TripletRecord("ok", [files["red"]], "a", files["ramp"]),
        TripletRecord("gone", [files["red"]], "b", gone),
        TripletRecord("bad", [files["red"]], "c", bad),
    ]
    ds = _ds(records)
    gone.unlink()  # vanishes after construction
    with caplog.at_level(logging.WARNING, logger="melfusion.data.dataset"):
        loader = DataLoader(ds, batch_size=3, collate_fn=ds.collate_fn)
        counter = SkipCounter()
        for _ in range(2):
            for batch in loader:
                counter.update(batch)
    assert batch["id"] == ["ok"] and batch["audio"].shape == (1, SR) and batch["text"] == ["a"]
    assert batch["index"].tolist() == [0] and batch["num_skipped"] == 2
    assert counter.total == 4 and counter.state_dict() == {"total": 4, "batches": 2}
    assert ds.num_failed == 4
    assert caplog.text.count("skipping item gone") == 1  # warned once per item
    empty = ds.collate_fn([None, None])
    assert empty["num_skipped"] == 2 and empty["audio"].shape == (0, SR)
    assert empty["pixel_values"].shape == (0, 3, 8, 12)
    assert collate_triplets([None])["id"] == []


def test_construction_drops_missing_and_errors_when_nothing_is_usable(files, tmp_path):
    records = [
        TripletRecord("ok", [tmp_path / "nope.png", files["red"]], "a", files["ramp"]),
        TripletRecord("no_audio", [files["red"]], "b", tmp_path / "missing.wav"),
    ]
    ds = _ds(records)
    assert len(ds) == 1 and ds.records[0].images == [files["red"]] and "no_audio" in ds.dropped[0]
    with pytest.raises(MelfusionInputError, match="no usable item among 1 record.*melfusion data check"):
        _ds(records[1:])
    with pytest.raises(MelfusionInputError, match="no usable item among 0"):
        _ds([])
    with pytest.raises(MelfusionInputError, match="num_samples"):
        _ds(records, num_samples=0)


def test_from_manifest_with_check(tmp_path, files):
    silent = write_sine(tmp_path / "silent.wav", 2.0, amp=0.0)
    (tmp_path / "m.jsonl").write_text(
        f'{{"image": "{files["red"]}", "text": "a", "audio": "{files["ramp"]}"}}\n'
        f'{{"image": "{files["red"]}", "text": "b", "audio": "{silent}"}}\n'
    )
    assert (
        len(TripletDataset.from_manifest(tmp_path / "m.jsonl", sample_rate=SR, num_samples=100, image_size=8))
        == 2
    )
    checked = TripletDataset.from_manifest(
        tmp_path / "m.jsonl", check=True, sample_rate=SR, num_samples=100, image_size=8
    )
    assert [r.id for r in checked.records] == ["ramp"]


def test_worker_processes_report_skips_through_the_batch(files, tmp_path):
    gone = write_sine(tmp_path / "gone.wav", 1.0)
    records = [TripletRecord(f"ok{i}", [files["red"]], "a", files["ramp"]) for i in range(3)]
    ds = _ds([*records, TripletRecord("gone", [files["red"]], "b", gone)], num_samples=800)
    gone.unlink()
    loader = DataLoader(ds, batch_size=2, num_workers=1, collate_fn=ds.collate_fn)
    counter = SkipCounter()
    ids = [i for batch in loader if counter.update(batch) >= 0 for i in batch["id"]]
    assert ids == ["ok0", "ok1", "ok2"] and counter.total == 1
    assert ds.num_failed == 0  # the failure happened in the worker: only the batch carries it
