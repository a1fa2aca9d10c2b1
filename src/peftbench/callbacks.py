"""Small Lightning callbacks that are part of every run (not measurement)."""

from __future__ import annotations

import time

import lightning as L
import torch

from peftbench.failures import Diverged


class DivergenceCallback(L.Callback):
    """Stop with status ``diverged`` when the loss is NaN/inf; checked every n steps so the hot
    path does not sync on every step."""

    def __init__(self, every_n_steps: int = 10):
        self.every = max(1, every_n_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx % self.every == 0:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            if loss is not None and not torch.isfinite(loss).all():
                raise Diverged(f"loss became {loss.item()} at step {trainer.global_step}")


class FirstStepTimer(L.Callback):
    """Seconds from the start of the run to the end of the first optimizer step."""

    def __init__(self, t_start: float):
        self.t_start, self.seconds = t_start, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.t_start
