from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from _data_helpers import write_jsonl, write_png, write_sine

from melfusion.data.manifest import (
    TripletRecord,
    detect_format,
    read_manifest,
    read_manifest_with_problems,
    write_manifest,
)
from melfusion.errors import MelfusionInputError

# The first MusicCaps rows' shape (musiccaps-public.csv, Kaggle / google/MusicCaps), shortened.
MUSICCAPS_HEADER = "ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,is_balanced_subset,is_audioset_eval"
MUSICCAPS_ROWS = [
    "-0Gj8-vB1q4,30,40,\"/m/0140xf,/m/02cjck\",\"['low quality', 'sustained strings melody']\","
    '"The low quality recording features a sustained strings melody.",4,False,True',
    "-0SdAVK79lg,30,40,/m/0155w,\"['guitar song', 'piano backing']\",\"This song features an electric guitar.\",0,False,False",
]


def test_standard_jsonl(tmp_path):
    rows = [
        {"id": "a", "image": "img/a.png", "text": " calm piano ", "audio": "wav/a.wav", "genre": "jazz"},
        {
            "image": ["img/b1.png", "/abs/b2.png"],
            "text": "two",
            "audio": "wav/b.flac",
            "start_s": 5,
            "end_s": 15.5,
        },
    ]
    m = write_jsonl(tmp_path / "m.jsonl", rows)
    a, b = read_manifest(m)
    assert a == TripletRecord(
        "a", [tmp_path / "img/a.png"], "calm piano", tmp_path / "wav/a.wav", extra={"genre": "jazz"}
    )
    assert b.id == "b"  # the audio stem when no id is given
    assert b.images == [tmp_path / "img/b1.png", Path("/abs/b2.png")]
    assert (b.start_s, b.end_s) == (5.0, 15.5)
    assert detect_format(m) == "jsonl"


def test_standard_csv_and_roots(tmp_path):
    (tmp_path / "m.csv").write_text(
        "id,image,text,audio,start_s\n"
        'x,a.png,"hello, world",x.wav,\n'
        'y,"[""p1.png"", ""p2.png""]",list cell,y.wav,2\n'
        "z,q1.png|q2.png,bar cell,z.wav,\n"
    )
    x, y, z = read_manifest(tmp_path / "m.csv", audio_root=tmp_path / "A", image_root="/imgs")
    assert x.text == "hello, world" and x.audio == tmp_path / "A/x.wav" and x.start_s is None
    assert [p.name for p in y.images] == ["p1.png", "p2.png"] and y.start_s == 2.0
    assert [str(p) for p in z.images] == ["/imgs/q1.png", "/imgs/q2.png"]
    assert detect_format(tmp_path / "m.csv") == "csv"


def test_melfusion_json_records_group_images(tmp_path):
    # The release's data files are JSON Lines named .json (train_combined.py: --text_column captions,
    # --audio_column location, --img_column img_path), TANGO-style extra keys included.
    rows = [
        {
            "dataset": "musiccaps",
            "location": "audio/c1.wav",
            "captions": "warm pads",
            "img_path": "images/c1_1.jpg",
        },
        {
            "dataset": "musiccaps",
            "location": "audio/c1.wav",
            "captions": "warm pads",
            "img_path": "images/c1_2.jpg",
        },
        {
            "dataset": "musiccaps",
            "location": "audio/c2.wav",
            "captions": ["fast drums", "x"],
            "img_path": "images/c2.jpg",
        },
        {"dataset": "musiccaps", "location": "audio/c3.wav", "img_path": "images/c3.jpg"},
    ]
    m = write_jsonl(tmp_path / "musiccaps_with_images.json", rows)
    assert detect_format(m) == "melfusion"
    records, problems = read_manifest_with_problems(m, audio_root=tmp_path / "root")
    assert [r.id for r in records] == ["c1", "c2"]
    assert [p.name for p in records[0].images] == ["c1_1.jpg", "c1_2.jpg"]
    assert records[0].audio == tmp_path / "root/audio/c1.wav"
    assert records[0].extra == {"dataset": "musiccaps"}
    assert records[1].text == "fast drums" and records[1].extra["texts"] == ["fast drums", "x"]
    assert len(problems) == 1 and problems[0].where.endswith("musiccaps_with_images.json:4")
    assert "captions" in problems[0].reason
    # explicit format wins: read as plain JSONL, rows are not merged
    assert len(read_manifest(m, format="jsonl")) == 3


