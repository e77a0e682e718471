"""The accelerate training loop shared by the MeLFusion and Art2Mus trainers: epoch-seeded data order,
gradient accumulation, logging, atomic checkpoints (accelerate ``save_state``) and exact resume."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from melfusion.errors import MelfusionInputError
from melfusion.utils.files import atomic_write_json

logger = logging.getLogger(__name__)
CHECKPOINT_RE = re.compile(r"^step-(\d+)$")


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


class TrainLoopMixin:
    """Needs: accelerator, config (.train: max_steps, log_every, checkpoint_every, validate_every,
    keep_checkpoints; .optim.max_grad_norm; .to_dict()), output_dir, loader, sampler, train_set, val_set,
    optimizer, lr_scheduler, compute_loss(batch), validate(), _trainable_parameters(), _loop_model(),
    tracker_name; and the counters global_step, epoch, batches_in_epoch, num_skipped, history."""

    tracker_name = "train"

    def _after_optimizer_step(self) -> None:
        """Hook after every optimiser call (also the accumulation micro-steps)."""

    def _after_sync_step(self, params: list[torch.nn.Parameter]) -> None:
        """Hook after each real (synchronised) optimiser step, e.g. EMA."""

    def _checkpoint_state(self) -> dict[str, Any]:
        return {}

    def train(self, resume: str | None = None) -> list[dict[str, float]]:
        t = self.config.train
        acc = self.accelerator
        if resume:
            self.load_checkpoint(find_checkpoint(self.output_dir, resume))
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.output_dir / "config.json", self.config.to_dict())
        acc.init_trackers(self.tracker_name, config=flat_dict(self.config.to_dict()))
        bar = tqdm(
            total=t.max_steps, initial=self.global_step, desc="train", disable=not acc.is_local_main_process
        )
        params = self._trainable_parameters()
        model = self._loop_model()
        running: list[float] = []
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
                self.num_skipped += int(batch.get("num_skipped", 0))
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
        bar.close()
        acc.wait_for_everyone()
        return self.history

    def save_checkpoint(self) -> Path:
        """Model(s), optimiser, LR scheduler, registered state (EMA), RNG states and data position,
        written to a temporary folder and renamed into place."""
        acc = self.accelerator
        root = self.output_dir / "checkpoints"
        final = root / f"step-{self.global_step:07d}"
        tmp = root / f".step-{self.global_step:07d}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        if acc.is_main_process:
            atomic_write_json(
                tmp / "trainer_state.json",
                {
                    **self._checkpoint_state(),
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
        self.accelerator.load_state(str(path))
        state = json.loads((path / "trainer_state.json").read_text())
        self.global_step = int(state["global_step"])
        self.epoch = int(state["epoch"])
        self.batches_in_epoch = int(state["batches_in_epoch"])
        self.num_skipped = int(state.get("num_skipped", 0))
        logger.info("resumed from %s at step %d", path, self.global_step)
