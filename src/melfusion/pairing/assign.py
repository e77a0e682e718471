"""One-to-one artwork ↔ track assignment on cosine similarities: the paper's greedy rule and the optimum.

- `greedy`: Art2Mus §3.2 — artworks in order, each takes its most similar track not taken yet. Exact:
  from each artwork's top-k candidate list (best first) it takes the first unused track; when every
  candidate is used, the next `refill_rows` artworks get fresh top-k lists over the unused tracks
  (one blocked product). A list computed earlier stays exact later: the unused set only shrinks, so the
  first unused entry of a top-k list over a superset is the best unused track.
- `optimal`: maximise the total similarity. Hungarian (`scipy.optimize.linear_sum_assignment`) on the
  dense matrix when n·m <= `dense_max_entries`; otherwise LAPJVsp
  (`scipy.sparse.csgraph.min_weight_full_bipartite_matching`) on a sparse candidate graph: each
  artwork's top-k tracks (plus each track's top-k artworks when the graph has them) and the greedy
  matching's own edges. The greedy
  edges guarantee a full matching exists and that the optimum found is >= the greedy total; the result is
  optimal over that graph, and `info["upper_bound"]` (min of the row-max and column-max sums) bounds the
  unrestricted optimum. If the solver still fails, the greedy matching is returned (logged).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from melfusion.errors import MelfusionInputError
from melfusion.pairing.similarity import (
    DEFAULT_BLOCK_BYTES,
    CandidateGraph,
    candidate_graph,
    check_pair_shapes,
    dense_similarity,
    pair_similarities,
    topk_among,
)

logger = logging.getLogger(__name__)

METHODS = ("greedy", "optimal")
DEFAULT_K = 32
DEFAULT_DENSE_MAX_ENTRIES = 16_000_000  # 4000 × 4000: a 128 MB float64 matrix for the Hungarian solver


@dataclass
class PairingStats:
    """The paper's Table 1 for one pairing: similarity max/min/mean and pairs above/below the mean."""

    count: int
    total: float
    max: float
    min: float
    mean: float
    above_mean: int
    below_mean: int

    @classmethod
    def of(cls, similarities: np.ndarray) -> PairingStats:
        s = np.asarray(similarities, dtype=np.float64)
        if s.size == 0:
            return cls(0, 0.0, float("nan"), float("nan"), float("nan"), 0, 0)
        mean = float(s.mean())
        return cls(
            count=int(s.size),
            total=float(s.sum()),
            max=float(s.max()),
            min=float(s.min()),
            mean=mean,
            above_mean=int((s > mean).sum()),
            below_mean=int((s < mean).sum()),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PairingResult:
    """cols[i] = the track paired with artwork i; similarities[i] = their cosine similarity."""

    method: str
    solver: str
    cols: np.ndarray
    similarities: np.ndarray
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return float(np.sum(self.similarities, dtype=np.float64))

    @property
    def stats(self) -> PairingStats:
        return PairingStats.of(self.similarities)

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "solver": self.solver,
            "seconds": round(self.seconds, 4),
            **self.stats.to_dict(),
            **self.info,
        }


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise MelfusionInputError(f"unknown pairing method {method!r}; choose greedy or optimal")
    return method


# ------------------------------------------------------------------------------------------- greedy


def greedy_dense(sim: np.ndarray) -> np.ndarray:
    """The paper's rule on a dense (n, m) matrix, literally: row by row, argmax over unused columns."""
    sim = np.asarray(sim, dtype=np.float64)
    n, m = sim.shape
    if n > m:
        raise MelfusionInputError(f"{n} artworks but only {m} tracks: cannot pair without replacement")
    used = np.zeros(m, dtype=bool)
    cols = np.empty(n, dtype=np.int64)
    for i in range(n):
        j = int(np.argmax(np.where(used, -np.inf, sim[i])))
        cols[i] = j
        used[j] = True
    return cols