def test_melfusion_json_array_document(tmp_path):
    doc = [{"location": "a.wav", "captions": "t", "img_path": "a.png"}]
    (tmp_path / "m.json").write_text(json.dumps(doc, indent=2))
    (r,) = read_manifest(tmp_path / "m.json")
    assert r.audio == tmp_path / "a.wav" and r.images == [tmp_path / "a.png"]


def test_extended_musiccaps_csv_finds_images_and_clips(tmp_path):
    (tmp_path / "musiccaps-public.csv").write_text("\n".join([MUSICCAPS_HEADER, *MUSICCAPS_ROWS]) + "\n")
    clips, images = tmp_path / "clips", tmp_path / "images"
    write_sine(clips / "[-0Gj8-vB1q4]-[30-40].wav", 0.1)
    write_sine(clips / "-0SdAVK79lg.flac", 0.1)
    for name in ("-0Gj8-vB1q4_2.jpg", "-0Gj8-vB1q4_1.jpg", "-0SdAVK79lg.png", "unrelated.png"):
        write_png(images / name)
    m = tmp_path / "musiccaps-public.csv"
    assert detect_format(m) == "extended_musiccaps"
    a, b = read_manifest(m, audio_root=clips, image_root=images)
    assert a.id == "-0Gj8-vB1q4_30_40"
    assert a.audio.name == "[-0Gj8-vB1q4]-[30-40].wav" and b.audio.name == "-0SdAVK79lg.flac"
    assert [p.name for p in a.images] == ["-0Gj8-vB1q4_1.jpg", "-0Gj8-vB1q4_2.jpg"]
    assert [p.name for p in b.images] == ["-0SdAVK79lg.png"]
    assert a.text.startswith("The low quality recording")
    assert a.start_s is None and a.extra["youtube_start_s"] == 30.0 and a.extra["ytid"] == "-0Gj8-vB1q4"
    assert "aspect_list" in a.extra and "caption" not in a.extra


def test_extended_musiccaps_image_columns_and_missing_images(tmp_path):
    (tmp_path / "ext.csv").write_text(
        "ytid,start_s,end_s,caption,image_path_1,image_path_2\n"
        "abc,30,40,a song,i/abc_a.jpg,i/abc_b.jpg\n"
        "def,0,10,no image here,,\n"
    )
    records, problems = read_manifest_with_problems(tmp_path / "ext.csv")
    assert [p.name for p in records[0].images] == ["abc_a.jpg", "abc_b.jpg"]
    assert records[0].audio == tmp_path / "abc.wav"  # not found: the default name, reported by `check`
    assert (
        len(problems) == 1 and "no image for def" in problems[0].reason and problems[0].where.endswith(":3")
    )


def test_extended_musiccaps_jsonl_rows_per_image_are_grouped(tmp_path):
    rows = [
        {"ytid": "abc", "start_s": 30, "end_s": 40, "caption": "song", "image": "abc_1.jpg"},
        {"ytid": "abc", "start_s": 30, "end_s": 40, "caption": "song", "image": "abc_2.jpg"},
    ]
    (r,) = read_manifest(write_jsonl(tmp_path / "ext.jsonl", rows))
    assert [p.name for p in r.images] == ["abc_1.jpg", "abc_2.jpg"]


def test_melbench_csv(tmp_path):
    (tmp_path / "melbench.csv").write_text(
        "youtube_video_id,start_second,end_second,Annotation,genre,image_path\n"
        'vid1,12,22,"A mellow lo-fi beat, soft keys.",lofi,frames/vid1_12.jpg\n'
        "vid1,40.5,50.5,Bright brass fanfare.,orchestral,frames/vid1_40.jpg\n"
        "vid2,x,10,Bad start.,rock,frames/vid2.jpg\n"
    )
    write_sine(tmp_path / "vid1_12_22.wav", 0.1)
    records, problems = read_manifest_with_problems(tmp_path / "melbench.csv")
    assert detect_format(tmp_path / "melbench.csv") == "melbench"
    assert [r.id for r in records] == ["vid1_12_22", "vid1_40.5_50.5"]
    assert records[0].audio == tmp_path / "vid1_12_22.wav"
    assert records[0].text == "A mellow lo-fi beat, soft keys." and records[0].extra["genre"] == "lofi"
    assert records[1].images == [tmp_path / "frames/vid1_40.jpg"]
    assert len(problems) == 1 and "start_second" in problems[0].reason and problems[0].where.endswith(":4")


