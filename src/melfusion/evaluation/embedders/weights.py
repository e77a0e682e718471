"""Which pretrained weights the metric embedders need, where each is looked for, and whether it is here.

Nothing is loaded: `weight_status` only looks at files (and the Hugging Face cache), so `melfusion weights`
and `melfusion evaluate` can list every missing file in one message before any work starts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from melfusion.encoders.base import (
    WEIGHTS_ENV,
    MissingWeightsError,
    find_weight_file,
    hf_weights_location,
    weights_search_dirs,
)
from melfusion.encoders.clip import CLIP_DEFAULT
from melfusion.encoders.imagebind import (
    IMAGEBIND_FILES,
    IMAGEBIND_URL,
    imagebind_available,
    imagebind_cache_dirs,
)
from melfusion.evaluation.embedders.clap import CLAP_ALIASES, CLAP_DEFAULT
from melfusion.evaluation.embedders.panns import PANNS_FILES, PANNS_URL, panns_cache_dirs
from melfusion.evaluation.embedders.vggish import VGGISH_FILES, VGGISH_URL, vggish_cache_dirs

TITLES = {
    "vggish": "VGGish",
    "panns": "PANNs Cnn14 (16 kHz)",
    "clap": "CLAP",
    "clip": "CLIP",
    "imagebind": "ImageBind (huge)",
}
HF_FILES = "config.json, model.safetensors, tokenizer and preprocessor files"


@dataclass(frozen=True)
class WeightStatus:
    """One embedder's weights: the file(s) it takes, where to get them and where they are looked for;
    ``found`` is the file or folder in use, ``problem`` what else is missing (a package)."""

    embedder: str
    title: str
    files: str
    source: str
    put_in: str
    looked: tuple[str, ...]
    found: str | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.found is not None and self.problem is None

    def instruction(self) -> str:
        """One clause: what to do to make this embedder loadable."""
        if self.problem is not None:
            return f"{self.title}: {self.problem}"
        return f"{self.title}: put {self.files} (from {self.source}) in {self.put_in}"


def _file_status(
    name: str, files: Sequence[str], url: str, weights_dir: str | os.PathLike[str] | None, extra: list[Path]
) -> WeightStatus:
    dirs = weights_search_dirs(weights_dir, extra)
    try:
        found: str | None = str(find_weight_file(TITLES[name], files, weights_dir, extra_dirs=extra, url=url))
    except MissingWeightsError:
        found = None
    put_in = (
        str(Path(weights_dir).expanduser())
        if weights_dir is not None
        else f"--weights-dir DIR (or ${WEIGHTS_ENV})"
    )
    return WeightStatus(name, TITLES[name], files[0], url, put_in, tuple(str(d) for d in dirs), found)


def _hf_status(name: str, repo_id: str, weights_dir: str | os.PathLike[str] | None) -> WeightStatus:
    location = hf_weights_location(repo_id, weights_dir)
    found = location if location != repo_id else None
    if found is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(repo_id, "config.json")
            found = str(Path(cached).parent) if isinstance(cached, str) else None
        except Exception:  # an unusual cache layout: report as missing, the loader says more
            found = None
    leaf = repo_id.split("/")[-1]
    put_in = (
        str(Path(weights_dir).expanduser() / leaf) if weights_dir is not None else f"--weights-dir DIR/{leaf}"
    ) + " (or the Hugging Face cache)"
    looked = tuple(str(d / leaf) for d in weights_search_dirs(weights_dir)) + ("the Hugging Face cache",)
    return WeightStatus(
        name,
        f"{TITLES[name]} {repo_id}",
        HF_FILES,
        f"`huggingface-cli download {repo_id}`",
        put_in,
        looked,
        found,
    )


def weight_status(
    name: str,
    weights_dir: str | os.PathLike[str] | None = None,
    *,
    clap_model: str = CLAP_DEFAULT,
    clip_model: str = CLIP_DEFAULT,
) -> WeightStatus:
    """The weights of embedder ``name`` (vggish, panns, clap, clip, imagebind) on this machine."""
    if name == "vggish":
        return _file_status(name, VGGISH_FILES, VGGISH_URL, weights_dir, vggish_cache_dirs())
    if name == "panns":
        return _file_status(name, PANNS_FILES, PANNS_URL, weights_dir, panns_cache_dirs())
    if name == "clap":
        return _hf_status(name, CLAP_ALIASES.get(clap_model, clap_model), weights_dir)
    if name == "clip":
        return _hf_status(name, clip_model, weights_dir)
    if name == "imagebind":
        status = _file_status(name, IMAGEBIND_FILES, IMAGEBIND_URL, weights_dir, imagebind_cache_dirs())
        if imagebind_available():
            return status
        problem = (
            "the imagebind package is not installed (`pip install git+https://github.com/facebookresearch/"
            f"ImageBind`, which brings torchaudio); then put {IMAGEBIND_FILES[0]} (from {IMAGEBIND_URL}) in "
            f"{status.put_in}"
        )
        return WeightStatus(**{**status.__dict__, "problem": problem})
    raise ValueError(f"unknown embedder {name!r}")


def check_weights(
    names: Sequence[str],
    weights_dir: str | os.PathLike[str] | None = None,
    *,
    clap_model: str = CLAP_DEFAULT,
    clip_model: str = CLIP_DEFAULT,
) -> None:
    """Raise one MissingWeightsError that lists every missing file among ``names`` (nothing when all are
    here)."""
    missing = [
        s
        for s in (weight_status(n, weights_dir, clap_model=clap_model, clip_model=clip_model) for n in names)
        if not s.ok
    ]
    if missing:
        items = "; ".join(f"({i}) {s.instruction()}" for i, s in enumerate(missing, 1))
        raise MissingWeightsError(
            f"{len(missing)} of the {len(names)} embedders these metrics need have no weights here: {items}. "
            "`melfusion weights` lists them all with where each is looked for"
        )
