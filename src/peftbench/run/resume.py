"""Resumable runs: checkpoints of the trainable state only, and an exact mid-epoch resume.

Why each piece exists:
- The frozen base model is reloaded from its source on every launch, so a checkpoint keeps only
  parameters with ``requires_grad`` (plus buffers) — saving the base would cost disk and time
  for nothing (DESIGN pitfall). Lightning loads it back with ``strict_loading = False``.
- Lightning restores optimizer, scheduler and loop counters, but not the position inside a
  shuffled epoch of a plain DataLoader (it restarts the epoch and warns), nor the RNG state that
  dropout draws from. ``ResumableRandomSampler`` draws epoch ``e``'s order from ``seed + e``
  and skips the batches a checkpoint says were consumed; ``TrainableCheckpoint`` stores that
  position and the RNG states. With both, a run killed and resumed on CPU ends with the same
  weights as an uninterrupted one (tests/test_resume.py).
- ``last.ckpt`` is written to a temp file and renamed, so a SIGKILL mid-write never leaves a
  truncated checkpoint behind.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger("peftbench")

CKPT_DIR = "checkpoints"
LAST = "last.ckpt"
_KEY = "peftbench"


def checkpoint_dir(out: Path) -> Path:
    return Path(out) / CKPT_DIR


def trainable_keys(module: torch.nn.Module) -> set[str]:
    """state_dict keys worth saving: trainable parameters and buffers (never frozen weights,
    nor bitsandbytes' quantisation side-entries of frozen 4-bit weights)."""
    keys = {n for n, p in module.named_parameters() if p.requires_grad}
    keys |= {n for n, _ in module.named_buffers()}
    return keys


class ResumableRandomSampler(torch.utils.data.Sampler[int]):
    """A random sampler whose epoch order depends only on ``(seed, epoch)`` and which can skip
    the first ``skip`` samples of one epoch (the part a checkpoint already trained on)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.skip = n, int(seed), 0, 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at the start of every epoch
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, batches_done: int, batch_size: int) -> tuple[int, int]:
        """Continue a checkpointed run: epoch ``epoch`` minus its first ``batches_done`` batches.
        (set here, not only by ``set_epoch``: with worker processes indices are drawn before it)"""
        if batches_done * batch_size >= self.n:  # saved on an epoch's last batch
            epoch, batches_done = epoch + 1, 0
        self.epoch, self.skip = epoch, batches_done * batch_size
        return epoch, batches_done

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        skip, self.skip = self.skip, 0
        return iter(order[skip:])

    def __len__(self) -> int:
        return self.n


def resumable_loader(loader: torch.utils.data.DataLoader, seed: int) -> torch.utils.data.DataLoader:
    """The same training DataLoader with a ``ResumableRandomSampler``; loaders with their own
    batch sampler (length grouping: ``seed + epoch`` and ``resume_at`` already) are returned unchanged."""
    if not isinstance(loader.sampler, torch.utils.data.RandomSampler) or loader.batch_size is None:
        return loader
    return torch.utils.data.DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=ResumableRandomSampler(len(loader.dataset), seed),
        collate_fn=loader.collate_fn, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
        drop_last=loader.drop_last, persistent_workers=loader.persistent_workers,
    )


class TrainableCheckpoint(ModelCheckpoint):
    """``<out>/checkpoints/last.ckpt`` every ``every_n_steps`` optimizer steps: trainable
    weights, optimizer/scheduler/loop state, RNG states, the data position and the run id."""

    def __init__(self, out: Path, every_n_steps: int, run_id: str, sampler: Any = None):
        super().__init__(dirpath=str(checkpoint_dir(out)), save_last=True, save_top_k=0,
                         every_n_train_steps=max(1, int(every_n_steps)), enable_version_counter=False)
        self.run_id, self.sampler = run_id, sampler
        self.resumed_from_step: int | None = None
        self._rng_to_restore: dict[str, Any] | None = None
        self.batch_size = 0  # samples per batch of the loader (a batch sampler knows its own)

    # ---- saving --------------------------------------------------------------------------------
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        keep = trainable_keys(pl_module)
        sd = checkpoint.get("state_dict", {})
        checkpoint["state_dict"] = {k: v for k, v in sd.items() if k in keep}
        epoch_loop = trainer.fit_loop.epoch_loop
        checkpoint[_KEY] = {
            "run_id": self.run_id,
            "rng": _safe_rng(_collect_rng_states(include_cuda=torch.cuda.is_available())),
            # batches of the current epoch already trained on (saved from on_train_batch_end,
            # where `processed` already counts this batch)
            "epoch_batches_done": int(epoch_loop.batch_progress.current.processed),
            "epoch": int(trainer.current_epoch),
        }

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        tmp = f"{filepath}.tmp"
        super()._save_checkpoint(trainer, tmp)
        if trainer.is_global_zero and os.path.exists(tmp):
            os.replace(tmp, filepath)

    def on_validation_end(self, trainer, pl_module) -> None:
        """Saves follow optimizer steps only: a convergence-curve validation during fit adds none."""

    # ---- loading -------------------------------------------------------------------------------
    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(_KEY, {})
        self.resumed_from_step = int(checkpoint.get("global_step", 0))
        self._rng_to_restore = state.get("rng")
        done, epoch = int(state.get("epoch_batches_done", 0)), int(state.get("epoch", 0))
        # Exact position for one process, and for a batch sampler that splits epochs over the ranks
        # itself (length grouping; `done` counts this rank's batches). Otherwise, under DDP, Lightning
        # wraps the sampler in a DistributedSamplerWrapper and the epoch restarts (Lightning warns).
        if self.sampler is not None and getattr(self.sampler, "world", 1) == trainer.world_size:
            epoch, done = self.sampler.resume_at(epoch, done, self.batch_size)
        log.warning("resuming from %s at step %d (epoch %d, batch %d)", self.last_model_path or "checkpoint",
                    self.resumed_from_step, epoch, done)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Restored here, right before the next step, so nothing in between draws from the RNGs.
        if self._rng_to_restore is not None:
            _set_rng_states(_unsafe_rng(self._rng_to_restore))
            self._rng_to_restore = None


def _safe_rng(states: dict[str, Any]) -> dict[str, Any]:
    """numpy's state holds an ndarray, which ``torch.load(weights_only=True)`` (Lightning's
    default when resuming) refuses: store it as a tensor."""
    out = dict(states)
    if "numpy" in out:
        kind, keys, pos, has_gauss, gauss = out["numpy"]
        out["numpy"] = (kind, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(gauss))
    return out


def _unsafe_rng(states: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    out = dict(states)
    if "numpy" in out:
        kind, keys, pos, has_gauss, gauss = out["numpy"]
        out["numpy"] = (kind, np.asarray(keys.numpy(), dtype=np.uint32), pos, has_gauss, gauss)
    return out


def make_checkpoint_callback(cfg_ckpt: dict[str, Any], out: Path, run_id: str, loader) -> TrainableCheckpoint | None:
    if not cfg_ckpt or not cfg_ckpt.get("enabled", True):
        return None
    # the sampler that can skip what a checkpoint trained on: ours, or a length-grouping batch sampler
    sampler = next((s for s in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None))
                    if hasattr(s, "resume_at")), None)
    cb = TrainableCheckpoint(out, int(cfg_ckpt.get("every_n_steps", 50)), run_id, sampler)
    cb.batch_size = int(loader.batch_size or 0)
    return cb


def resume_path(out: Path, run_id: str) -> str | None:
    """``last.ckpt`` of this run in ``out``, or None (none, unreadable, or another run's)."""
    path = checkpoint_dir(out) / LAST
    if not path.is_file():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a broken checkpoint means: start over
        log.warning("ignoring unreadable checkpoint %s: %s", path, e)
        return None
    rid = ck.get(_KEY, {}).get("run_id")
    if rid != run_id:
        log.warning("ignoring %s: it belongs to run %s, not %s", path, rid, run_id)
        return None
    return str(path)


def remove_checkpoints(out: Path) -> None:
    """After a finished run the checkpoint is no longer needed (results.json + adapter are)."""
    shutil.rmtree(checkpoint_dir(out), ignore_errors=True)
