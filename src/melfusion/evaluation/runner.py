"""Evaluate folders of generated audio against a reference folder: embeddings (cached) → metrics → report.

Every generated folder is one "run"; reference embeddings are computed once and shared. Under
torch.distributed (e.g. `accelerate launch` / `torchrun`), each process embeds its shard of every file
list and the metric objects gather their states, so every process ends with the same report.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from melfusion.data.cache import FeatureCache, text_sha256
from melfusion.encoders.base import batched
from melfusion.errors import MelfusionInputError
from melfusion.evaluation.audio import list_audio_files, load_audio, read_audio_native
from melfusion.evaluation.embedders import CLAP_DEFAULT, CLIP_DEFAULT, build_embedder
from melfusion.evaluation.embedders.weights import check_weights
from melfusion.evaluation.manifest import Manifest, ManifestRow, read_manifest
from melfusion.evaluation.metrics.distributed import distributed_world
from melfusion.evaluation.metrics.spectral import spectral_kl
from melfusion.evaluation.metrics.stateful import (
    FrechetDistanceMetric,
    IMSMMetric,
    InceptionScoreMetric,
    MeanMetric,
    PairedCosineMetric,
    PairedKLMetric,
)
from melfusion.evaluation.pairing import Pairing, pair_by_name, pair_key
from melfusion.utils.files import sha256_file


@dataclass(frozen=True)
class MetricSpec:
    key: str  # name on the command line
    embedders: tuple[str, ...]
    needs_text: bool = False
    needs_image: bool = False
    description: str = ""


METRICS: dict[str, MetricSpec] = {
    "fad": MetricSpec("fad", ("vggish",), description="Fréchet Audio Distance, VGGish frames"),
    "fad_inf": MetricSpec("fad_inf", ("vggish",), description="FAD∞ (fadtk extrapolation)"),
    "fd": MetricSpec("fd", ("panns",), description="Fréchet Distance, PANNs Cnn14 2048-d"),
    "kl": MetricSpec("kl", ("panns",), description="KL (softmax and sigmoid), PANNs logits, paired"),
    "isc": MetricSpec("isc", ("panns",), description="Inception score, PANNs logits"),
    "clap": MetricSpec("clap", ("clap",), needs_text=True, description="CLAP score (audio vs prompt)"),
    "imsm": MetricSpec("imsm", ("clip", "clap"), True, True, "IMSM (MeLFusion)"),
    "ibsc": MetricSpec("ibsc", ("imagebind",), description="ImageBind score (Art2Mus)"),
    "spectral_kl": MetricSpec("spectral_kl", (), description="Art2Mus spectral KL, paired"),
}
AUDIO_DEFAULT_METRICS = ("fad", "fd", "kl", "isc")

# Result columns: key → (label, higher is better)
COLUMNS: dict[str, tuple[str, bool]] = {
    "fad": ("FAD", False),
    "kl_softmax": ("KL", False),
    "fd": ("FD", False),
    "imsm": ("IMSM", True),
    "isc": ("IS", True),
    "kl_sigmoid": ("KL (sigmoid)", False),
    "fad_inf": ("FAD∞", False),
    "clap_score": ("CLAP", True),
    "ibsc_image": ("IBSc (Artw–GeMus)", True),
    "ibsc_music": ("IBSc (GtMus–GeMus)", True),
    "spectral_kl": ("KL-Div (Art2Mus)", False),
}

CONVENTIONS = {
    "fad": "VGGish (16 kHz, 0.96 s non-overlapping examples, 128-d pre-activation, no PCA), all frames pooled; "
    "Fréchet distance in float64 via eigen-decomposition, εI=1e-6 fallback",
    "fd": "PANNs Cnn14 16 kHz checkpoint (window 512, hop 160, 64 mels, 50–8000 Hz), 2048-d clip embedding",
    "kl": "PANNs 527-class logits of filename-paired clips; KL(reference ‖ generated) summed over classes, "
    "averaged over pairs; softmax and sigmoid forms as audioldm_eval (ε = 1e-6)",
    "isc": "PANNs logits, softmax, 10 splits after a seed-2020 shuffle (audioldm_eval); fewer clips → one per split",
    "fad_inf": "fadtk: FD on n frames drawn with replacement for 25 n in [min(500, N/2), N], intercept of FD vs 1/n",
    "clap": "cosine of CLAP audio and text embeddings of each generated clip and its prompt, averaged; "
    "audio resampled to 48 kHz",
    "imsm": "released formula softmax_row(softmax_text(CLIP logits_per_image) · softmax_text(CLAP "
    "logits_per_audio)ᵀ); CLIP ViT-B/32 on RGB images (the released script feeds BGR), CLAP on 48 kHz audio "
    "(the released script does not resample); score = mean of the diagonal, which is bounded by e/(e+N−1)",
    "ibsc": "cosine of ImageBind-huge embeddings: artwork vs generated music, ground-truth vs generated music",
    "spectral_kl": "Art2Mus: |STFT|² (n_fft 2048, hop 512) → amplitude_to_db(ref=max) → sum over time → "
    "normalise → scipy entropy(reference, generated), files at their own sample rate",
    "pairing": "generated and reference files pair by file stem (a.wav ↔ a.flac); manifest rows by audio stem",
}


@dataclass
class EvaluationOptions:
    metrics: Sequence[str] | None = None  # None: audio metrics, plus clap/imsm when the manifest allows
    weights_dir: str | None = None
    cache_dir: str | None = None  # None: no cache
    device: str | None = None
    batch_size: int | None = None
    allow_download: bool = False
    clap_model: str = CLAP_DEFAULT
    clip_model: str = CLIP_DEFAULT
    imsm_group_size: int | None = None
    sqrtm_check: bool = True
    tiny: bool = False
    progress: bool = True
    seed: int = 0


@dataclass
class RunResult:
    name: str
    generated_dir: str
    n_files: int
    metrics: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    imsm_matrix: np.ndarray | None = None
    imsm_names: list[str] = field(default_factory=list)


@dataclass
class EvaluationReport:
    reference_dir: str
    n_reference: int
    manifest: str | None
    metrics: list[str]
    runs: list[RunResult]
    embedders: dict[str, str]
    options: dict[str, Any]
    seconds: float = 0.0
    tiny: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference_dir,
            "n_reference": self.n_reference,
            "manifest": self.manifest,
            "metrics_requested": self.metrics,
            "tiny_embedders": self.tiny,
            "embedders": self.embedders,
            "conventions": {k: v for k, v in CONVENTIONS.items() if k in self.metrics or k == "pairing"},
            "options": self.options,
            "seconds": round(self.seconds, 3),
            "runs": {
                r.name: {
                    "generated": r.generated_dir,
                    "n_files": r.n_files,
                    "metrics": {k: _json_float(v) for k, v in r.metrics.items()},
                    "details": _jsonable(r.details),
                    "notes": r.notes,
                }
                for r in self.runs
            },
        }


def _json_float(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (float, np.floating)):
        return _json_float(float(x))
    if isinstance(x, np.integer):
        return int(x)
    return x


def resolve_metrics(requested: Sequence[str] | None, manifest: Manifest | None) -> list[str]:
    """Validate metric names and their inputs; None → audio defaults plus what the manifest enables."""
    if requested is None:
        chosen = list(AUDIO_DEFAULT_METRICS)
        if manifest is not None and manifest.has_texts:
            chosen.append("clap")
            if manifest.has_images:
                chosen.append("imsm")
        return chosen
    chosen = []
    for name in requested:
        key = name.strip().lower().replace("-", "_")
        key = {
            "is": "isc",
            "kl_softmax": "kl",
            "kl_sigmoid": "kl",
            "fadinf": "fad_inf",
            "clap_score": "clap",
        }.get(key, key)
        if key not in METRICS:
            raise MelfusionInputError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
        spec = METRICS[key]
        if spec.needs_text and (manifest is None or not manifest.has_texts):
            raise MelfusionInputError(f"metric {key} needs --manifest with a text/prompt column")
        if spec.needs_image and (manifest is None or not manifest.has_images):
            raise MelfusionInputError(f"metric {key} needs --manifest with an image column")
        if key not in chosen:
            chosen.append(key)
    if not chosen:
        raise MelfusionInputError("no metric requested")
    return chosen


def _shard(items: Sequence[Any]) -> list[Any]:
    rank, world = distributed_world()
    return list(items) if world == 1 else [x for i, x in enumerate(items) if i % world == rank]


class EmbeddingStore:
    """Embeddings of files and texts through the cache (a `FeatureCache`: one safetensors file per
    (embedder, content hash), written atomically), with an in-process memo shared by all runs."""

    def __init__(self, cache: FeatureCache, *, progress: bool = True, chunk: int = 32) -> None:
        self.cache = cache
        self.progress = progress
        self.chunk = chunk
        self._sha: dict[Path, str] = {}
        self._memo: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self.computed = 0

    def sha(self, path: Path) -> str:
        if path not in self._sha:
            self._sha[path] = sha256_file(path)
        return self._sha[path]

    def _lookup(self, namespace: str, key: str) -> dict[str, np.ndarray] | None:
        hit = self._memo.get((namespace, key))
        if hit is None:
            got = self.cache.get(namespace, key)
            if got is not None:
                hit = {k: v.numpy() for k, v in got.items()}
                self._memo[(namespace, key)] = hit
        return hit

    def _store(self, namespace: str, key: str, value: dict[str, np.ndarray]) -> None:
        self._memo[(namespace, key)] = value
        self.cache.put(
            namespace, key, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in value.items()}
        )
        self.computed += 1

    def _run(
        self,
        namespace: str,
        keys: list[str],
        compute: Callable[[list[int]], list[dict[str, np.ndarray]]],
        desc: str,
    ) -> list[dict[str, np.ndarray]]:
        results: list[dict[str, np.ndarray] | None] = [self._lookup(namespace, k) for k in keys]
        missing = [i for i, r in enumerate(results) if r is None]
        with tqdm(
            total=len(missing), desc=desc, disable=not self.progress or not missing, leave=False
        ) as bar:
            for chunk in batched(missing, self.chunk):
                for i, value in zip(chunk, compute(chunk)):
                    results[i] = value
                    self._store(namespace, keys[i], value)
                bar.update(len(chunk))
        return results  # type: ignore[return-value]

    def audio(self, embedder: Any, paths: Sequence[Path], label: str) -> list[dict[str, np.ndarray]]:
        keys = [self.sha(p) for p in paths]

        def compute(idx: list[int]) -> list[dict[str, np.ndarray]]:
            if getattr(embedder, "consumes_paths", False):
                emb = embedder.embed_audio_files([paths[i] for i in idx])
                return [{"embedding": e} for e in emb]
            waves = [load_audio(paths[i], embedder.sample_rate) for i in idx]
            return embedder.embed_waveforms(waves)

        return self._run(embedder.cache_id, keys, compute, f"{embedder.name} · {label}")

    def images(self, embedder: Any, paths: Sequence[Path], label: str) -> np.ndarray:
        for p in paths:
            if not p.is_file():
                raise MelfusionInputError(f"image {p} (from the manifest) does not exist")
        keys = [self.sha(p) for p in paths]

        def compute(idx: list[int]) -> list[dict[str, np.ndarray]]:
            chosen = [paths[i] for i in idx]
            if hasattr(embedder, "embed_images"):
                emb = embedder.embed_images(chosen)
            else:
                emb = embedder.embed_image_files(chosen)
            return [{"embedding": e} for e in emb]

        out = self._run(embedder.cache_id + "-image", keys, compute, f"{embedder.name} · {label}")
        return np.stack([o["embedding"] for o in out]) if out else np.zeros((0, 1))

    def texts(self, embedder: Any, texts: Sequence[str], label: str) -> np.ndarray:
        keys = [text_sha256(t) for t in texts]

        def compute(idx: list[int]) -> list[dict[str, np.ndarray]]:
            return [{"embedding": e} for e in embedder.embed_texts([texts[i] for i in idx])]

        out = self._run(embedder.cache_id + "-text", keys, compute, f"{embedder.name} · {label}")
        return np.stack([o["embedding"] for o in out]) if out else np.zeros((0, 1))


class Embedders:
    """Builds embedders on first use (so unused checkpoints are never required)."""

    def __init__(self, options: EvaluationOptions, prebuilt: Mapping[str, Any] | None = None) -> None:
        self.options = options
        self._built: dict[str, Any] = dict(prebuilt or {})
        self._used: list[str] = []

    def __getitem__(self, name: str) -> Any:
        if name not in self._used:
            self._used.append(name)
        if name not in self._built:
            o = self.options
            self._built[name] = build_embedder(
                name,
                tiny=o.tiny,
                weights_dir=o.weights_dir,
                device=o.device,
                allow_download=o.allow_download,
                clap_model=o.clap_model,
                clip_model=o.clip_model,
                batch_size=o.batch_size,
                seed=o.seed,
            )
        return self._built[name]

    def identities(self) -> dict[str, str]:
        return {n: getattr(self._built[n], "cache_id", type(self._built[n]).__name__) for n in self._used}


def _normalise_runs(
    generated: Mapping[str, str | os.PathLike[str]] | Sequence[str | os.PathLike[str]],
) -> list[tuple[str, Path]]:
    if isinstance(generated, Mapping):
        runs = [(str(k), Path(v).expanduser()) for k, v in generated.items()]
    else:
        runs = [(Path(g).expanduser().resolve().name, Path(g).expanduser()) for g in generated]
    if not runs:
        raise MelfusionInputError("give at least one --generated folder")
    names = [n for n, _ in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise MelfusionInputError(
            f"two generated folders share the run name {dupes[0]!r}: name them as NAME=DIR"
        )
    return runs


def match_manifest(
    files: Sequence[Path], manifest: Manifest, *, need_text: bool = True, need_image: bool = False
) -> Pairing:
    """Pair files with manifest rows by stem (or id); `pairs` are (file index, 0) and `keys` row keys.

    A row counts only if it has what is needed: a prompt (`need_text`), an image (`need_image`).
    """

    def usable(row: ManifestRow) -> bool:
        return bool(row.text or not need_text) and (row.image is not None or not need_image)

    pairs: list[tuple[int, int]] = []
    keys: list[str] = []
    unmatched: list[str] = []
    for i, f in enumerate(files):
        row = manifest.lookup(pair_key(f.name))
        if row is not None and usable(row):
            pairs.append((i, 0))
            keys.append(row.key)
        else:
            unmatched.append(f.name)
    used = set(keys)
    rows = [k for k, r in manifest.rows.items() if usable(r)]
    return Pairing(
        pairs=pairs,
        keys=keys,
        unmatched_generated=unmatched,
        unmatched_reference=[k for k in rows if k not in used],
        n_generated=len(files),
        n_reference=len(rows),
    )


def evaluate(
    generated: Mapping[str, str | os.PathLike[str]] | Sequence[str | os.PathLike[str]],
    reference: str | os.PathLike[str],
    *,
    manifest: str | os.PathLike[str] | None = None,
    options: EvaluationOptions | None = None,
    embedders: Mapping[str, Any] | None = None,
) -> EvaluationReport:
    """Evaluate one or more generated folders against `reference`; see `EvaluationOptions`."""
    t0 = time.perf_counter()
    opts = options or EvaluationOptions()
    runs = _normalise_runs(generated)
    ref_dir = Path(reference).expanduser()
    ref_files = list_audio_files(ref_dir)
    run_files = [(name, d, list_audio_files(d)) for name, d in runs]
    man = read_manifest(manifest) if manifest is not None else None
    metrics = resolve_metrics(opts.metrics, man)
    if "fad_inf" in metrics and "fad" not in metrics:
        metrics.insert(0, "fad")
    if not opts.tiny and not opts.allow_download:  # every missing file in one message, before any work
        needed = [e for m in metrics for e in METRICS[m].embedders if e not in (embedders or {})]
        check_weights(
            list(dict.fromkeys(needed)),
            opts.weights_dir,
            clap_model=opts.clap_model,
            clip_model=opts.clip_model,
        )
    emb = Embedders(opts, embedders)
    store = EmbeddingStore(FeatureCache(opts.cache_dir), progress=opts.progress)

    ref_shard = _shard(ref_files)
    results = []
    for name, gen_dir, gen_files in run_files:
        res = RunResult(name=name, generated_dir=str(gen_dir), n_files=len(gen_files))
        _evaluate_run(res, gen_files, ref_files, ref_shard, man, metrics, opts, emb, store)
        results.append(res)
    return EvaluationReport(
        reference_dir=str(ref_dir),
        n_reference=len(ref_files),
        manifest=str(man.path) if man is not None else None,
        metrics=metrics,
        runs=results,
        embedders=emb.identities(),
        options={
            "clap_model": opts.clap_model,
            "clip_model": opts.clip_model,
            "imsm_group_size": opts.imsm_group_size,
            "sqrtm_check": opts.sqrtm_check,
            "cache_dir": opts.cache_dir,
            "cache_hits": store.cache.hits,
            "embeddings_computed": store.computed,
        },
        seconds=time.perf_counter() - t0,
        tiny=opts.tiny,
    )


def _evaluate_run(
    res: RunResult,
    gen_files: list[Path],
    ref_files: list[Path],
    ref_shard: list[Path],
    man: Manifest | None,
    metrics: list[str],
    opts: EvaluationOptions,
    emb: Embedders,
    store: EmbeddingStore,
) -> None:
    gen_shard = _shard(gen_files)
    pairing = pair_by_name([p.name for p in gen_files], [p.name for p in ref_files])
    paired_metrics = {"kl", "spectral_kl", "ibsc"} & set(metrics)
    if paired_metrics:
        res.details["pairing"] = pairing.to_json()
        res.notes.append("reference pairing: " + pairing.summary())
        if pairing.n_pairs < 0.99 * max(pairing.n_generated, pairing.n_reference):
            res.notes.append(
                "fewer than 99% of files pair by name (audioldm_eval would skip KL): paired metrics use "
                f"the {pairing.n_pairs} matched pairs only"
            )

    if {"fad", "fad_inf"} & set(metrics):
        with _guard(res, "FAD", ["fad", "fad_inf"] if "fad_inf" in metrics else ["fad"]):
            _fad(res, gen_shard, ref_shard, metrics, opts, emb, store)

    if {"fd", "kl", "isc"} & set(metrics):
        _panns(res, gen_shard, ref_shard, metrics, opts, emb, store)

    if man is not None and {"clap", "imsm"} & set(metrics):
        with _guard(res, "CLAP/IMSM", [k for k in ("clap_score", "imsm") if k.split("_")[0] in metrics]):
            _text_metrics(res, gen_files, man, metrics, opts, emb, store)

    if "ibsc" in metrics:
        with _guard(res, "IBSc", ["ibsc_image", "ibsc_music"]):
            _ibsc(res, gen_files, ref_files, pairing, man, emb, store)

    if "spectral_kl" in metrics:
        with _guard(res, "spectral KL", ["spectral_kl"]):
            _spectral(res, gen_files, ref_files, pairing, opts)


@contextlib.contextmanager
def _guard(res: RunResult, label: str, keys: list[str]) -> Iterator[None]:
    """A metric that cannot be computed (too few clips, no pairs) becomes None plus a note, not a crash;
    warnings raised while computing it (e.g. the sqrtm cross-check) become notes too."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            yield
        except MelfusionInputError:
            raise
        except ValueError as err:
            for k in keys:
                res.metrics[k] = None
            res.notes.append(f"{label} not computed: {err}")
    for w in caught:
        if issubclass(w.category, RuntimeWarning):
            res.notes.append(f"{label}: {w.message}")