def greedy_from_candidates(
    a: np.ndarray,
    b: np.ndarray,
    graph: CandidateGraph,
    *,
    refill_rows: int = 256,
    refill_k: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Greedy columns from per-row sorted candidate lists, refilling exhausted rows (see module doc)."""
    n, m = a.shape[0], b.shape[0]
    cand = graph.row_indices
    refill_k = int(refill_k or max(2 * graph.k, 32))
    used = np.zeros(m, dtype=bool)
    cols = np.empty(n, dtype=np.int64)
    overrides: dict[int, np.ndarray] = {}
    refills = refilled_rows = 0
    report_every = 4096
    for i in range(n):
        row = overrides.pop(i, None)
        if row is None:
            row = cand[i]
        free = ~used[row]
        if free.any():
            j = int(row[int(free.argmax())])
        else:  # every candidate taken: fresh lists over the unused tracks for this row and the next ones
            hi = min(n, i + max(1, refill_rows))
            fresh, _ = topk_among(a[i:hi], b, ~used, refill_k)
            for r in range(i + 1, hi):
                overrides[r] = fresh[r - i]
            j = int(fresh[0, 0])
            refills += 1
            refilled_rows += hi - i
        cols[i] = j
        used[j] = True
        if progress is not None and (i + 1) % report_every == 0:
            progress(report_every)
    if progress is not None and n % report_every:
        progress(n % report_every)
    return cols, {"k": graph.k, "refills": refills, "refilled_rows": refilled_rows}


def greedy_pairing(
    a: np.ndarray,
    b: np.ndarray,
    *,
    k: int = DEFAULT_K,
    graph: CandidateGraph | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    dense_max_entries: int = 0,
    progress: Callable[[int], None] | None = None,
) -> PairingResult:
    """Art2Mus's greedy pairing of normalised embeddings a (n, d) with b (m, d), n <= m.

    With n·m <= `dense_max_entries` it runs the literal dense rule (`greedy_dense`); otherwise the
    blocked candidate version, which gives the same pairs.
    """
    check_pair_shapes(a, b)
    t0 = time.perf_counter()
    n, m = a.shape[0], b.shape[0]
    if n * m <= dense_max_entries:
        cols, info, solver = greedy_dense(dense_similarity(a, b)), {}, "greedy-dense"
    else:
        if graph is None:
            graph = candidate_graph(a, b, k, block_bytes=block_bytes)
        cols, info = greedy_from_candidates(a, b, graph, progress=progress)
        solver = "greedy-candidates"
    sims = pair_similarities(a, b, np.arange(n), cols)
    return PairingResult("greedy", solver, cols, sims, time.perf_counter() - t0, info)


# ------------------------------------------------------------------------------------------ optimal


def optimal_dense(sim: np.ndarray) -> np.ndarray:
    """Maximum-total one-to-one assignment of the rows of a dense (n, m) matrix (Hungarian)."""
    sim = np.asarray(sim, dtype=np.float64)
    if sim.shape[0] > sim.shape[1]:
        raise MelfusionInputError(
            f"{sim.shape[0]} artworks but only {sim.shape[1]} tracks: cannot pair without replacement"
        )
    rows, cols = linear_sum_assignment(sim, maximize=True)
    out = np.empty(sim.shape[0], dtype=np.int64)
    out[rows] = cols
    return out


def sparse_candidate_edges(
    graph: CandidateGraph, n: int, m: int, extra_cols: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Unique (row, col) edges: row top-k ∪ column top-k ∪ (i, extra_cols[i])."""
    rows = [np.repeat(np.arange(n, dtype=np.int64), graph.k)]
    cols = [graph.row_indices.reshape(-1)]
    if graph.col_indices is not None:
        kc = graph.col_indices.shape[0]
        rows.append(graph.col_indices.T.reshape(-1))  # (m, kc) → artwork per edge
        cols.append(np.repeat(np.arange(m, dtype=np.int64), kc))
    if extra_cols is not None:
        rows.append(np.arange(n, dtype=np.int64))
        cols.append(np.asarray(extra_cols, dtype=np.int64))
    r, c = np.concatenate(rows), np.concatenate(cols)
    keys = np.unique(r * np.int64(m) + c)
    return keys // m, keys % m


def optimal_pairing(
    a: np.ndarray,
    b: np.ndarray,
    *,
    k: int = DEFAULT_K,
    graph: CandidateGraph | None = None,
    greedy: PairingResult | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    dense_max_entries: int = DEFAULT_DENSE_MAX_ENTRIES,
    progress: Callable[[int], None] | None = None,
) -> PairingResult:
    """Maximum-total-similarity one-to-one pairing of a (n, d) with b (m, d), n <= m (see module doc)."""
    check_pair_shapes(a, b)
    t0 = time.perf_counter()
    n, m = a.shape[0], b.shape[0]
    if n * m <= dense_max_entries:
        cols = optimal_dense(dense_similarity(a, b))
        sims = pair_similarities(a, b, np.arange(n), cols)
        return PairingResult("optimal", "hungarian-dense", cols, sims, time.perf_counter() - t0)
    if graph is None:
        graph = candidate_graph(a, b, k, block_bytes=block_bytes, progress=progress)
    if greedy is None:
        greedy = greedy_pairing(a, b, graph=graph)
    rows, cols = sparse_candidate_edges(graph, n, m, extra_cols=greedy.cols)
    weights = pair_similarities(a, b, rows, cols) + 2.0  # cosine + 2 > 0: no edge weighs zero
    matrix = sp.csr_matrix((weights, (rows, cols)), shape=(n, m))
    info: dict[str, Any] = {"k": graph.k, "edges": int(matrix.nnz)}
    row_max = float(graph.row_values[:, 0].astype(np.float64).sum())
    if graph.col_values is not None and n == m:
        info["upper_bound"] = min(row_max, float(graph.col_values[0].astype(np.float64).sum()))
    else:
        info["upper_bound"] = row_max
    try:
        r, c = min_weight_full_bipartite_matching(matrix, maximize=True)
    except ValueError as err:  # cannot happen with the greedy edges in the graph; keep a safe answer
        logger.warning("sparse assignment failed (%s); returning the greedy pairing", err)
        info["fallback"] = "greedy"
        return PairingResult(
            "optimal", "greedy-fallback", greedy.cols, greedy.similarities, time.perf_counter() - t0, info
        )
    out = np.empty(n, dtype=np.int64)
    out[r] = c
    sims = pair_similarities(a, b, np.arange(n), out)
    return PairingResult("optimal", "sparse-lapjvsp", out, sims, time.perf_counter() - t0, info)


# --------------------------------------------------------------------------------------------- both


def pair_embeddings(
    a: np.ndarray,
    b: np.ndarray,
    method: str = "greedy",
    *,
    compare: bool = True,
    k: int = DEFAULT_K,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    dense_max_entries: int = DEFAULT_DENSE_MAX_ENTRIES,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, PairingResult]:
    """{"greedy": ..., "optimal": ...}: the chosen method, plus the other when `compare` (one shared
    similarity pass). `progress(stage, advance, total)` reports the pass and the greedy walk."""
    _check_method(method)
    check_pair_shapes(a, b)
    n, m = a.shape[0], b.shape[0]
    want_optimal = method == "optimal" or compare
    sparse = n * m > dense_max_entries

    def tick(stage: str, total: int) -> Callable[[int], None] | None:
        return None if progress is None else (lambda adv: progress(stage, adv, total))

    graph = None
    if sparse:
        t0 = time.perf_counter()
        graph = candidate_graph(a, b, k, block_bytes=block_bytes, progress=tick("similarity", n))
        pass_seconds = time.perf_counter() - t0
    results: dict[str, PairingResult] = {}
    greedy = greedy_pairing(
        a, b, k=k, graph=graph, dense_max_entries=dense_max_entries, progress=tick("greedy", n)
    )
    if sparse:
        greedy.info["similarity_pass_seconds"] = round(pass_seconds, 4)
    results["greedy"] = greedy
    if want_optimal:
        results["optimal"] = optimal_pairing(
            a, b, k=k, graph=graph, greedy=greedy, dense_max_entries=dense_max_entries
        )
    return results
