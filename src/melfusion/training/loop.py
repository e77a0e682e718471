"""The accelerate training loop shared by the MeLFusion and Art2Mus trainers: epoch-seeded data order,
gradient accumulation, logging, atomic checkpoints and exact resume.

Checkpoints hold only safetensors and JSON (``checkpoint_format`` 2): the model, optimiser, LR scheduler,
grad scaler, registered objects (EMA) and each process's RNG states are written and read here, never with
pickle, so a tampered checkpoint folder cannot run code on ``--resume``. Sharded backends (FSDP, DeepSpeed,
Megatron-LM, XLA) keep accelerate's ``save_state`` for their model and optimiser shards (accelerate reads
those with ``weights_only=True``; DeepSpeed and Megatron-LM with their own loaders)."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from tqdm.auto import tqdm

from melfusion.errors import MelfusionInputError
from melfusion.utils.files import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)
CHECKPOINT_RE = re.compile(r"^step-(\d+)$")
CHECKPOINT_FORMAT = 2  # 1 (no field): accelerate save_state with pickled custom objects, no longer read
EXPORT_MARKER = "melfusion_export.json"  # written into every folder `export` writes
_SHARDED = frozenset({"DEEPSPEED", "FSDP", "MEGATRON_LM", "XLA"})  # distributed types kept on save_state
_PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt"})
SILENCE_DBFS = -60.0  # a training window whose level around its mean is below this counts as silent


class EpochSampler(torch.utils.data.Sampler[int]):
    """A fresh permutation per epoch from (seed, epoch) alone, so a resumed run sees the same order."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class BalancedEpochSampler(EpochSampler):
    """Per epoch, a fresh random `sizes[i]` of the indices in `cells[i]` (`melfusion.data.balance`), all
    shuffled; from (seed, epoch) alone like `EpochSampler`, and of a fixed length, so resume is exact."""

    def __init__(self, cells: list[list[int]], sizes: list[int], seed: int = 0):
        if any(s > len(c) or s < 0 for c, s in zip(cells, sizes, strict=True)):
            raise ValueError("each size must be in [0, len(cell)]")
        super().__init__(int(sum(sizes)), seed)
        self.cells, self.sizes = cells, sizes

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        chosen = [
            cell[j]
            for cell, size in zip(self.cells, self.sizes)
            if size
            for j in torch.randperm(len(cell), generator=g)[:size].tolist()
        ]
        return iter([chosen[j] for j in torch.randperm(len(chosen), generator=g).tolist()])


def find_checkpoint(output_dir: str | os.PathLike, which: str) -> Path:
    """``which`` = "latest" or a checkpoint folder path."""
    if which != "latest":
        path = Path(which)
        if not (path / "trainer_state.json").is_file():
            raise MelfusionInputError(f"--resume {which}: not a checkpoint folder (no trainer_state.json)")
        return path
    root = Path(output_dir) / "checkpoints"
    found = (
        sorted(
            (int(m.group(1)), p)
            for p in root.glob("step-*")
            if (m := CHECKPOINT_RE.match(p.name)) and (p / "trainer_state.json").is_file()
        )
        if root.is_dir()
        else []
    )
    if not found:
        raise MelfusionInputError(
            f"--resume latest: no checkpoint under {root} (train without --resume first)"
        )
    return found[-1][1]


def flat_dict(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_dict(v, key + "."))
        else:
            out[key] = v if isinstance(v, int | float | str | bool) else str(v)
    return out


# ------------------------------------------------------------------------------------- state files
# A state (a state_dict: nested dicts, lists, tuples, numbers, strings, tensors, numpy arrays) is written as
# NAME.json (the structure; tensors replaced by {"__tensor__": key}) and NAME.safetensors (the tensors).
# Tags keep what JSON loses: tuples, dicts with non-string keys, non-finite floats, numpy arrays.
_TAGS = frozenset({"__tensor__", "__tuple__", "__dict__", "__float__", "__ndarray__"})


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError("object arrays are not saved in checkpoints")
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        if not all(isinstance(k, str | int) and not isinstance(k, bool) for k in obj):
            raise TypeError(f"state dict keys must be str or int, got {sorted(map(repr, obj))[:3]}")
        return {"__dict__": [[k, _encode(v, tensors)] for k, v in obj.items()]}
    raise TypeError(f"{type(obj).__name__} is not saved in checkpoints (tensors, numbers, strings only)")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    tag = next((k for k in obj if k in _TAGS), None)
    if tag is None:
        return {k: _decode(v, tensors) for k, v in obj.items()}
    value = obj[tag]
    if tag == "__tensor__":
        return tensors[value]
    if tag == "__tuple__":
        return tuple(_decode(v, tensors) for v in value)
    if tag == "__dict__":
        return {k: _decode(v, tensors) for k, v in value}
    if tag == "__float__":
        if value not in ("nan", "inf", "-inf"):
            raise ValueError(f"bad float {value!r}")
        return float(value)
    dtype = np.dtype(obj["dtype"])
    if dtype.hasobject:
        raise ValueError("object arrays are not read from checkpoints")
    return np.asarray(value, dtype=dtype).reshape(obj["shape"])