def test_malformed_json_line_is_one_bad_row_named_by_file_and_line(tmp_path):
    m = tmp_path / "bad.jsonl"
    good = '{"image": "a.png", "text": "t", "audio": "a.wav"}\n'
    m.write_text(good + '{"image": "b.png", "text": \n' + good.replace("a.", "c."))
    records, problems = read_manifest_with_problems(m)
    assert [r.audio.name for r in records] == ["a.wav", "c.wav"]  # the lines after it are read
    assert len(problems) == 1 and problems[0].where.endswith("bad.jsonl:2")
    assert "not valid JSON" in problems[0].reason and "one JSON object" in problems[0].reason
    with pytest.raises(MelfusionInputError, match=r"bad\.jsonl:2: not valid JSON .*one JSON object"):
        read_manifest(m, on_error="raise")
    m.write_text(good + '["a.png", "t", "a.wav"]\n')
    with pytest.raises(MelfusionInputError, match=r"bad\.jsonl:2: expected a JSON object per line, got list"):
        read_manifest(m, on_error="raise")


def test_content_problems_are_skipped_and_logged(tmp_path, caplog):
    rows = [
        {"id": "a", "image": "a.png", "text": "t", "audio": "a.wav"},
        {"id": "a", "image": "b.png", "text": "t", "audio": "b.wav"},  # duplicate id
        {"image": "c.png", "text": "", "audio": "c.wav"},  # empty text
        {"image": "d.png", "text": "t", "audio": "d.wav", "start_s": 5, "end_s": 2},
        {"image": "e.png", "text": "t", "audio": "e.wav", "start_s": "soon"},
        {"image": [], "text": "t", "audio": "f.wav"},
    ]
    m = write_jsonl(tmp_path / "m.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="melfusion.data.manifest"):
        records = read_manifest(m)
    assert [r.id for r in records] == ["a"]
    assert "skipped 5 invalid row(s)" in caplog.text
    for line, what in ((2, "duplicate id"), (3, "text"), (4, "end_s"), (5, "start_s"), (6, "image")):
        assert f"m.jsonl:{line}:" in caplog.text and what in caplog.text
    with pytest.raises(MelfusionInputError, match=r"m\.jsonl:3: missing or empty text"):
        read_manifest(m, on_error="raise")


def test_no_valid_row_and_missing_file_are_clear_errors(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\na.wav,1\n")
    with pytest.raises(
        MelfusionInputError, match=r"no valid triplet .*m\.csv:2: missing or empty image, text, audio"
    ):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(MelfusionInputError, match="no valid triplet .*no rows"):
        read_manifest(tmp_path / "e.jsonl")
    with pytest.raises(MelfusionInputError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(MelfusionInputError, match="unknown manifest format 'parquet'"):
        read_manifest(tmp_path / "m.csv", format="parquet")


def test_csv_wrong_field_count_is_a_row_problem(tmp_path):
    (tmp_path / "m.csv").write_text("image,text,audio\na.png,t,a.wav\nb.png,t\n")
    records, problems = read_manifest_with_problems(tmp_path / "m.csv")
    assert len(records) == 1 and "has 2 fields, the header has 3" in problems[0].reason


def test_write_then_read_round_trip(tmp_path):
    records = [
        TripletRecord("one", [tmp_path / "img/a.png"], "t1", tmp_path / "wav/a.wav", extra={"genre": "pop"}),
        TripletRecord(
            "two", [tmp_path / "img/b.png", tmp_path / "img/c.png"], "t2", tmp_path / "b.wav", 1.0, 3.5
        ),
    ]
    out = write_manifest(tmp_path / "sub" / "m.jsonl", records)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0] == {
        "genre": "pop",
        "id": "one",
        "image": "../img/a.png",
        "text": "t1",
        "audio": "../wav/a.wav",
    }
    assert lines[1]["image"] == ["../img/b.png", "../img/c.png"] and lines[1]["end_s"] == 3.5
    assert read_manifest(out) == records
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporaries left
