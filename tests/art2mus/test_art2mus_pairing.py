"""Artwork ↔ music pairing: the paper's greedy rule, the optimum, blocked similarity, the folder tool."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from _art2mus_helpers import write_image_folder, write_music_folder

from melfusion.data.manifest import read_manifest
from melfusion.errors import MelfusionInputError
from melfusion.pairing.assign import (
    PairingStats,
    greedy_dense,
    greedy_pairing,
    optimal_dense,
    optimal_pairing,
    pair_embeddings,
)
from melfusion.pairing.similarity import candidate_graph, dense_similarity, normalize
from melfusion.pairing.tool import pair_folders


def _unit(rng, n, d=8):
    return normalize(rng.standard_normal((n, d)))


def _brute_force(sim: np.ndarray) -> tuple[float, list[int]]:
    """(best total, its columns) over every one-to-one assignment of the rows."""
    n, m = sim.shape
    return max(
        (sum(sim[i, c] for i, c in enumerate(cols)), list(cols))
        for cols in itertools.permutations(range(m), n)
    )


def test_greedy_matches_a_hand_run_of_the_paper_rule():
    sim = np.array(
        [
            [0.90, 0.80, 0.10, 0.00],
            [0.95, 0.70, 0.20, 0.10],
            [0.30, 0.85, 0.60, 0.50],
        ]
    )
    # by hand: artwork 0 takes track 0 (0.90); artwork 1's best, track 0, is taken → track 1 (0.70);
    # artwork 2's best, track 1, is taken → track 2 (0.60). Total 2.20.
    assert greedy_dense(sim).tolist() == [0, 1, 2]
    # the optimum gives track 0 to artwork 1 instead: 0.80 + 0.95 + 0.60 = 2.35
    assert optimal_dense(sim).tolist() == [1, 0, 2]
    assert _brute_force(sim) == (pytest.approx(2.35), [1, 0, 2])
    # ties go to the lower index, as np.argmax does
    assert greedy_dense(np.array([[0.5, 0.5, 0.1], [0.5, 0.5, 0.4]])).tolist() == [0, 1]


@pytest.mark.parametrize(("n", "m"), [(5, 5), (5, 7), (6, 6)])
def test_optimal_equals_brute_force(n, m):
    rng = np.random.default_rng(n * 10 + m)
    a, b = _unit(rng, n), _unit(rng, m)
    best, cols = _brute_force(dense_similarity(a, b))
    dense = optimal_pairing(a, b)  # Hungarian on the dense matrix
    sparse = optimal_pairing(a, b, k=m, dense_max_entries=0)  # LAPJVsp, complete candidate graph
    assert dense.solver == "hungarian-dense" and sparse.solver == "sparse-lapjvsp"
    assert dense.cols.tolist() == cols and sparse.cols.tolist() == cols
    assert dense.total == pytest.approx(best, abs=1e-6)


@pytest.mark.parametrize(("n", "m", "k"), [(40, 40, 1), (120, 150, 3), (300, 300, 5)])
def test_blocked_greedy_equals_the_dense_rule(n, m, k):
    rng = np.random.default_rng(n + m + k)
    a, b = _unit(rng, n), _unit(rng, m)
    b[m // 2] = b[0]  # an exact duplicate track: ties must still go to the lower index
    res = greedy_pairing(a, b, k=k, block_bytes=4 * m * 7)  # 7 rows per block, refills forced by small k
    assert res.solver == "greedy-candidates" and res.info["refills"] > 0
    np.testing.assert_array_equal(res.cols, greedy_dense(dense_similarity(a, b)))


@pytest.mark.parametrize(("n", "m", "dense_max"), [(60, 60, 0), (80, 100, 0), (50, 70, 10**9)])
def test_pairings_are_one_to_one_and_optimal_beats_greedy(n, m, dense_max):
    rng = np.random.default_rng(n * m)
    a, b = _unit(rng, n), _unit(rng, m)
    results = pair_embeddings(a, b, "optimal", k=4, dense_max_entries=dense_max, block_bytes=4 * m * 9)
    for r in results.values():
        assert len(r.cols) == n and len(np.unique(r.cols)) == n and r.cols.max() < m
        np.testing.assert_allclose(r.similarities, dense_similarity(a, b)[np.arange(n), r.cols], atol=1e-5)
    assert results["optimal"].total >= results["greedy"].total - 1e-9
    if dense_max == 0:
        assert results["optimal"].info["upper_bound"] >= results["optimal"].total - 1e-9


def test_candidate_graph_in_blocks_equals_the_dense_top_k():
    rng = np.random.default_rng(0)
    a, b = _unit(rng, 53), _unit(rng, 41)
    sim = dense_similarity(a, b)
    g = candidate_graph(a, b, 5, columns=True, block_bytes=4 * 41 * 4)  # 4 rows per block
    np.testing.assert_array_equal(g.row_indices, np.argsort(-sim, axis=1, kind="stable")[:, :5])
    top_cols = np.sort(np.argsort(-sim, axis=0, kind="stable")[:5], axis=0)
    np.testing.assert_array_equal(np.sort(g.col_indices, axis=0), top_cols)


def test_table1_statistics():
    s = PairingStats.of(np.array([0.125, 0.25, 0.375, 0.75]))  # exact in binary: the mean is 0.375
    assert (s.count, s.max, s.min, s.mean, s.total) == (4, 0.75, 0.125, 0.375, 1.5)
    assert (s.above_mean, s.below_mean) == (1, 2)  # the pair equal to the mean is neither


def test_count_and_dimension_mismatches_are_clear_errors():
    rng = np.random.default_rng(1)
    with pytest.raises(MelfusionInputError, match="5 artworks but only 4 music tracks"):
        greedy_pairing(_unit(rng, 5), _unit(rng, 4))
    with pytest.raises(MelfusionInputError, match="8-d but music embeddings are 6-d"):
        optimal_pairing(_unit(rng, 3), _unit(rng, 4, 6))
    with pytest.raises(MelfusionInputError, match="all zeros"):
        normalize(np.zeros((2, 3)))
    with pytest.raises(MelfusionInputError, match="unknown pairing method"):
        pair_embeddings(_unit(rng, 2), _unit(rng, 2), "random")


# ------------------------------------------------------------------------------------- folder tool


def test_pair_folders_writes_a_one_to_one_manifest_and_stats(tmp_path):
    write_image_folder(tmp_path / "art", 5)
    write_music_folder(tmp_path / "music", 7)
    (tmp_path / "art" / "README.txt").write_text("not an artwork")  # ignored, with a warning
    (tmp_path / "art" / "art00.png").rename(tmp_path / "art" / "art01.jpg")  # same stem as art01.png
    report = pair_folders(
        tmp_path / "art", tmp_path / "music", tmp_path / "out" / "pairs.jsonl", method="optimal",
        encoder="tiny", progress=False,
    )  # fmt: skip
    records = read_manifest(report.manifest)
    assert len(records) == 5 and len({r.audio for r in records}) == 5
    assert {r.id for r in records} == {"art01.jpg", "art01.png", "art02", "art03", "art04"}
    assert all(r.text == "Music representing the content of this artwork" for r in records)
    assert all(r.audio.is_file() and r.image.is_file() for r in records)
    stats = json.loads(report.stats_path.read_text())
    assert stats["method"] == "optimal" and stats["pairs"] == 5
    assert set(stats["results"]) == {"greedy", "optimal"}
    assert stats["results"]["optimal"]["total"] >= stats["results"]["greedy"]["total"] - 1e-9
    assert {"max", "min", "mean", "above_mean", "below_mean"} <= set(stats["table1"])
    assert stats["embeddings"] == {"cached": 0, "computed": 12}
    again = pair_folders(
        tmp_path / "art", tmp_path / "music", tmp_path / "out" / "pairs.jsonl", encoder="tiny", progress=False
    )
    assert again.stats["embeddings"] == {"cached": 12, "computed": 0}  # the cache makes reruns cheap


def test_bad_image_stops_with_a_clear_error_and_keeps_partial_progress(tmp_path):
    write_image_folder(tmp_path / "art", 4)
    write_music_folder(tmp_path / "music", 6)
    (tmp_path / "art" / "art02.png").write_text("this is not a PNG")  # sorted third
    out = tmp_path / "out" / "pairs.jsonl"
    with pytest.raises(MelfusionInputError) as err:
        pair_folders(tmp_path / "art", tmp_path / "music", out, encoder="tiny", batch_size=1, progress=False)
    msg = str(err.value)
    assert "art02.png" in msg and "not an image file" in msg and "--skip-bad" in msg
    assert "2 image embedding(s) done so far are cached" in msg
    assert not out.exists()
    (tmp_path / "art" / "art02.png").unlink()
    report = pair_folders(tmp_path / "art", tmp_path / "music", out, encoder="tiny", progress=False)
    assert report.images.cached == 2 and report.images.computed == 1  # resumed from the cache


def test_skip_bad_leaves_unusable_files_out(tmp_path):
    write_image_folder(tmp_path / "art", 3)
    write_music_folder(tmp_path / "music", 4)
    (tmp_path / "art" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "music" / "000" / "noise.wav").write_bytes(b"RIFF not really")
    report = pair_folders(
        tmp_path / "art",
        tmp_path / "music",
        tmp_path / "p.jsonl",
        encoder="tiny",
        skip_bad=True,
        progress=False,
    )
    assert len(report.records) == 3
    assert [p.name for p, _ in report.images.skipped] == ["broken.jpg"]
    assert [p.name for p, _ in report.music.skipped] == ["noise.wav"]


def test_folder_input_errors(tmp_path):
    write_image_folder(tmp_path / "art", 3)
    write_music_folder(tmp_path / "music", 2)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "p.jsonl"
    with pytest.raises(MelfusionInputError, match=r"no image files in .*texts.*1 other file"):
        pair_folders(tmp_path / "texts", tmp_path / "music", out, encoder="tiny", progress=False)
    with pytest.raises(MelfusionInputError, match=r"no music files in .*empty.*it is empty"):
        pair_folders(tmp_path / "art", tmp_path / "empty", out, encoder="tiny", progress=False)
    with pytest.raises(MelfusionInputError, match="3 artworks .* but only 2 music tracks"):
        pair_folders(tmp_path / "art", tmp_path / "music", out, encoder="tiny", progress=False)
    with pytest.raises(MelfusionInputError, match="music folder not found"):
        pair_folders(tmp_path / "art", tmp_path / "nope", out, encoder="tiny", progress=False)
    write_music_folder(tmp_path / "music3", 3)
    with pytest.raises(MelfusionInputError, match="unknown encoder"):
        pair_folders(tmp_path / "art", tmp_path / "music3", out, encoder="clap", progress=False)


def test_pair_command(tmp_path, capsys):
    from melfusion.cli import main

    write_image_folder(tmp_path / "art", 3)
    write_music_folder(tmp_path / "music", 3)
    args = ["pair", "--images", str(tmp_path / "art"), "--music", str(tmp_path / "music")]
    args += ["--out", str(tmp_path / "p.jsonl"), "--encoder", "melfusion.pairing.encoders:TinyPairingEncoder"]
    assert main([*args, "--method", "greedy", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "optimal / greedy total similarity" in out and "wrote 3 pairs (greedy)" in out
    (tmp_path / "music" / "000" / "track00.wav").unlink()
    assert main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("melfusion pair: error: 3 artworks")
