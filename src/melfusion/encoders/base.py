"""Shared embedder plumbing: weight-file lookup with actionable offline errors, batching, fingerprints."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from melfusion.errors import MelfusionInputError

T = TypeVar("T")

WEIGHTS_ENV = "MELFUSION_WEIGHTS_DIR"


class MissingWeightsError(MelfusionInputError):
    """Pretrained weights are not on this machine; the message says which file and where to put it."""


def weights_search_dirs(
    weights_dir: str | os.PathLike[str] | None, extra: Sequence[str | Path] = ()
) -> list[Path]:
    """--weights-dir, then $MELFUSION_WEIGHTS_DIR, then the tool-specific caches in `extra`."""
    dirs: list[Path] = []
    if weights_dir is not None:
        dirs.append(Path(weights_dir).expanduser())
    if os.environ.get(WEIGHTS_ENV):
        dirs.append(Path(os.environ[WEIGHTS_ENV]).expanduser())
    dirs.extend(Path(d).expanduser() for d in extra)
    return dirs


def find_weight_file(
    what: str,
    filenames: Sequence[str],
    weights_dir: str | os.PathLike[str] | None,
    *,
    extra_dirs: Sequence[str | Path] = (),
    url: str | None = None,
) -> Path:
    """First existing `dir/filename`; else a one-line MissingWeightsError naming the file and where to put it."""
    dirs = weights_search_dirs(weights_dir, extra_dirs)
    for d in dirs:
        for name in filenames:
            if (d / name).is_file():
                return d / name
    where = str(dirs[0]) if weights_dir is not None else f"--weights-dir DIR (or ${WEIGHTS_ENV})"
    looked = ", ".join(str(d) for d in dirs) or "nowhere"
    source = f" (download: {url})" if url else ""
    raise MissingWeightsError(
        f"{what} weights not found: put {filenames[0]}{source} in {where}; looked in {looked}"
    )


def locate_weight_file(
    what: str,
    filenames: Sequence[str],
    url: str,
    weights_dir: str | os.PathLike[str] | None,
    cache_dirs: Sequence[str | Path],
    *,
    download_dir: str | Path,
    allow_download: bool = False,
) -> Path:
    """The checkpoint file: found in the weights dirs and `cache_dirs`, else (when allowed) downloaded into
    `download_dir`, else a one-line MissingWeightsError."""
    try:
        return find_weight_file(what, filenames, weights_dir, extra_dirs=cache_dirs, url=url)
    except MissingWeightsError:
        if not allow_download:
            raise
    return download_weight_file(what, url, download_dir, filenames[0])


class Embedder:
    """What every pretrained embedder holds: its model in eval mode on the resolved device, a batch size and
    the identity its embeddings are cached under (the embedder, its checkpoint, the model's fingerprint)."""

    name = "embedder"
    consumes_paths = False  # True: embeds files itself (its package's loaders), not waveforms

    def __init__(
        self, model: Any, *, cache_id: str, device: str | torch.device | None = None, batch_size: int = 8
    ) -> None:
        from melfusion.utils.devices import resolve_device

        self.device = torch.device(resolve_device(device))
        self.model = model.eval().to(self.device)
        self.batch_size = batch_size
        self.cache_id = cache_id


def download_weight_file(what: str, url: str, directory: str | Path, filename: str) -> Path:
    """Download a checkpoint into `directory` (e.g. torch hub's checkpoints folder) or fail in one line."""
    target = Path(directory) / filename
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), progress=True)
    except Exception as err:  # network failures come in many exception types
        raise MissingWeightsError(
            f"{what} weights could not be downloaded from {url} ({type(err).__name__}); "
            f"put {filename} in --weights-dir DIR"
        ) from None
    return target


def hf_weights_location(repo_id: str, weights_dir: str | os.PathLike[str] | None) -> str:
    """A local folder for a hub model if one exists under the weights dirs, else the repo id (hub cache)."""
    if Path(repo_id).expanduser().is_dir():
        return str(Path(repo_id).expanduser())
    for d in weights_search_dirs(weights_dir):
        for candidate in (d / repo_id, d / repo_id.split("/")[-1]):
            if (candidate / "config.json").is_file():
                return str(candidate)
    return repo_id


