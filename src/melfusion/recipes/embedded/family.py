"""A small trained instrument-family classifier for the adherence benchmark's family probe.

`LogisticFamilyClassifier` is multinomial logistic regression on standardised `timbre_features`
(88 numbers per clip), fit with L2 regularisation by full-batch L-BFGS (deterministic). It satisfies
`melfusion.recipes.embedded.probes.FamilyClassifier`, so `estimate_family(audio, sr, clf)` works with it.
`train_family_classifier(manifest)` fits one on a synthetic corpus manifest's `family` labels.

Saved as safetensors: tensors `weight` (K, D), `bias` (K,), `mean` (D,), `std` (D,); metadata `families`
(JSON list, the order of `predict_proba`), `sample_rate`, `l2`, `format`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.optimize
import soxr
from safetensors import safe_open
from safetensors.numpy import save_file

from melfusion.recipes.embedded.probes import timbre_features
from melfusion.utils.files import atomic_path

__all__ = ["FEATURE_DIM", "LogisticFamilyClassifier", "train_family_classifier"]

FEATURE_DIM = 88  # len(timbre_features(...))
FORMAT = "melfusion-family-logistic-v1"


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class LogisticFamilyClassifier:
    """Multinomial logistic regression on standardised timbre features.

    `l2`: weight of ½·‖W‖² added to the mean cross-entropy (the bias is not penalised). `sample_rate`:
    the rate features are computed at; `predict_proba` resamples other rates to it.
    """

    def __init__(self, l2: float = 1e-3, max_iter: int = 1000, sample_rate: int = 16000):
        if not (np.isfinite(l2) and l2 >= 0):
            raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter!r}")
        self.l2 = float(l2)
        self.max_iter = int(max_iter)
        self.sample_rate = int(sample_rate)
        self.families: tuple[str, ...] = ()
        self.weight: np.ndarray | None = None  # (K, D)
        self.bias: np.ndarray | None = None  # (K,)
        self.mean: np.ndarray | None = None  # (D,)
        self.std: np.ndarray | None = None  # (D,)

    # ------------------------------------------------------------------------------------- features
    @property
    def fitted(self) -> bool:
        return self.weight is not None

    def features(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """(D,) timbre features of one (T,) clip at the classifier's sample rate."""
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim != 1 or x.size == 0:
            raise ValueError(f"audio must be a non-empty mono (T,) array, got shape {x.shape}")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        if sample_rate != self.sample_rate:
            x = soxr.resample(x, int(sample_rate), self.sample_rate).astype(np.float32)
        feats = timbre_features(x, self.sample_rate)
        if not np.isfinite(feats).all():
            raise ValueError("timbre features are not finite (is the audio valid?)")
        return feats

    # ------------------------------------------------------------------------------------------ fit
    def fit(
        self, audios: Sequence[np.ndarray], sample_rate: int, labels: Sequence[str]
    ) -> LogisticFamilyClassifier:
        """Fit on clips and their family names; returns self."""
        if len(audios) != len(labels):
            raise ValueError(f"{len(audios)} clips but {len(labels)} labels")
        feats = np.stack([self.features(a, sample_rate) for a in audios]) if len(audios) else None
        return self.fit_features(feats, labels)

    def fit_features(self, features: np.ndarray | None, labels: Sequence[str]) -> LogisticFamilyClassifier:
        """Fit on precomputed (N, D) `timbre_features` rows; returns self."""
        if features is None or len(labels) == 0:
            raise ValueError("no training clips")
        X = np.asarray(features, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != FEATURE_DIM or X.shape[0] != len(labels):
            raise ValueError(f"features must be ({len(labels)}, {FEATURE_DIM}), got {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("features contain NaN or infinite values")
        families = tuple(sorted({str(label) for label in labels}))
        if len(families) < 2:
            raise ValueError(f"need at least 2 families to classify, got {families}")
        index = {f: i for i, f in enumerate(families)}
        y = np.array([index[str(label)] for label in labels])
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        std = np.where(std > 1e-8, std, 1.0)
        Z = (X - mean) / std  # (N, D)
        n, d = Z.shape
        k = len(families)
        onehot = np.eye(k)[y]  # (N, K)

        def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            W = theta[: k * d].reshape(k, d)
            b = theta[k * d :]
            logits = Z @ W.T + b  # (N, K)
            shifted = logits - logits.max(axis=1, keepdims=True)
            log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            log_p = shifted - log_norm
            loss = -(onehot * log_p).sum() / n + 0.5 * self.l2 * np.sum(W * W)
            err = (np.exp(log_p) - onehot) / n  # (N, K)
            grad_w = err.T @ Z + self.l2 * W
            grad_b = err.sum(axis=0)
            return float(loss), np.concatenate([grad_w.ravel(), grad_b])

        result = scipy.optimize.minimize(
            loss_and_grad,
            np.zeros(k * d + k),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter, "gtol": 1e-6},
        )
        theta = result.x
        self.families = families
        self.weight = theta[: k * d].reshape(k, d).astype(np.float32)
        self.bias = theta[k * d :].astype(np.float32)
        self.mean = mean.astype(np.float32)
        self.std = std.astype(np.float32)
        return self

    # -------------------------------------------------------------------------------------- predict
    def predict_proba_features(self, features: np.ndarray) -> np.ndarray:
        """(N, D) or (D,) features → (N, K) or (K,) probabilities in `families` order."""
        if not self.fitted:
            raise RuntimeError("the family classifier is not fitted; call fit() or load() first")
        X = np.asarray(features, dtype=np.float64)
        if X.shape[-1] != FEATURE_DIM or X.ndim not in (1, 2):
            raise ValueError(f"features must be (N, {FEATURE_DIM}) or ({FEATURE_DIM},), got {X.shape}")
        Z = (X - self.mean) / self.std
        return _softmax(Z @ self.weight.T.astype(np.float64) + self.bias)

    def predict_proba(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """(len(families),) probabilities for one (T,) clip."""
        if not self.fitted:
            raise RuntimeError("the family classifier is not fitted; call fit() or load() first")
        return self.predict_proba_features(self.features(audio, sample_rate))

    def predict(self, audio: np.ndarray, sample_rate: int) -> str:
        """The most probable family of one clip."""
        return self.families[int(np.argmax(self.predict_proba(audio, sample_rate)))]

    # ----------------------------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the weights, the standardisation and the class names to a safetensors file, atomically."""
        if not self.fitted:
            raise RuntimeError("cannot save an unfitted family classifier")
        path = Path(path)
        tensors = {"weight": self.weight, "bias": self.bias, "mean": self.mean, "std": self.std}
        metadata = {
            "format": FORMAT,
            "families": json.dumps(list(self.families)),
            "sample_rate": str(self.sample_rate),
            "l2": repr(self.l2),
        }
        with atomic_path(path) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LogisticFamilyClassifier:
        """Read a file written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"family classifier file not found: {path}")
        try:
            with safe_open(str(path), framework="np") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"{path} is not a safetensors file: {err}") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a family classifier (format {meta.get('format')!r})")
        missing = {"weight", "bias", "mean", "std"} - set(tensors)
        if missing:
            raise ValueError(f"{path} lacks tensors {sorted(missing)}")
        families = tuple(json.loads(meta["families"]))
        k = len(families)
        if tensors["weight"].shape != (k, FEATURE_DIM) or tensors["bias"].shape != (k,):
            raise ValueError(f"{path}: weight/bias shapes do not match {k} families × {FEATURE_DIM} features")
        clf = cls(l2=float(meta.get("l2", "0.001")), sample_rate=int(meta.get("sample_rate", "16000")))
        clf.families = families
        clf.weight, clf.bias = tensors["weight"], tensors["bias"]
        clf.mean, clf.std = tensors["mean"], tensors["std"]
        return clf


def _balanced(rows: list[dict], max_items: int | None) -> list[dict]:
    """Up to `max_items` rows taken round-robin across families, each family in file order."""
    if max_items is None or max_items >= len(rows):
        return rows
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row["family"]), []).append(row)
    out: list[dict] = []
    depth = 0
    while len(out) < max_items:
        for family in sorted(groups):
            if depth < len(groups[family]) and len(out) < max_items:
                out.append(groups[family][depth])
        depth += 1
    return out


def train_family_classifier(
    manifest: str | os.PathLike[str],
    max_items: int | None = None,
    progress: bool = True,
    *,
    sample_rate: int = 16000,
    l2: float = 1e-3,
) -> LogisticFamilyClassifier:
    """Fit a classifier on a synthetic-corpus JSONL manifest (`audio` paths relative to it, `family`
    labels). `max_items`: at most this many clips, balanced across families. Rows without a family and
    unreadable clips are skipped, with one warning giving their count."""
    from tqdm.auto import tqdm

    from melfusion.audio.io import load_audio
    from melfusion.errors import MelfusionInputError

    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}")
    rows, skipped = [], 0
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("family"), str) and isinstance(row.get("audio"), str):
            rows.append(row)
        else:
            skipped += 1
    rows = _balanced(rows, max_items)
    clf = LogisticFamilyClassifier(l2=l2, sample_rate=sample_rate)
    feats, labels = [], []
    for row in tqdm(rows, desc="family features", disable=not progress):
        try:
            audio = load_audio(manifest.parent / row["audio"], sample_rate)
            feats.append(clf.features(audio, sample_rate))
        except (MelfusionInputError, OSError, ValueError):
            skipped += 1
            continue
        labels.append(row["family"])
    if skipped:
        warnings.warn(f"{manifest}: skipped {skipped} unreadable or unlabelled rows", stacklevel=2)
    if not labels:
        raise ValueError(f"{manifest}: no readable clips with a 'family' label")
    return clf.fit_features(np.stack(feats), labels)
