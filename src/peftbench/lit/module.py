"""The method- and task-agnostic LightningModule.

It never names a method or a task: it receives the adapted model (the method was applied before
the Trainer exists, so FSDP wraps the adapted model), a Task, and the optimizer settings
(lit/optim.py builds them).
"""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
import torch
import torchmetrics
from torch import nn

from peftbench.lit.optim import lr_factor, make_optimizer
from peftbench.lit.tasks import Task

ROW_IDS = "row_ids"  # batch key of the eval rows' indices in their split (run/predictions.py adds it)


class PeftLitModule(L.LightningModule):
    def __init__(self, model: nn.Module, task: Task, optim: dict[str, Any],
                 step_hook: Callable[[nn.Module, int], None] | None = None):
        super().__init__()
        self.model = model
        self.task = task
        self.optim = dict(optim)
        self.step_hook = step_hook
        self.val_metrics = task.metrics()
        self.test_metrics = task.metrics()
        self.val_loss = torchmetrics.MeanMetric()
        self.test_loss = torchmetrics.MeanMetric()
        # per-example records of the last evaluation of each split ("val"/"test"): every rank's rows,
        # once each, sorted by row id; only for batches that carry ROW_IDS
        self.examples: dict[str, dict[str, list]] = {}
        self._rows: list[dict[str, torch.Tensor]] = []

    def forward(self, **batch):
        return self.model(**batch)

    def on_train_start(self) -> None:
        # from_pretrained returns modules in eval mode and Lightning keeps sub-module modes:
        # switch to train mode so dropout behaves as the method's paper assumes.
        self.model.train()

    # ---- training ----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        loss = self.task.loss(self.model, batch)
        if self._logs_this_step():
            # without sync_dist: no cross-rank sync. prog_bar only when a bar is drawn: Lightning turns
            # progress-bar metrics into Python floats (.item(), a device sync) on every step it sees them.
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=self._has_bar(),
                     batch_size=self.task.rows(batch))
        return loss

    def _has_bar(self) -> bool:
        return self._trainer is not None and self.trainer.progress_bar_callback is not None

    def _logs_this_step(self) -> bool:
        """Only on the steps Lightning writes to the loggers (every ``log_every_n_steps``) unless a bar
        shows the loss: every ``self.log`` costs a result-collection update (~1 ms a step on CPU)."""
        if self._trainer is None or self._has_bar():
            return True
        n = self.trainer.log_every_n_steps
        return n > 0 and (self.global_step + 1) % n == 0

    def on_train_end(self) -> None:
        # Lightning zeroes gradients at the start of a step, so the last step's stay allocated through
        # evaluation (for full fine-tuning, one more copy of the model): free them here.
        self.model.zero_grad(set_to_none=True)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.step_hook is not None:
            self.step_hook(self.model, self.global_step)

    # ---- evaluation --------------------------------------------------------------------------
    def _eval_step(self, batch, metrics, loss_metric):
        ids = batch.pop(ROW_IDS, None)  # never reaches the model
        loss, weight = self.task.evaluate(self.model, batch, metrics)
        loss_metric.update(loss.detach(), weight)
        rows = self.task.pop_examples()
        if ids is not None and rows:
            self._rows.append({"ids": ids, **rows})

    def _eval_end(self, prefix, metrics, loss_metric):
        loss = loss_metric.compute()
        out = {f"{prefix}/loss": loss, **{f"{prefix}/{k}": v for k, v in self.task.from_loss(loss).items()}}
        for k, m in metrics.items():
            out[f"{prefix}/{k}"] = m.compute()
            m.reset()
        loss_metric.reset()
        self.log_dict(out, sync_dist=False)  # torchmetrics already synchronised the states
        rows = gather_rows(self._rows)  # on every rank, even one without rows: a collective under DDP
        if rows is not None:
            self.examples[prefix] = rows
        self._rows = []

    def _fresh(self, metrics, loss_metric) -> None:
        """Metric states re-made in this evaluation's grad mode: a state reset inside an earlier
        ``trainer.validate`` (inference mode, e.g. ``measure.before``) is an inference tensor that a
        validation during fit (no_grad, the convergence curve) may not update in place."""
        for m in [*metrics.values(), loss_metric]:
            m.reset()
        self._rows = []

    def on_validation_epoch_start(self):
        self._fresh(self.val_metrics, self.val_loss)

    def on_test_epoch_start(self):
        self._fresh(self.test_metrics, self.test_loss)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, self.val_metrics, self.val_loss)

    def on_validation_epoch_end(self):
        self._eval_end("val", self.val_metrics, self.val_loss)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, self.test_metrics, self.test_loss)

    def on_test_epoch_end(self):
        self._eval_end("test", self.test_metrics, self.test_loss)

    # ---- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self):
        opt = make_optimizer(self.model.parameters(), self.optim)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        factor = lr_factor(self.optim.get("scheduler", "linear"), total, self.optim.get("warmup_ratio", 0.0))
        if factor is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor), "interval": "step"}}


def gather_rows(rows: list[dict[str, torch.Tensor]]) -> dict[str, list] | None:
    """Per-example columns of every rank, one row per id (a DistributedSampler pads the last
    ranks with repeated rows), sorted by id; None when no rank kept any. Every rank must call it
    (a collective under DDP)."""
    import torch.distributed as dist

    local = {k: torch.cat([r[k].reshape(-1).cpu() for r in rows]).tolist() for k in rows[0]} if rows else None
    parts = [local]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    seen: set[int] = set()
    merged: dict[str, list] = {k: [] for k in parts[0]}
    for part in parts:
        for i, rid in enumerate(part["ids"]):
            if rid not in seen:
                seen.add(rid)
                for k, col in merged.items():
                    col.append(part[k][i])
    order = sorted(range(len(merged["ids"])), key=merged["ids"].__getitem__)
    return {k: [v[i] for i in order] for k, v in merged.items()}
