"""Fréchet-distance functions of peer toolkits, for cross-checks in benchmarks and optional tests.

Neither `frechet-audio-distance` nor `fadtk` is a dependency: both pull torchaudio (directly, or via
laion-clap/encodec/nnaudio) and other pins this project does not install. When one is importable its
function is used as is; otherwise a wheel fetched with `pip download --no-deps <name>` can be given,
and only the Fréchet function's source is taken from it (`ast`) and run with numpy/scipy — the
module's heavy imports are never executed.
"""

from __future__ import annotations

import ast
import logging
import os
import zipfile
from collections.abc import Callable

import numpy as np
import scipy.linalg

FrechetFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], float]

# (module path inside the wheel, class holding the function or None, function name)
_PEERS = {
    "frechet_audio_distance": (
        "frechet_audio_distance/fad.py",
        "FrechetAudioDistance",
        "calculate_frechet_distance",
    ),
    "fadtk": ("fadtk/fad.py", None, "calc_frechet_distance"),
}


def _installed() -> list[tuple[str, FrechetFn]]:
    found: list[tuple[str, FrechetFn]] = []
    try:
        from frechet_audio_distance import FrechetAudioDistance

        def fad_fn(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray) -> float:
            return float(FrechetAudioDistance.calculate_frechet_distance(None, m1, s1, m2, s2))

        found.append(("frechet_audio_distance (installed)", fad_fn))
    except Exception:  # not installed, or its imports (torchaudio, laion_clap) fail
        pass
    try:
        from fadtk.fad import calc_frechet_distance

        found.append(
            ("fadtk (installed)", lambda m1, s1, m2, s2: float(calc_frechet_distance(m1, s1, m2, s2)))
        )
    except Exception:
        pass
    return found


def _from_wheel(wheel: str | os.PathLike[str]) -> tuple[str, FrechetFn]:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        peer = next((p for p, spec in _PEERS.items() if spec[0] in names), None)
        if peer is None:
            raise ValueError(f"{wheel} holds neither frechet_audio_distance nor fadtk")
        member, cls, func = _PEERS[peer]
        source = zf.read(member).decode("utf-8")
    tree = ast.parse(source)
    scope = tree.body
    if cls is not None:
        scope = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls).body
    node = next(n for n in scope if isinstance(n, ast.FunctionDef) and n.name == func)
    namespace: dict[str, object] = {
        "np": np,
        "linalg": scipy.linalg,
        "scisqrt": np.emath.sqrt,  # fadtk's `from scipy import sqrt` (numpy.lib.scimath.sqrt)
        "log": logging.getLogger("peer"),
    }
    exec(compile(ast.Module(body=[node], type_ignores=[]), f"{wheel}:{member}", "exec"), namespace)  # noqa: S102
    fn = namespace[func]
    if cls is not None:
        return f"{peer} ({os.path.basename(wheel)})", lambda m1, s1, m2, s2: float(fn(None, m1, s1, m2, s2))  # type: ignore[operator]
    return f"{peer} ({os.path.basename(wheel)})", lambda m1, s1, m2, s2: float(fn(m1, s1, m2, s2))  # type: ignore[operator]


def peer_frechet_functions(wheels: list[str] | None = None) -> list[tuple[str, FrechetFn]]:
    """Installed peers, then peers from wheel files (`wheels`, else $MELFUSION_PEER_WHEELS, ':'-separated)."""
    found = _installed()
    if wheels is None:
        wheels = [w for w in os.environ.get("MELFUSION_PEER_WHEELS", "").split(os.pathsep) if w]
    for wheel in wheels:
        found.append(_from_wheel(wheel))
    return found