def _fad(
    res: RunResult,
    gen_shard: list[Path],
    ref_shard: list[Path],
    metrics: list[str],
    opts: EvaluationOptions,
    emb: Embedders,
    store: EmbeddingStore,
) -> None:
    vgg = emb["vggish"]
    gen = store.audio(vgg, gen_shard, f"{res.name} (VGGish)")
    ref = store.audio(vgg, ref_shard, "reference (VGGish)")
    m = FrechetDistanceMetric(cross_check=opts.sqrtm_check, keep_generated="fad_inf" in metrics)
    m.update(generated=_rows([g["frames"] for g in gen]), reference=_rows([r["frames"] for r in ref]))
    out = m.compute(fad_inf="fad_inf" in metrics, fad_inf_seed=opts.seed)
    res.metrics["fad"] = out.distance
    res.details["fad"] = _frechet_details(out)
    if out.fad_inf is not None:
        res.metrics["fad_inf"] = out.fad_inf.score
        res.details["fad_inf"] = {
            "slope": out.fad_inf.slope,
            "r2": out.fad_inf.r2,
            "points": out.fad_inf.points,
        }


def _panns(
    res: RunResult,
    gen_shard: list[Path],
    ref_shard: list[Path],
    metrics: list[str],
    opts: EvaluationOptions,
    emb: Embedders,
    store: EmbeddingStore,
) -> None:
    panns = emb["panns"]
    gen = store.audio(panns, gen_shard, f"{res.name} (PANNs)")
    ref = store.audio(panns, ref_shard, "reference (PANNs)") if {"fd", "kl"} & set(metrics) else []
    gen_logits = _rows([g["logits"][None] for g in gen])  # (N_shard, 527)
    if "fd" in metrics:
        with _guard(res, "FD", ["fd"]):
            m = FrechetDistanceMetric(cross_check=opts.sqrtm_check)
            m.update(
                generated=_rows([g["embedding"][None] for g in gen]),  # (N_shard, 2048)
                reference=_rows([r["embedding"][None] for r in ref]),
            )
            out = m.compute()
            res.metrics["fd"] = out.distance
            res.details["fd"] = _frechet_details(out)
    if "kl" in metrics:
        with _guard(res, "KL", ["kl_softmax", "kl_sigmoid"]):
            kl = PairedKLMetric()
            kl.update([p.name for p in gen_shard], generated_logits=gen_logits)
            kl.update([p.name for p in ref_shard], reference_logits=_rows([r["logits"][None] for r in ref]))
            kout = kl.compute()
            if kout.result is None:
                raise ValueError("no generated file pairs with a reference file by name")
            res.metrics["kl_softmax"] = kout.result.kl_softmax
            res.metrics["kl_sigmoid"] = kout.result.kl_sigmoid
            res.details["kl_per_pair"] = dict(zip(kout.pairing.keys, kout.result.per_pair_softmax.tolist()))
    if "isc" in metrics:
        with _guard(res, "IS", ["isc"]):
            isc = InceptionScoreMetric()
            isc.update([p.name for p in gen_shard], gen_logits)
            iout = isc.compute()
            res.metrics["isc"] = iout.mean
            res.details["isc"] = {"std": iout.std, "splits": iout.splits, "n": iout.n}


