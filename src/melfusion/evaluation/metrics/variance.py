"""Share of a feature's variance that one categorical label explains (between-group / total sum of squares).

Used to ask how much a denoising loss can reward knowing an attribute: the optimal x0 estimate at high noise
is the conditional mean E[x0 | condition], so an attribute whose per-class means barely differ gives the loss
little to gain from it, whatever route (text or image) carries it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ExplainedVariance:
    r2: float  # between-class sum of squares / total, summed over every feature dimension
    null: float  # its expectation when the label is unrelated to the features: (k - 1) / (n - 1)
    num_classes: int

    @property
    def excess(self) -> float:
        """R² above what k random classes would explain."""
        return self.r2 - self.null


def explained_variance(features: np.ndarray, labels: Sequence[Hashable]) -> ExplainedVariance:
    """features (n, ...) — each row one item, flattened to (n, d); labels: n class labels.

    R² = Σ_c n_c ‖μ_c − μ‖² / Σ_i ‖x_i − μ‖² (the one-way ANOVA η², pooled over dimensions)."""
    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    if n < 2 or len(labels) != n:
        raise ValueError(f"need >= 2 rows and one label per row, got {n} rows and {len(labels)} labels")
    x = x.reshape(n, -1)
    mean = x.mean(axis=0)
    total = float(((x - mean) ** 2).sum())
    classes: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        classes.setdefault(label, []).append(i)
    between = sum(len(rows) * float(((x[rows].mean(axis=0) - mean) ** 2).sum()) for rows in classes.values())
    k = len(classes)
    return ExplainedVariance(between / total if total > 0 else 0.0, (k - 1) / (n - 1), k)
