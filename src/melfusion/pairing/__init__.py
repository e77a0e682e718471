"""Art2Mus dataset recipes: pair artworks with music in a joint embedding space (greedy as in the paper, or
the optimal assignment), with blocked similarity so large collections never need the full matrix; and
describe artworks with an image-to-text model.

Submodules load lazily: `from melfusion.pairing import pair_embeddings` imports only what it needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CandidateGraph": "melfusion.pairing.similarity",
    "candidate_graph": "melfusion.pairing.similarity",
    "normalize": "melfusion.pairing.similarity",
    "PairingResult": "melfusion.pairing.assign",
    "PairingStats": "melfusion.pairing.assign",
    "greedy_dense": "melfusion.pairing.assign",
    "greedy_pairing": "melfusion.pairing.assign",
    "optimal_dense": "melfusion.pairing.assign",
    "optimal_pairing": "melfusion.pairing.assign",
    "pair_embeddings": "melfusion.pairing.assign",
    "PairingEncoder": "melfusion.pairing.encoders",
    "TinyPairingEncoder": "melfusion.pairing.encoders",
    "ImageBindPairingEncoder": "melfusion.pairing.encoders",
    "build_pairing_encoder": "melfusion.pairing.encoders",
    "embed_files": "melfusion.pairing.embed",
    "scan_folder": "melfusion.pairing.embed",
    "PairReport": "melfusion.pairing.tool",
    "pair_folders": "melfusion.pairing.tool",
    "format_report": "melfusion.pairing.tool",
    "describe_folder": "melfusion.pairing.describe",
    "ImageDescriber": "melfusion.pairing.describe",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'melfusion.pairing' has no attribute {name!r}")