def _spectral(
    res: RunResult, gen_files: list[Path], ref_files: list[Path], pairing: Pairing, opts: EvaluationOptions
) -> None:
    mean = MeanMetric()
    pairs = _shard([(gen_files[i], ref_files[j]) for i, j in pairing.pairs])
    values = []
    for g, r in tqdm(pairs, desc=f"spectral KL · {res.name}", disable=not opts.progress, leave=False):
        values.append(spectral_kl(read_audio_native(r)[0], read_audio_native(g)[0]))
    mean.update([g.name for g, _ in pairs], values)
    if not pairing.n_pairs:
        raise ValueError("no generated file pairs with a reference file by name")
    mout = mean.compute()
    res.metrics["spectral_kl"] = mout.mean
    res.details["spectral_kl_per_pair"] = mout.per_item


def _rows(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays, axis=0) if arrays else np.zeros((0, 0))


def _frechet_details(out: Any) -> dict[str, Any]:
    r = out.result
    return {
        "n_generated": out.n_generated,
        "n_reference": out.n_reference,
        "eps_added": r.eps_added,
        "sqrtm_check": r.check_distance,
        "sqrtm_rel_diff": r.check_rel_diff,
    }


def _text_metrics(
    res: RunResult,
    gen_files: list[Path],
    man: Manifest,
    metrics: list[str],
    opts: EvaluationOptions,
    emb: Embedders,
    store: EmbeddingStore,
) -> None:
    clap = emb["clap"]
    pairing = match_manifest(gen_files, man)
    res.details["manifest_pairing"] = pairing.to_json()
    res.notes.append("manifest pairing: " + pairing.summary("clips with a prompt", "manifest rows"))
    if not pairing.pairs:
        res.metrics["clap_score"] = None
        if "imsm" in metrics:
            res.metrics["imsm"] = None
        return
    matched = _shard(list(zip((gen_files[i] for i, _ in pairing.pairs), pairing.keys)))
    files = [f for f, _ in matched]
    rows = [man.rows[k] for _, k in matched]
    audio = (
        np.stack([o["embedding"] for o in store.audio(clap, files, f"{res.name} (CLAP)")]) if files else None
    )
    texts = [r.text or "" for r in rows]
    clap_text = store.texts(clap, texts, "prompts (CLAP)") if files else None
    if "clap" in metrics:
        m = PairedCosineMetric()
        if files:
            m.update([f.name for f in files], audio, clap_text)
        out = m.compute()
        res.metrics["clap_score"] = out.mean
        res.details["clap_per_clip"] = out.per_item
    if "imsm" in metrics:
        with_image = [i for i, r in enumerate(rows) if r.image is not None]
        m = IMSMMetric()
        if with_image:
            clip = emb["clip"]
            images = store.images(clip, [rows[i].image for i in with_image], "images (CLIP)")
            clip_text = store.texts(clip, [texts[i] for i in with_image], "prompts (CLIP)")
            m.update(
                [files[i].name for i in with_image],
                images,
                clip_text,
                audio[with_image],
                clap_text[with_image],
            )
        try:
            out = m.compute(
                clip_logit_scale=emb["clip"].logit_scale,
                clap_logit_scale=clap.logit_scale,
                group_size=opts.imsm_group_size,
            )
        except ValueError as err:
            res.metrics["imsm"] = None
            res.notes.append(f"IMSM not computed: {err}")
            return
        n = len(out.names)
        res.metrics["imsm"] = out.result.mean
        res.details["imsm"] = {
            "n_triplets": n,
            "group_size": out.result.group_size,
            "diagonal_upper_bound": math.e / (math.e + out.result.group_size - 1),
            "per_pair": dict(zip(out.names, out.result.diagonal.tolist())),
        }
        if n <= 256:
            res.details["imsm"]["matrix"] = out.result.matrix
        res.imsm_matrix = out.result.matrix
        res.imsm_names = out.names