def save_state_files(state: Any, stem: Path) -> None:
    """``state`` → ``stem``.json + ``stem``.safetensors, each written atomically."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors)
    seen: set[int] = set()
    for key, t in tensors.items():  # safetensors refuses shared or strided storage
        ptr = t.untyped_storage().data_ptr()
        tensors[key] = t.clone() if ptr in seen and t.numel() else t.contiguous()
        seen.add(ptr)
    with atomic_path(stem.with_name(stem.name + ".safetensors")) as tmp:
        save_file(tensors, str(tmp))
    atomic_write_json(stem.with_name(stem.name + ".json"), tree)


def load_state_files(stem: Path) -> Any:
    """What `save_state_files` wrote (JSON + safetensors only: nothing here can run code)."""
    tensors = load_file(str(stem.with_name(stem.name + ".safetensors")))
    tree = json.loads(stem.with_name(stem.name + ".json").read_text(encoding="utf-8"))
    return _decode(tree, tensors)


def _device_rng() -> tuple[str, Any] | None:
    for name in ("cuda", "xpu"):
        module = getattr(torch, name, None)
        if module is not None and module.is_available():
            return name, module
    return None


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    device = _device_rng()
    if device is not None:
        state[device[0]] = device[1].get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    device = _device_rng()
    if device is not None and device[0] in state:
        device[1].set_rng_state_all(state[device[0]])


def _layout(accelerator: Any) -> str:
    kind = getattr(accelerator.distributed_type, "name", str(accelerator.distributed_type))
    return "accelerate" if kind in _SHARDED else "safetensors"


def _first_line(err: BaseException, limit: int = 200) -> str:
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return text if len(text) <= limit else text[:limit] + "..."


# ------------------------------------------------------------------------------------------ export
def _is_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_export_target(
    path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Refuse an export folder whose replacement would destroy something: a file, a symbolic link, the run's
    own folder (``output_dir``, a folder holding it, or its checkpoints), one of the run's inputs (pretrained
    model folders, the feature cache) or a non-empty folder that is not an earlier export. Returns the
    resolved path."""
    given = Path(path).expanduser()
    if given.is_symlink():
        raise MelfusionInputError(f"--export {path} is a symbolic link; give the real folder it points to")
    target = given.resolve()
    run = Path(output_dir).expanduser().resolve()
    if _is_inside(run, target):
        raise MelfusionInputError(
            f"--export {path} is the run's output folder or holds it (train.output_dir={output_dir}); "
            "exporting there would delete the run's checkpoints: give a new folder, e.g. OUTPUT/final"
        )
    if _is_inside(target, run / "checkpoints"):
        raise MelfusionInputError(
            f"--export {path} is inside the run's checkpoints folder; give a new folder, e.g. OUTPUT/final"
        )
    for item in inputs:
        if not item:
            continue
        src = Path(item).expanduser().resolve()
        if _is_inside(src, target) or _is_inside(target, src):
            raise MelfusionInputError(
                f"--export {path} would overwrite this run's input {item}; give a new folder"
            )
    if target.exists():
        if not target.is_dir():
            raise MelfusionInputError(f"--export {path} is a file; give a folder path")
        if any(target.iterdir()) and not _is_earlier_export(target, run):
            raise MelfusionInputError(
                f"--export {path} is a non-empty folder that melfusion train did not export; its files are "
                "kept: give a new or empty folder (or remove this one yourself)"
            )
    return target


