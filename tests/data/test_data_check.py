from __future__ import annotations

import json

import pytest
from _data_helpers import build_folder, write_jsonl, write_png, write_sine

from melfusion.cli import main
from melfusion.data.check import check_manifest
from melfusion.data.manifest import TripletRecord, read_manifest, read_manifest_with_problems


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("triplets")
    return build_folder(root)


def test_report_counts_every_kind_without_stopping(folder):
    records, row_problems = read_manifest_with_problems(folder)
    report = check_manifest(records, progress=False, row_problems=row_problems)
    assert report.num_items == 10
    assert [r.id for r in report.usable] == ["good1", "good2", "good3"]
    assert report.counts == {
        "missing": 2,  # nope.wav, nope.png
        "unreadable": 2,  # empty.wav, text.wav
        "corrupt": 2,  # corrupt.png, referenced by two items
        "silent": 1,
        "too_short": 1,
        "invalid_row": 1,  # no text
    }
    assert report.file_counts["corrupt"] == 1
    reasons = report.reasons
    assert reasons["missing_audio"] == ["audio missing: no such file"]
    assert reasons["empty"] == ["audio unreadable: empty file (0 bytes)"]
    assert "not audio soundfile reads" in reasons["text_as_wav"][0]
    assert reasons["silent"][0].startswith("audio silent: digital silence")
    assert reasons["short"] == ["audio too short: 0.25 s < 1 s"]
    assert "PNG data does not decode" in reasons["corrupt_image"][0]
    # an item with one good and one corrupt image stays usable, with the good one only
    good3 = next(r for r in report.usable if r.id == "good3")
    assert [p.name for p in good3.images] == ["b.png"]
    assert json.loads(json.dumps(report.to_dict()))["num_unusable"] == 7
    assert report.usable_seconds == pytest.approx(5.5)
    assert [n.item_id for n in report.notes] == []  # good2 is 22.05 kHz, above 16 kHz
    high = check_manifest(records, progress=False, sample_rate=44100)
    assert {n.item_id for n in high.notes} == {"good1", "good2", "good3"} and high.num_usable == 3


def test_thresholds_segments_and_truncation(tmp_path):
    quiet = write_sine(tmp_path / "quiet.wav", 2.0, amp=0.001)  # RMS about -63 dBFS
    long = write_sine(tmp_path / "long.wav", 3.0)
    full = write_sine(tmp_path / "full.wav", 2.0)
    data = full.read_bytes()
    (tmp_path / "trunc.wav").write_bytes(data[: len(data) // 2])
    img = write_png(tmp_path / "a.png")

    def rec(name, audio, start=None, end=None):
        return TripletRecord(name, [img], "t", audio, start, end)

    records = [
        rec("quiet", quiet),
        rec("segment_ok", long, 1.0, 2.5),
        rec("segment_short", long, 2.5),
        rec("past_end", long, 10.0),
        rec("trunc", tmp_path / "trunc.wav"),
    ]
    report = check_manifest(records, progress=False, min_seconds=1.0, silence_dbfs=-60)
    reasons = report.reasons
    assert [r.id for r in report.usable] == ["segment_ok"]
    assert "RMS -63" in reasons["quiet"][0]
    assert reasons["segment_short"] == ["audio too short: 0.50 s < 1 s"]
    assert "start_s 10 is past the end of the 3.00 s file" in reasons["past_end"][0]
    assert "audio corrupt: truncated" in reasons["trunc"][0]
    lenient = check_manifest(records[:3], progress=False, min_seconds=0.4, silence_dbfs=-70)
    assert lenient.num_usable == 3


def test_cli_check_summary_json_and_usable_manifest(folder, tmp_path, capsys):
    out_json, out_manifest = tmp_path / "report.json", tmp_path / "clean.jsonl"
    code = main(
        [
            "data",
            "check",
            str(folder),
            "--no-progress",
            "--json",
            str(out_json),
            "--write-usable",
            str(out_manifest),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "3 of 10 item(s) usable" in printed
    assert "too short" in printed and "invalid row" in printed
    report = json.loads(out_json.read_text())
    assert report["counts"]["missing"] == 2 and report["usable_ids"] == ["good1", "good2", "good3"]
    assert len(report["problems"]) == 9
    clean = read_manifest(out_manifest)
    assert [r.id for r in clean] == ["good1", "good2", "good3"]
    assert clean[0].audio == folder.parent / "wav" / "good1.wav"


def test_cli_check_no_usable_item_exits_2(tmp_path, capsys):
    write_sine(tmp_path / "silent.wav", 2.0, amp=0.0)
    write_png(tmp_path / "a.png")
    m = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"image": "a.png", "text": "t", "audio": "silent.wav"},
            {"image": "a.png", "text": "t", "audio": "gone.wav"},
        ],
    )
    out_json = tmp_path / "r.json"
    assert main(["data", "check", str(m), "--no-progress", "--json", str(out_json)]) == 2
    captured = capsys.readouterr()
    assert "0 of 2 item(s) usable" in captured.out
    assert "melfusion data: error: none of the 2 item(s)" in captured.err
    assert "1 missing, 1 silent" in captured.err
    assert json.loads(out_json.read_text())["num_usable"] == 0  # the report is written anyway


def test_cli_check_reports_a_malformed_line_and_goes_on(tmp_path, capsys):
    m = tmp_path / "m.jsonl"
    m.write_text('{"image": "a.png", "text": "t", "audio": "a.wav"}\nnot json\n')
    assert main(["data", "check", str(m), "--no-progress"]) == 2  # nothing usable: a.wav is missing too
    out = capsys.readouterr().out
    assert "m.jsonl:2: not valid JSON" in out and "a.wav" in out  # both problems listed, not just the first


def test_cli_convert(tmp_path, capsys):
    (tmp_path / "melbench.csv").write_text(
        "youtube_video_id,start_second,end_second,Annotation,image_path\nv1,0,10,Soft harp.,v1.jpg\n"
    )
    out = tmp_path / "out" / "train.jsonl"
    assert main(["data", "convert", str(tmp_path / "melbench.csv"), str(out)]) == 0
    (r,) = read_manifest(out)
    assert (r.id, r.text, r.images, r.extra["youtube_end_s"]) == (
        "v1_0_10",
        "Soft harp.",
        [tmp_path / "v1.jpg"],
        10.0,
    )
