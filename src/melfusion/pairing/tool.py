"""`melfusion pair`: the Art2Mus artwork–music dataset recipe, end to end.

1. scan both folders (recursively; other files are ignored with a warning),
2. embed every file with a joint encoder (cached per file: interrupted runs resume),
3. pair every artwork with one track, without replacement (`greedy` = the paper's rule, `optimal` =
   maximum total similarity), computing the other method too for comparison unless told not to,
4. write the artwork–music manifest (standard JSONL triplets; text = the fixed Art2Mus sentence) and a
   `<out>.stats.json` with both totals and the paper's Table 1 statistics.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from melfusion.data.cache import FeatureCache
from melfusion.data.manifest import TripletRecord, write_manifest
from melfusion.errors import MelfusionInputError
from melfusion.pairing.assign import (
    DEFAULT_DENSE_MAX_ENTRIES,
    DEFAULT_K,
    METHODS,
    PairingResult,
    pair_embeddings,
)
from melfusion.pairing.embed import EmbeddedFiles, embed_files, record_ids, scan_folder
from melfusion.pairing.encoders import PairingEncoder, build_pairing_encoder
from melfusion.pairing.similarity import check_pair_shapes, normalize
from melfusion.pipelines.art2mus.constants import SUPPORT_PROMPT
from melfusion.utils.files import atomic_write_json

logger = logging.getLogger(__name__)


@dataclass
class PairReport:
    manifest: Path
    stats_path: Path
    method: str
    records: list[TripletRecord]
    results: dict[str, PairingResult]
    images: EmbeddedFiles
    music: EmbeddedFiles
    stats: dict[str, Any] = field(default_factory=dict)


def stats_path_for(out: str | os.PathLike[str]) -> Path:
    """`pairs.jsonl` → `pairs.stats.json`."""
    p = Path(out)
    return p.with_name(f"{p.stem}.stats.json")


def pair_folders(
    images: str | os.PathLike[str],
    music: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    method: str = "greedy",
    encoder: str | PairingEncoder = "imagebind",
    weights_dir: str | os.PathLike[str] | None = None,
    device: str | None = None,
    batch_size: int = 16,
    cache_dir: str | os.PathLike[str] | None = None,
    skip_bad: bool = False,
    text: str = SUPPORT_PROMPT,
    k: int = DEFAULT_K,
    block_mb: int = 64,
    dense_max_entries: int = DEFAULT_DENSE_MAX_ENTRIES,
    compare: bool = True,
    progress: bool = True,
    allow_download: bool = False,
) -> PairReport:
    """Pair every image under `images` with one audio file under `music` (see module doc)."""
    if method not in METHODS:
        raise MelfusionInputError(f"--method must be greedy or optimal, got {method!r}")
    if not text.strip():
        raise MelfusionInputError("--text must not be empty (it is the manifest's text column)")
    image_root, music_root = Path(images).expanduser(), Path(music).expanduser()
    image_paths, _ = scan_folder(image_root, "image")
    music_paths, _ = scan_folder(music_root, "audio")
    if len(image_paths) > len(music_paths):
        raise MelfusionInputError(
            f"{len(image_paths)} artworks in {image_root} but only {len(music_paths)} music tracks in "
            f"{music_root}: pairing without replacement needs at least as many tracks as artworks"
        )
    out = Path(out).expanduser()
    cache = FeatureCache(cache_dir if cache_dir is not None else out.parent / ".melfusion-pair-cache")
    enc = build_pairing_encoder(
        encoder, weights_dir=weights_dir, device=device, batch_size=batch_size, allow_download=allow_download
    )
    emb_images = embed_files(
        image_paths, "image", enc, cache, batch_size=batch_size, skip_bad=skip_bad, progress=progress
    )
    emb_music = embed_files(
        music_paths, "audio", enc, cache, batch_size=batch_size, skip_bad=skip_bad, progress=progress
    )
    a = normalize(emb_images.embeddings, "image embeddings")
    b = normalize(emb_music.embeddings, "music embeddings")
    check_pair_shapes(a, b)

    bars: dict[str, Any] = {}

    def tick(stage: str, advance: int, total: int) -> None:
        if not progress:
            return
        if stage not in bars:
            bars[stage] = tqdm(total=total, desc=f"pairing: {stage}", unit="row")
        bars[stage].update(advance)

    try:
        results = pair_embeddings(
            a,
            b,
            method,
            compare=compare,
            k=k,
            block_bytes=int(block_mb) << 20,
            dense_max_entries=dense_max_entries,
            progress=tick,
        )
    finally:
        for bar in bars.values():
            bar.close()
    chosen = results[method]
    ids = record_ids(emb_images.paths, image_root)
    records = [
        TripletRecord(
            id=ids[img],
            images=[img.resolve()],
            text=text,
            audio=emb_music.paths[int(j)].resolve(),
            extra={"similarity": round(float(s), 6), "pairing": method},
        )
        for img, j, s in zip(emb_images.paths, chosen.cols, chosen.similarities)
    ]
    write_manifest(out, records)
    stats: dict[str, Any] = {
        "method": method,
        "encoder": getattr(enc, "name", str(encoder)),
        "encoder_cache_id": enc.cache_id,
        "images": len(emb_images.paths),
        "music": len(emb_music.paths),
        "pairs": len(records),
        "manifest": str(out),
        "table1": chosen.stats.to_dict(),
        "results": {name: r.summary() for name, r in results.items()},
        "skipped": {
            "images": [[str(p), r] for p, r in emb_images.skipped],
            "music": [[str(p), r] for p, r in emb_music.skipped],
        },
        "embeddings": {
            "cached": emb_images.cached + emb_music.cached,
            "computed": emb_images.computed + emb_music.computed,
        },
    }
    if "optimal" in results and "greedy" in results and results["greedy"].total != 0:
        stats["optimal_over_greedy"] = results["optimal"].total / results["greedy"].total
    stats_path = atomic_write_json(stats_path_for(out), stats)
    return PairReport(out, stats_path, method, records, results, emb_images, emb_music, stats)


def format_report(report: PairReport) -> str:
    """The paper's Table 1 (per method) and the totals, as text."""
    lines = [
        f"{'pairing':<8} {'total':>12} {'mean':>8} {'max':>8} {'min':>8} {'>mean':>7} {'<mean':>7}  solver"
    ]
    for name, r in report.results.items():
        s = r.stats
        lines.append(
            f"{name:<8} {s.total:>12.4f} {s.mean:>8.4f} {s.max:>8.4f} {s.min:>8.4f} "
            f"{s.above_mean:>7d} {s.below_mean:>7d}  {r.solver}"
        )
    if "optimal_over_greedy" in report.stats:
        lines.append(f"optimal / greedy total similarity: {report.stats['optimal_over_greedy']:.4f}")
    skipped = len(report.images.skipped) + len(report.music.skipped)
    if skipped:
        lines.append(f"left out {skipped} unusable file(s) (listed in {report.stats_path})")
    lines.append(
        f"wrote {len(report.records)} pairs ({report.method}) to {report.manifest}; stats in {report.stats_path}"
    )
    return "\n".join(lines)


def similarity_matrix_stats(sim: np.ndarray) -> dict[str, float]:
    """Max/min/mean of a whole similarity matrix (small problems; for reports and tests)."""
    sim = np.asarray(sim, dtype=np.float64)
    return {"max": float(sim.max()), "min": float(sim.min()), "mean": float(sim.mean())}
