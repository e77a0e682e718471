"""Balanced training subsets (melfusion.data.balance) and the sampler that draws them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from melfusion.data.balance import balanced_cells
from melfusion.data.manifest import TripletRecord
from melfusion.errors import MelfusionInputError
from melfusion.training.loop import BalancedEpochSampler

MOODS = [("major", "fast"), ("major", "slow"), ("minor", "fast"), ("minor", "slow")]


def _records(table: dict[str, dict[tuple[str, str], int]]) -> list[TripletRecord]:
    out = []
    for group, cells in table.items():
        for (mode, tempo), count in cells.items():
            for _ in range(count):
                extra = {"pair": group, "mode": mode, "tempo_class": tempo}
                out.append(TripletRecord(f"r{len(out)}", [Path("x.png")], "t", Path("x.wav"), extra=extra))
    return out


def _mass(records, cells) -> dict[str, Counter]:
    per_group: dict[str, Counter] = {}
    for ix, size in zip(cells.cells, cells.sizes):
        r = records[ix[0]].extra
        c = per_group.setdefault(r["pair"], Counter())
        c[r["mode"]] += size
        c[r["tempo_class"]] += size
    return per_group


def test_each_diagonal_keeps_its_smaller_count_and_marginals_are_equal():
    # the held-out-cell case: one mood cell missing, so the other three predict the opposite mood
    table = {
        "held": {("major", "slow"): 7, ("minor", "fast"): 5, ("minor", "slow"): 9},
        "full": {("major", "fast"): 4, ("major", "slow"): 6, ("minor", "fast"): 3, ("minor", "slow"): 8},
    }
    records = _records(table)
    cells = balanced_cells(records, ["pair"], ["mode", "tempo_class"])
    sizes = {
        (records[ix[0]].extra["pair"], records[ix[0]].extra["mode"], records[ix[0]].extra["tempo_class"]): s
        for ix, s in zip(cells.cells, cells.sizes)
    }
    assert sizes[("held", "minor", "slow")] == 0  # its diagonal partner (major, fast) is absent
    assert sizes[("held", "major", "slow")] == sizes[("held", "minor", "fast")] == 5
    assert sizes[("full", "major", "fast")] == sizes[("full", "minor", "slow")] == 4
    assert sizes[("full", "major", "slow")] == sizes[("full", "minor", "fast")] == 3
    for mass in _mass(records, cells).values():
        assert mass["major"] == mass["minor"] and mass["fast"] == mass["slow"]
    assert cells.epoch_size == 10 + 14 and cells.dropped_groups == []


def test_a_group_missing_a_value_is_left_out_and_reported():
    table = {
        "one-mode": {("minor", "fast"): 5, ("minor", "slow"): 5},
        "ok": {("major", "fast"): 2, ("minor", "slow"): 2},
    }
    cells = balanced_cells(_records(table), ["pair"], ["mode", "tempo_class"])
    assert cells.dropped_groups == [("one-mode",)] and cells.num_groups == 2
    assert cells.epoch_size == 4


def test_one_balanced_field_and_no_groups():
    table = {"a": {("major", "fast"): 3, ("minor", "fast"): 1, ("major", "slow"): 2}}
    cells = balanced_cells(_records(table), [], ["mode"])
    mass = _mass(_records(table), cells)["a"]
    assert mass["major"] == mass["minor"] == 1  # 5 major items, 1 minor: one of each


def test_missing_field_and_bad_options_are_clear_errors():
    records = _records({"a": {("major", "fast"): 1}})
    with pytest.raises(MelfusionInputError, match="has no field 'genre'"):
        balanced_cells(records, ["genre"], ["mode"])
    with pytest.raises(MelfusionInputError, match="balance_over is empty"):
        balanced_cells(records, ["pair"], [])
    with pytest.raises(MelfusionInputError, match="share"):
        balanced_cells(records, ["mode"], ["mode"])


def test_sampler_draws_the_sizes_fresh_each_epoch_and_repeats_under_a_seed():
    cells, sizes = [[0, 1, 2, 3], [4, 5], [6, 7, 8]], [2, 2, 0]
    sampler = BalancedEpochSampler(cells, sizes, seed=3)
    epochs = []
    for epoch in range(6):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert len(drawn) == len(sampler) == 4 and len(set(drawn)) == 4
        assert sorted(i for i in drawn if i >= 4) == [4, 5] and sum(i < 4 for i in drawn) == 2
        epochs.append(drawn)
    assert len({tuple(sorted(e)) for e in epochs}) > 1  # the first cell's pair changes across epochs
    again = BalancedEpochSampler(cells, sizes, seed=3)
    again.set_epoch(4)
    assert list(again) == epochs[4]
    with pytest.raises(ValueError, match="size"):
        BalancedEpochSampler([[0]], [2])