def _ibsc(
    res: RunResult,
    gen_files: list[Path],
    ref_files: list[Path],
    pairing: Pairing,
    man: Manifest | None,
    emb: Embedders,
    store: EmbeddingStore,
) -> None:
    ib = emb["imagebind"]
    if man is not None and man.has_images:
        match = match_manifest(gen_files, man, need_text=False, need_image=True)
        res.notes.append("manifest pairing (IBSc): " + match.summary("clips with an image", "manifest rows"))
        rows = _shard([(gen_files[i], man.rows[k].image) for (i, _), k in zip(match.pairs, match.keys)])
        m = PairedCosineMetric()
        if rows:
            img_emb = store.images(ib, [img for _, img in rows], "images (ImageBind)")
            audio = store.audio(ib, [f for f, _ in rows], f"{res.name} (ImageBind)")
            m.update([f.name for f, _ in rows], img_emb, np.stack([o["embedding"] for o in audio]))
        try:
            res.metrics["ibsc_image"] = m.compute().mean
        except ValueError:
            res.metrics["ibsc_image"] = None
            res.notes.append("IBSc (artwork): no generated clip has an image in the manifest")
    pairs = _shard([(gen_files[i], ref_files[j]) for i, j in pairing.pairs])
    m = PairedCosineMetric()
    if pairs:
        ref_paths, gen_paths = [r for _, r in pairs], [g for g, _ in pairs]
        gt_emb = np.stack([o["embedding"] for o in store.audio(ib, ref_paths, "reference (ImageBind)")])
        gen_emb = np.stack([o["embedding"] for o in store.audio(ib, gen_paths, f"{res.name} (ImageBind)")])
        m.update([p.name for p in gen_paths], gt_emb, gen_emb)
    try:
        res.metrics["ibsc_music"] = m.compute().mean
    except ValueError:
        res.metrics["ibsc_music"] = None
        res.notes.append("IBSc (music): no generated file pairs with a reference file by name")
