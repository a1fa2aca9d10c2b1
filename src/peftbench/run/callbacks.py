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
