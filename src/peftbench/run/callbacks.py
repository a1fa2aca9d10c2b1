"""Small Lightning callbacks that are part of every run (not measurement)."""

from __future__ import annotations

import time

import lightning as L
import torch

from peftbench.run import allocator
from peftbench.run.failures import Diverged


class DivergenceCallback(L.Callback):
    """Stop with status ``diverged`` when any step's loss is NaN/inf. Every step's loss is folded
    into a flag on its own device (no host sync); the flag is read every n steps and on the last
    one, so a NaN between reads — or in a run shorter than n — is never lost."""

    def __init__(self, every_n_steps: int = 10):
        self.every = max(1, every_n_steps)
        self.bad: torch.Tensor | None = None
        self.first_bad: torch.Tensor | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            nonfinite = ~torch.isfinite(loss.detach()).all()
            if self.bad is None:
                self.bad, self.first_bad = nonfinite, loss.detach()
            else:  # keep the first non-finite loss for the message
                self.first_bad = torch.where(self.bad, self.first_bad, loss.detach())
                self.bad = self.bad | nonfinite
        if batch_idx % self.every == 0:
            self._check(trainer)

    def on_train_end(self, trainer, pl_module):
        self._check(trainer)

    def _check(self, trainer) -> None:
        if self.bad is not None and bool(self.bad):
            raise Diverged(f"loss became {self.first_bad.item()} by step {trainer.global_step}")


class ShardBatches(L.Callback):
    """Tell a self-sharding batch sampler (length grouping) its rank once the ranks exist (before a
    checkpoint is restored); the Trainer then runs with ``use_distributed_sampler=False``, and the
    evaluation loaders split themselves (``predictions.eval_shard``) — except the convergence
    curve's capped subset, which every rank then scores whole (same values, world × the work)."""

    def __init__(self, batch_sampler) -> None:
        self.batch_sampler = batch_sampler

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.batch_sampler.set_shard(trainer.global_rank, trainer.world_size)


class FirstStepTimer(L.Callback):
    """Seconds from the start of the run to the end of the first optimizer step."""

    def __init__(self, t_start: float):
        self.t_start, self.seconds = t_start, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.t_start


class KeepFreedMemory(L.Callback):
    """``perf.keep_freed_memory``: glibc keeps freed memory for reuse while fitting (no page faults
    re-touching each step's activations), and gives the free part back when the fit ends
    (peftbench.run.allocator)."""

    def __init__(self) -> None:
        self.applied = False

    def on_fit_start(self, trainer, pl_module) -> None:
        allocator.release()  # what set-up freed goes back first: the peak counts from a clean start
        self.applied = allocator.keep_freed_memory()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # serialising allocates big buffers: hand the free holes back first, or the save grows the
        # heap past them and the run's peak RSS with it (tens of MiB on full fine-tuning)
        if self.applied:
            allocator.release()

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.applied:
            allocator.release()
            self.applied = False

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.on_fit_end(trainer, pl_module)  # an OOM retry or a diverged run hands it back too


class ConvergenceCurves(L.Callback):
    """``measure.curve_points``: the validation headline metric at evenly spaced steps, read after
    each validation Lightning runs during fit (``val_check_interval`` on a capped subset, see
    run/trainer.py), and the train loss averaged into at most ``max_points`` bins of steps. Losses
    are summed on their device (no per-step sync); both curves survive a resume (callback state)."""

    def __init__(self, metric: str, subset: int, max_points: int = 50):
        self.metric, self.subset, self.max_points = metric, int(subset), max(1, int(max_points))
        self.points: list[list[float]] = []
        self.batches, self.bin = 0, 1
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.train_loss: list[list[float]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        total = max(1, int(trainer.estimated_stepping_batches))
        self.bin = -(-total // self.max_points)
        n = -(-total // self.bin)
        if self.sums is None or len(self.sums) != n:
            self.sums, self.counts = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
        self.sums = self.sums.to(pl_module.device)
        self.counts = self.counts.to(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        accumulate = max(1, int(trainer.accumulate_grad_batches))
        step = self.batches // accumulate  # 0-based optimizer step of this batch
        self.batches += 1
        if loss is not None and self.sums is not None:
            b = min(step // self.bin, len(self.sums) - 1)
            self.sums[b] += loss.detach().double() * accumulate  # Lightning hands over loss / accumulate
            self.counts[b] += 1

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.metric)
        if trainer.state.fn == "fit" and not trainer.sanity_checking and value is not None:
            self.points.append([int(trainer.global_step), float(value)])

    def on_train_end(self, trainer, pl_module) -> None:
        """Reduce the bins over ranks (every rank runs this hook, as a collective needs)."""
        if self.sums is None:
            return
        sums, counts = self.sums, self.counts
        if trainer.world_size > 1:
            sums = trainer.strategy.reduce(sums.clone(), reduce_op="sum")
            counts = trainer.strategy.reduce(counts.clone(), reduce_op="sum")
        last = int(trainer.global_step)
        self.train_loss = [[min((b + 1) * self.bin, last), float(s / c)]
                           for b, (s, c) in enumerate(zip(sums.tolist(), counts.tolist())) if c > 0]

    def curves(self) -> dict:
        """The record's ``curves`` section (docs/concepts.md)."""
        def short(points: list[list[float]]) -> list[list[float]]:
            return [[int(s), float(f"{v:.6g}")] for s, v in points]

        return {"val": {"metric": self.metric, "subset": self.subset, "points": short(self.points)},
                "train_loss": short(self.train_loss)}

    def state_dict(self) -> dict:
        return {"points": self.points, "batches": self.batches,
                "sums": None if self.sums is None else self.sums.cpu(),
                "counts": None if self.counts is None else self.counts.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.points, self.batches = list(state.get("points", [])), int(state.get("batches", 0))
        self.sums, self.counts = state.get("sums"), state.get("counts")
