"""Balanced training subsets: within every group of records (e.g. the (genre, instrument) that a prompt
names), each value of the balanced fields (e.g. mode and tempo class) gets the same number of items, so
that the group — hence the text — carries no information about those fields.

Why: a split that holds out (genre, instrument, mode, tempo class) cells leaves each held-out pair's
other cells in training, so there the text predicts the *opposite* mood of the test cell (3 cells left:
2/3 of them differ from it in mode and 2/3 in tempo). A model fit to that learns it and then fights the
image on the test split. Balancing removes the correlation from what the model sees.

The per-cell sizes are the largest integer masses m_c <= n_c with equal totals for every value of every
balanced field (a small integer programme per group, scipy HiGHS). Values range over the whole
manifest, so a group that lacks a value of a field cannot be balanced and gets no items (reported).
For two binary fields this reduces to m(a, x) = m(b, y) and m(a, y) = m(b, x): each diagonal of the
2 x 2 table keeps the smaller of its two counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from melfusion.data.manifest import TripletRecord
from melfusion.errors import MelfusionInputError


@dataclass(frozen=True)
class BalancedCells:
    """`cells[i]` = indices of the records in one (group, values) cell; `sizes[i]` = how many of them an
    epoch draws. `dropped_groups` = groups that cannot be balanced (no item drawn)."""

    cells: list[list[int]]
    sizes: list[int]
    num_groups: int
    dropped_groups: list[tuple[str, ...]]

    @property
    def epoch_size(self) -> int:
        return int(sum(self.sizes))


def _field(record: TripletRecord, name: str, option: str) -> str:
    value = record.extra.get(name)
    if value is None:
        raise MelfusionInputError(
            f"{option}: record {record.id!r} has no field {name!r} (the manifest rows must carry it; "
            f"fields present: {sorted(record.extra)})"
        )
    return str(value)


def _group_sizes(counts: dict[tuple[str, ...], int], values: list[list[str]]) -> dict[tuple[str, ...], int]:
    """Largest integer m_c <= counts[c] with, for every field k, equal Σ m over each value of k."""
    cells = sorted(counts)
    rows, n = [], len(cells)
    for k, vals in enumerate(values):
        base = np.array([c[k] == vals[0] for c in cells], dtype=float)
        for v in vals[1:]:
            rows.append(np.array([c[k] == v for c in cells], dtype=float) - base)
    if not rows:
        return dict(counts)
    res = milp(
        c=-np.ones(n),
        constraints=LinearConstraint(np.array(rows), 0.0, 0.0),
        integrality=np.ones(n),
        bounds=Bounds(0, np.array([counts[c] for c in cells], dtype=float)),
    )
    if res.x is None:  # m = 0 is always feasible, so only a solver failure lands here
        raise RuntimeError(f"balancing failed: {res.message}")
    return {c: int(round(x)) for c, x in zip(cells, res.x)}


def balanced_cells(
    records: Sequence[TripletRecord], within: Sequence[str], over: Sequence[str]
) -> BalancedCells:
    """Group the records by the `within` fields and balance the `over` fields inside each group."""
    if not over:
        raise MelfusionInputError(
            "data.balance_over is empty: name the fields to balance, e.g. [mode, tempo_class]"
        )
    overlap = set(within) & set(over)
    if overlap:
        raise MelfusionInputError(f"data.balance_within and data.balance_over share {sorted(overlap)}")
    groups: dict[tuple[str, ...], dict[tuple[str, ...], list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(records):
        g = tuple(_field(r, f, "data.balance_within") for f in within)
        c = tuple(_field(r, f, "data.balance_over") for f in over)
        groups[g][c].append(i)
    values = [sorted({c[k] for cells in groups.values() for c in cells}) for k in range(len(over))]
    out_cells, sizes, dropped = [], [], []
    for g in sorted(groups):
        m = _group_sizes({c: len(ix) for c, ix in groups[g].items()}, values)
        if sum(m.values()) == 0:
            dropped.append(g)
        for c in sorted(groups[g]):
            out_cells.append(groups[g][c])
            sizes.append(m[c])
    return BalancedCells(out_cells, sizes, len(groups), dropped)
