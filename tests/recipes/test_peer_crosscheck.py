"""Optional cross-check of our Fréchet distance against frechet-audio-distance / fadtk.

Neither peer installs here without torchaudio, so this runs when one is importable, or when
MELFUSION_PEER_WHEELS names wheels fetched with `pip download --no-deps frechet-audio-distance fadtk`
(only their Fréchet function is taken from the wheel); otherwise it is skipped.
"""

from __future__ import annotations

import numpy as np
import pytest

from melfusion.evaluation.metrics import embedding_statistics, frechet_distance
from melfusion.recipes.peer_check import peer_frechet_functions

PEERS = peer_frechet_functions()


@pytest.mark.skipif(
    not PEERS,
    reason="no peer available: frechet-audio-distance and fadtk both pull torchaudio (not installable here); "
    "set MELFUSION_PEER_WHEELS to wheels from `pip download --no-deps frechet-audio-distance fadtk`",
)
@pytest.mark.parametrize("d", [16, 128])
def test_frechet_distance_matches_peers(d: int) -> None:
    rng = np.random.default_rng(d)
    x = rng.standard_normal((4 * d, d))
    y = rng.standard_normal((4 * d, d)) @ (np.eye(d) + 0.1 * rng.standard_normal((d, d))) + 0.2
    mu1, s1 = embedding_statistics(x)
    mu2, s2 = embedding_statistics(y)
    ours = frechet_distance(mu1, s1, mu2, s2)
    for name, peer in PEERS:
        theirs = peer(mu1, s1, mu2, s2)
        assert abs(ours - theirs) / abs(theirs) < 1e-6, name