def _is_earlier_export(folder: Path, run: Path) -> bool:
    if (folder / EXPORT_MARKER).is_file():
        return True
    # exports of older versions had no marker: accept only the run's default one, a model folder
    legacy = folder == run / "final" and (
        (folder / "model_index.json").is_file() or (folder / "config.json").is_file()
    )
    return legacy


def write_export(
    path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    write: Callable[[Path], None],
    about: dict[str, Any],
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Write an export folder next to ``path`` with ``write(tmp)``, mark it as ours and swap it into place
    (an earlier export there is removed only after the new one is complete). Call on the main process."""
    path = check_export_target(path, output_dir, inputs)
    for stale in [*path.parent.glob(f".{path.name}.*.tmp"), *path.parent.glob(f".{path.name}.*.old")]:
        shutil.rmtree(stale, ignore_errors=True)  # left by an export that was killed
    token = secrets.token_hex(4)
    tmp = path.with_name(f".{path.name}.{token}.tmp")
    old = path.with_name(f".{path.name}.{token}.old")
    try:
        write(tmp)
        atomic_write_json(tmp / EXPORT_MARKER, {"written_by": "melfusion train", **about})
        check_export_target(path, output_dir, inputs)  # it may have changed while writing
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists():
                os.replace(old, path)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return path


# -------------------------------------------------------------------------------------------- loop
class Trainer:
    """The trainer base (in the spirit of audiocraft's StandardSolver): it owns the accelerator, the
    optimiser's schedule and `accelerator.prepare`, the loop with gradient accumulation and clipping,
    logging, validation calls, checkpoints (safetensors + JSON) and exact resume. A subclass builds its model
    and data in ``__init__`` with :meth:`setup_accelerator` and :meth:`setup_optimization`, and supplies
    ``compute_loss(batch)``, ``validate()``, ``_trainable_parameters()`` and ``_loop_model()`` (plus the hooks
    below). Its config has ``train`` (a :class:`~melfusion.training.settings.TrainSchedule`), ``optim``
    (``lr_scheduler``, ``warmup_steps``, ``max_grad_norm``) and ``to_dict()``; it sets ``loader``,
    ``sampler``, ``train_set`` and ``val_set``."""

    tracker_name = "train"

    def setup_accelerator(self, accelerator: Any = None) -> Any:
        """``output_dir``, the accelerator (tensorboard logging when asked for and installed) and the seed."""
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, set_seed

        t = self.config.train
        self.output_dir = Path(t.output_dir)
        log_with = None
        if t.report_to == "tensorboard":
            try:
                import tensorboard  # noqa: F401

                log_with = "tensorboard"
            except ImportError:
                logger.info("tensorboard is not installed; logging to the console only")
        self.accelerator = accelerator or Accelerator(
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            mixed_precision=t.mixed_precision,
            log_with=log_with,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir)),
        )
        set_seed(t.seed)
        return self.accelerator

    def read_records(self, manifest: str) -> list[Any]:
        """A manifest's triplets (``config.data.format``; invalid rows skipped with a warning), checked file by
        file when ``config.data.check`` (unusable files reported and left out)."""
        from melfusion.data.check import check_manifest
        from melfusion.data.manifest import read_manifest_with_problems

        records, problems = read_manifest_with_problems(manifest, self.config.data.format)
        if problems:
            logger.warning("skipped %d invalid manifest row(s), e.g. %s", len(problems), problems[0])
        if getattr(self.config.data, "check", False):  # the component trainers decode every file anyway
            records = check_manifest(records, sample_rate=self.mel_config.sample_rate, progress=False).usable
        return records

    def setup_optimization(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> torch.nn.Module:
        """The learning-rate schedule of ``config.optim``, then ``accelerator.prepare`` of the model, optimiser,
        loader and schedule; the counters start at 0. Returns the prepared model."""
        from diffusers.optimization import get_scheduler

        o, t, acc = self.config.optim, self.config.train, self.accelerator
        lr_scheduler = get_scheduler(
            o.lr_scheduler,
            optimizer,
            num_warmup_steps=o.warmup_steps * acc.num_processes,
            num_training_steps=t.max_steps * acc.num_processes,
        )
        model, self.optimizer, self.loader, self.lr_scheduler = acc.prepare(
            model, optimizer, self.loader, lr_scheduler
        )
        self.global_step = 0
        self.epoch = 0
        self.batches_in_epoch = 0
        self.history: list[dict[str, float]] = []
        return model

    def _after_optimizer_step(self) -> None:
        """Hook after every optimiser call (also the accumulation micro-steps)."""

    def _after_sync_step(self, params: list[torch.nn.Parameter]) -> None:
        """Hook after each real (synchronised) optimiser step, e.g. EMA."""

    def _checkpoint_state(self) -> dict[str, Any]:
        return {}

    def _checkpoint_objects(self) -> dict[str, Any]:
        """Extra objects with state_dict / load_state_dict saved in checkpoints, by file stem (e.g. EMA)."""
        return {}

    def _after_load_checkpoint(self) -> None:
        """Hook after a checkpoint's state is loaded (e.g. check the EMA and move it to the device); a
        ValueError here refuses the checkpoint."""

    def train(self, resume: str | None = None) -> list[dict[str, float]]:
        t = self.config.train
        acc = self.accelerator
        if resume:
            checkpoint = find_checkpoint(self.output_dir, resume)
            self.load_checkpoint(checkpoint)
            if acc.is_main_process:
                print(f"resumed from {checkpoint} at step {self.global_step} (epoch {self.epoch})", flush=True)
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.output_dir / "config.json", self.config.to_dict())
        acc.init_trackers(self.tracker_name, config=flat_dict(self.config.to_dict()))
        bar = tqdm(
            total=t.max_steps, initial=self.global_step, desc="train", disable=not acc.is_local_main_process
        )
        try:
            self._run(bar)
        finally:  # also on errors: a refused corpus leaves no stray progress bar
            bar.close()
        acc.wait_for_everyone()
        return self.history

    def _run(self, bar: tqdm) -> None:
        t = self.config.train
        acc = self.accelerator
        params = self._trainable_parameters()
        model = self._loop_model()
        running: list[float] = []
        # items seen / unreadable / silent / shorter than the window on the first pass over the data
        audit = np.zeros(4, dtype=np.int64)
        audited = False
        while self.global_step < t.max_steps:
            if self.batches_in_epoch >= len(self.loader):  # resumed exactly at an epoch boundary
                self.epoch += 1
                self.batches_in_epoch = 0
            self.train_set.set_epoch(self.epoch)
            loader = (
                acc.skip_first_batches(self.loader, self.batches_in_epoch)
                if self.batches_in_epoch
                else self.loader
            )
            # accelerate's loaders reset the sampler epoch to their own pass count on __iter__: align both
            for dl in {id(self.loader): self.loader, id(loader): loader}.values():
                if hasattr(dl, "set_epoch"):
                    dl.set_epoch(self.epoch)
            self.sampler.set_epoch(self.epoch)
            for batch in loader:
                self.batches_in_epoch += 1
                skipped = int(batch.get("num_skipped", 0))
                self.num_skipped += skipped
                if not audited:
                    audit += _audit_batch(batch, skipped)
                if len(batch["text"]) == 0:
                    continue
                with acc.accumulate(model):
                    loss = self.compute_loss(batch)
                    acc.backward(loss)
                    if acc.sync_gradients and self.config.optim.max_grad_norm > 0:
                        acc.clip_grad_norm_(params, self.config.optim.max_grad_norm)
                    self.optimizer.step()
                    self.lr_scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self._after_optimizer_step()
                running.append(float(acc.gather(loss.detach()[None]).mean()))
                if not acc.sync_gradients:
                    continue
                self.global_step += 1
                self._after_sync_step(params)
                bar.update()
                record = {
                    "step": self.global_step,
                    "loss": float(np.mean(running)),
                    "lr": self.lr_scheduler.get_last_lr()[0],
                    "skipped_items": self.num_skipped,
                }
                running = []
                self.history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                if self.global_step % t.log_every == 0 or self.global_step == 1:
                    acc.log({k: v for k, v in record.items() if k != "step"}, step=self.global_step)
                if t.checkpoint_every and self.global_step % t.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.val_set is not None and t.validate_every and self.global_step % t.validate_every == 0:
                    self.validate()
                if self.global_step >= t.max_steps:
                    break
            else:
                self.epoch += 1
                self.batches_in_epoch = 0
                if not audited:  # a whole pass: refuse a corpus with nothing to learn before looping on it
                    self._report_audit(audit)
                    audited = True
        if not audited:
            self._report_audit(audit)

    def _report_audit(self, audit: np.ndarray) -> None:
        """Refuse training on nothing (every item unreadable or silent); warn once about silent windows and
        clips shorter than the training window (zero-padded). Counts are summed over the processes."""
        acc = self.accelerator
        total = acc.reduce(torch.as_tensor(audit, device=acc.device), reduction="sum").cpu().tolist()
        seen, unreadable, silent, short = (int(v) for v in total)
        if seen + unreadable == 0:
            return
        manifest = getattr(getattr(self.config, "data", None), "train_manifest", "the training manifest")
        if seen - silent <= 0:
            raise MelfusionInputError(
                f"nothing to train on: of {seen + unreadable} training item(s) read from {manifest}, "
                f"{unreadable} could not be read and {silent} are silent; run `melfusion data check "
                f"{manifest}` to list them and fix or drop them"
            )
        if (silent or short) and acc.is_main_process:
            window = getattr(self, "num_samples", None)
            rate = getattr(getattr(self, "mel_config", None), "sample_rate", None)
            length = f" ({window / rate:.2f} s)" if window and rate else ""
            logger.warning(
                "training data: of %d item(s) read, %d are silent (below %g dBFS) and %d are shorter "
                "than the training window%s and zero-padded%s; set data.check=true or run `melfusion data "
                "check` to drop them",
                seen,
                silent,
                SILENCE_DBFS,
                short,
                length,
                f", {unreadable} unreadable" if unreadable else "",
            )

    # ------------------------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Model(s), optimiser, LR scheduler, grad scaler, extra objects (EMA), RNG states and data position
        as safetensors + JSON, written to a temporary folder and renamed into place."""
        acc = self.accelerator
        root = self.output_dir / "checkpoints"
        final = root / f"step-{self.global_step:07d}"
        tmp = root / f".step-{self.global_step:07d}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        layout = _layout(acc)
        if layout == "accelerate":
            acc.save_state(str(tmp), safe_serialization=True)
        else:
            if acc.is_main_process:
                save_model(acc.unwrap_model(self._loop_model()), str(tmp / "model.safetensors"))
                save_state_files(self.optimizer.state_dict(), tmp / "optimizer")
                save_state_files(self.lr_scheduler.state_dict(), tmp / "scheduler")
                if acc.scaler is not None:
                    save_state_files(acc.scaler.state_dict(), tmp / "scaler")
            save_state_files(_rng_state(), tmp / f"rng_{acc.process_index}")
        acc.wait_for_everyone()
        if acc.is_main_process:
            for name, obj in self._checkpoint_objects().items():
                save_state_files(obj.state_dict(), tmp / name)
            atomic_write_json(
                tmp / "trainer_state.json",
                {
                    **self._checkpoint_state(),
                    "checkpoint_format": CHECKPOINT_FORMAT,
                    "layout": layout,
                    "accelerator_step": int(acc.step),
                    "global_step": self.global_step,
                    "epoch": self.epoch,
                    "batches_in_epoch": self.batches_in_epoch,
                    "num_skipped": self.num_skipped,
                    "num_processes": acc.num_processes,
                },
            )
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._prune_checkpoints(root)
        acc.wait_for_everyone()
        return final

    def _prune_checkpoints(self, root: Path) -> None:
        keep = self.config.train.keep_checkpoints
        found = sorted(
            (int(m.group(1)), p) for p in root.glob("step-*") if (m := CHECKPOINT_RE.match(p.name))
        )
        for _, path in found[:-keep] if keep > 0 else []:
            shutil.rmtree(path, ignore_errors=True)

    def load_checkpoint(self, path: Path) -> None:
        """Restore what `save_checkpoint` wrote. Reads only JSON and safetensors (accelerate's own shard
        files on sharded backends); refuses pickles and checkpoints of the old pickle-based format."""
        acc = self.accelerator
        path = Path(path)
        state = _read_trainer_state(path)
        layout = state.get("layout")
        if layout != _layout(acc):
            raise MelfusionInputError(
                f"checkpoint {path} was written with the {layout!r} layout but this run uses "
                f"{_layout(acc)!r} (another distributed backend); resume on the backend that wrote it"
            )
        _refuse_pickles(path, layout)
        current = "checkpoint files"
        try:
            if layout == "accelerate":
                current = "accelerate state"
                acc.load_state(str(path))
            else:
                current = "model.safetensors"
                load_model(acc.unwrap_model(self._loop_model()), str(path / "model.safetensors"), strict=True)
                current = "optimizer"
                self.optimizer.load_state_dict(load_state_files(path / "optimizer"))
                _check_optimizer_shapes(self.optimizer)
                current = "scheduler"
                self.lr_scheduler.load_state_dict(load_state_files(path / "scheduler"))
                if acc.scaler is not None:
                    current = "scaler"
                    acc.scaler.load_state_dict(load_state_files(path / "scaler"))
                rng = path / f"rng_{acc.process_index}"
                if rng.with_name(rng.name + ".json").is_file():
                    current = rng.name
                    _set_rng_state(load_state_files(rng))
                else:
                    logger.warning(
                        "%s has no RNG state for process %d (written by %s processes): the resumed run "
                        "draws different noise than an uninterrupted one",
                        path,
                        acc.process_index,
                        state.get("num_processes"),
                    )
            for name, obj in self._checkpoint_objects().items():
                current = name
                if not path.joinpath(name + ".json").is_file():
                    raise MelfusionInputError(
                        f"checkpoint {path} has no {name} state ({name}.json); resume with the settings "
                        f"that wrote it (e.g. the same train.ema_decay) or start a new run"
                    )
                obj.load_state_dict(load_state_files(path / name))
            current = "registered state"
            self._after_load_checkpoint()
        except MelfusionInputError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, IndexError, SafetensorError) as err:
            raise MelfusionInputError(
                f"checkpoint {path}: {current} does not load into this run ({_first_line(err)}); resume with "
                "the config that wrote it or start a new run"
            ) from None
        acc.step = int(state.get("accelerator_step", 0))
        self.global_step = int(state["global_step"])
        self.epoch = int(state["epoch"])
        self.batches_in_epoch = int(state["batches_in_epoch"])
        self.num_skipped = int(state.get("num_skipped", 0))
        logger.info("resumed from %s at step %d", path, self.global_step)


def _check_optimizer_shapes(optimizer: Any) -> None:
    """Per-parameter optimiser state (Adam moments, momentum) must have its parameter's shape: torch does not
    check, and a wrong one would only fail at the first step."""
    opt = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    for param, state in opt.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.ndim and value.shape != param.shape:
                raise ValueError(
                    f"state {key!r} has shape {tuple(value.shape)}, its parameter {tuple(param.shape)}"
                )


def _read_trainer_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
        for key in ("global_step", "epoch", "batches_in_epoch"):
            int(state[key])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MelfusionInputError(
            f"checkpoint {path}: trainer_state.json is unreadable ({_first_line(err)}); resume from another "
            "checkpoint"
        ) from None
    if state.get("checkpoint_format") != CHECKPOINT_FORMAT:
        raise MelfusionInputError(
            f"checkpoint {path} was written by an older melfusion in accelerate's pickle format, which is no "
            "longer read (a pickle can run code); start a new run or export it with the version that wrote it"
        )
    return state


def _refuse_pickles(path: Path, layout: str) -> None:
    """A checkpoint we wrote holds no pickle (accelerate's shard files aside); one that does was tampered
    with or is of another format: refuse it, naming the file, before anything is read."""
    for entry in sorted(path.iterdir()):
        name = entry.name
        custom = name.startswith("custom_checkpoint_")
        if custom or (layout != "accelerate" and entry.suffix.lower() in _PICKLE_SUFFIXES):
            raise MelfusionInputError(
                f"checkpoint {path} holds {name}, a pickle file melfusion never reads (it could run code); "
                "remove it or resume from a checkpoint melfusion wrote"
            )


def _audit_batch(batch: dict[str, Any], skipped: int) -> np.ndarray:
    """[items, unreadable, silent, shorter than the window] of one batch (audio batches; else items only)."""
    audio = batch.get("audio")
    n = len(batch.get("text", ()))
    if not isinstance(audio, torch.Tensor) or audio.ndim != 2 or n == 0:
        return np.array([n, skipped, 0, 0], dtype=np.int64)
    lengths = batch.get("audio_length")
    lengths = lengths.tolist() if isinstance(lengths, torch.Tensor) else [audio.shape[-1]] * audio.shape[0]
    silent = short = 0
    for row, length in zip(audio, lengths):
        length = max(1, min(int(length), row.shape[-1]))
        short += length < row.shape[-1]
        level = float(row[:length].float().std(unbiased=False)) if length > 1 else 0.0
        silent += level <= 10 ** (SILENCE_DBFS / 20)
    return np.array([n, skipped, silent, short], dtype=np.int64)
