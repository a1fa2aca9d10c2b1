"""Progress reporting that suits where the output goes.

On an interactive terminal a rich progress bar is pleasant; in a CI log or a SLURM ``.out`` file a
redrawn bar becomes thousands of carriage-return fragments. So: rich bar on a TTY, and otherwise
one plain line every ``log_every_n_steps`` optimizer steps (``step N/M loss x samples/s y``).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import lightning as L

from peftbench.measure.throughput import batch_size


def is_interactive(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams (pytest capture, nohup)
        return False


class PlainProgressLog(L.Callback):
    """Prints ``step N/M loss x.xxx samples/s y.y elapsed Ts`` every ``every_n_steps`` optimizer
    steps (and after the last one), from rank 0 only, flushed so ``tail -f`` shows it at once."""

    def __init__(self, every_n_steps: int = 25, stream: TextIO | None = None):
        self.every = max(1, int(every_n_steps))
        self.stream = stream
        self._t0 = self._t_last = 0.0
        self._samples = 0
        self._last_step = 0

    def _print(self, trainer: L.Trainer, text: str) -> None:
        if trainer.is_global_zero:
            print(text, file=self.stream or sys.stdout, flush=True)

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = self._t_last = time.perf_counter()
        self._samples, self._last_step = 0, trainer.global_step
        total = trainer.estimated_stepping_batches
        self._print(trainer, f"training: {total if total != float('inf') else '?'} optimizer steps")

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._samples += batch_size(batch)
        step = trainer.global_step
        total = trainer.estimated_stepping_batches
        last = total != float("inf") and step >= total
        if step == self._last_step or (step % self.every and not last):
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        now = time.perf_counter()
        rate = self._samples / max(now - self._t_last, 1e-9)
        loss_s = f"{float(loss):.4f}" if loss is not None else "n/a"
        total_s = str(int(total)) if total != float("inf") else "?"
        self._print(trainer, f"step {step}/{total_s} loss {loss_s} samples/s {rate:.1f} "
                             f"elapsed {now - self._t0:.0f}s")
        self._t_last, self._samples, self._last_step = now, 0, step


def progress_callbacks(enable_progress_bar: bool, log_every_n_steps: int,
                       stream: TextIO | None = None) -> tuple[list[L.Callback], bool]:
    """(callbacks, enable_progress_bar for the Trainer). ``trainer.enable_progress_bar=false``
    silences both the bar and the plain lines."""
    if not enable_progress_bar:
        return [], False
    if is_interactive(stream):
        try:
            from lightning.pytorch.callbacks import RichProgressBar

            return [RichProgressBar(leave=True)], True
        except (ImportError, ModuleNotFoundError):  # rich not installed: Lightning's tqdm bar
            return [], True
    return [PlainProgressLog(log_every_n_steps, stream)], False