def missing_hf_weights(
    what: str, repo_id: str, weights_dir: str | os.PathLike[str] | None
) -> MissingWeightsError:
    name = repo_id.split("/")[-1]
    where = (
        f"{Path(weights_dir).expanduser() / name}" if weights_dir is not None else f"--weights-dir DIR/{name}"
    )
    return MissingWeightsError(
        f"{what} weights for {repo_id!r} are not in the Hugging Face cache and cannot be downloaded offline: "
        f"run `huggingface-cli download {repo_id}` where there is internet, or copy the model folder "
        f"(config.json, model.safetensors, tokenizer and preprocessor files) to {where}"
    )


def load_hf_model(
    what: str,
    model_id: str,
    weights_dir: str | os.PathLike[str] | None,
    loaders: Sequence[Any],
    *,
    allow_download: bool,
) -> list[Any]:
    """The parts (model, processor, tokenizer, ...) of a hub model from a local folder under the weights dirs or
    the hub cache (downloaded only when allowed); a one-line MissingWeightsError when they are not here."""
    try:
        return load_hf_parts(
            hf_weights_location(model_id, weights_dir), loaders, allow_download=allow_download
        )
    except OSError:
        raise missing_hf_weights(what, model_id, weights_dir) from None


def load_hf_parts(location: str, loaders: Sequence[Any], *, allow_download: bool) -> list[Any]:
    """`loader.from_pretrained(location)` for each loader: from local files first (no network round
    trips when the model is cached), then, if allowed, from the hub. Raises OSError when both fail."""
    try:
        return [ld.from_pretrained(location, local_files_only=True) for ld in loaders]
    except OSError:
        if not allow_download:
            raise
    return [ld.from_pretrained(location) for ld in loaders]


def load_torch_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a .pth/.pt file (weights_only=True; unwraps {'model': ...})."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise MelfusionInputError(f"{path} does not hold a state dict")
    return obj


def module_fingerprint(module: torch.nn.Module) -> str:
    """Short hash of a module's parameters and buffers (cache keys for randomly built models)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def init_tiny_(module: torch.nn.Module) -> torch.nn.Module:
    """He-normal weights and zero biases for a tiny random model, so activations keep their scale."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)) and m.weight.requires_grad:
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    m.bias.zero_()
    return module


def file_fingerprint(path: Path) -> str:
    """Short identity of a weight file: name and size (hashing hundreds of MB on every run is wasteful)."""
    st = path.stat()
    return hashlib.sha256(f"{path.name}:{st.st_size}".encode()).hexdigest()[:16]


def batched(items: Sequence[T], batch_size: int) -> Iterator[list[T]]:
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    for i in range(0, len(items), batch_size):
        yield list(items[i : i + batch_size])


@contextlib.contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG for a block and restore its state (HF CLAP's rand_trunc uses it)."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def features_tensor(out: Any) -> torch.Tensor:
    """transformers ≥ 5 returns model outputs from get_*_features; older versions return the tensor."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"cannot find embeddings in {type(out).__name__}")
    return pooled


class HashTokenizer:
    """A tokenizer-free stand-in for tiny random text towers: words → hashed ids. Only for tests/benchmarks.

    Ids: 0 = pad, 1 = bos, vocab−1 = eos (the largest id, so CLIP's argmax pooling finds it).
    """

    def __init__(self, vocab_size: int, max_length: int, pad_id: int = 0) -> None:
        if vocab_size < 8:
            raise ValueError("vocab_size must be at least 8")
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.pad_id = pad_id
        self.bos_id = 1 if pad_id != 1 else 2
        self.eos_id = vocab_size - 1
        self._first = max(self.pad_id, self.bos_id) + 1

    def _word_id(self, word: str) -> int:
        digest = hashlib.sha256(word.lower().encode()).digest()
        return self._first + int.from_bytes(digest[:4], "little") % (self.eos_id - self._first)

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        rows = []
        for text in texts:
            ids = [self._word_id(w) for w in text.split()][: self.max_length - 2]
            rows.append([self.bos_id, *ids, self.eos_id])
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # (B, S)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}
