"""The adherence benchmark's item selection: over the balanced selection the text cannot tell the mood."""

from __future__ import annotations

import importlib
import sys
from collections import Counter
from pathlib import Path

import pytest

from melfusion.recipes.embedded.synth.attributes import held_out_combinations

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
bench = importlib.import_module("bench_adherence")


@pytest.fixture(scope="module")
def test_rows() -> list[dict]:
    """Manifest-like rows of the real held-out test combinations (split seed 0), a few rows each."""
    rows = []
    combos = sorted(c for c, split in held_out_combinations(0).items() if split == "test")
    for k, (genre, instrument, mode, tclass) in enumerate(combos):
        for j in range(2 + k % 4):
            rows.append(
                {
                    "id": f"{k}-{j}",
                    "genre": genre,
                    "instrument": instrument,
                    "mode": mode,
                    "tempo_class": tclass,
                }
            )
    return rows


def records(items: list[dict]) -> list[dict]:
    return [{"labels": dict(r)} for r in items]


@pytest.mark.parametrize("n", [2, 24, 48])
def test_balanced_within_each_instrument(test_rows, n):
    items = bench.select_items(test_rows, n)
    assert len(items) == n
    assert len({r["id"] for r in items}) == n
    for instrument in {r["instrument"] for r in items}:
        mine = [r for r in items if r["instrument"] == instrument]
        assert sum(r["mode"] == "major" for r in mine) * 2 == len(mine)
        assert sum(r["tempo_class"] == "fast" for r in mine) * 2 == len(mine)
    groups = Counter((r["genre"], r["instrument"], r["mode"], r["tempo_class"]) for r in items)
    assert max(groups.values()) <= max(1, -(-n // 16))
    predictable = bench.text_predictable(records(items))
    assert predictable["instrument"] == {"tempo_class": 0.5, "mode": 0.5}
    assert bench.select_items(test_rows, n) == items  # deterministic


def test_balanced_beats_cells_on_text_leak(test_rows):
    # the held-out split makes the instrument and genre predictive over the round-robin selection
    cells = bench.text_predictable(records(bench.select_items(test_rows, 48, "cells")))
    balanced = bench.text_predictable(records(bench.select_items(test_rows, 48, "balanced")))
    for attr in ("tempo_class", "mode"):
        assert cells["instrument"][attr] > 0.6
        assert balanced["instrument"][attr] == 0.5
        assert balanced["genre"][attr] <= 0.6  # 8 genres, 17 instruments: near, not exactly, balanced


def test_bad_sizes_are_named(test_rows):
    with pytest.raises(ValueError, match="even n"):
        bench.select_items(test_rows, 3)
    with pytest.raises(ValueError, match="no balanced selection of 100000"):
        bench.select_items(test_rows, 100_000)
    with pytest.raises(ValueError, match="unknown selection"):
        bench.select_items(test_rows, 4, "random")
    with pytest.raises(SystemExit):
        bench.parse_args(["--n", "5"])
