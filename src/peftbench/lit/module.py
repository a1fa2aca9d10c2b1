"""The method- and task-agnostic LightningModule.

It never names a method: it receives a model (or a factory that builds and adapts one, so FSDP
wraps the already adapted model in ``configure_model``), a Task, and the optimizer settings.
Only parameters with ``requires_grad`` reach the optimizer.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import lightning as L
import torch
import torchmetrics
from torch import nn

from peftbench.lit.tasks import Task


class PeftLitModule(L.LightningModule):
    def __init__(self, model: nn.Module | None, task: Task, optim: dict[str, Any],
                 model_factory: Callable[[], nn.Module] | None = None,
                 step_hook: Callable[[nn.Module, int], None] | None = None):
        super().__init__()
        self.model = model
        self.model_factory = model_factory
        self.task = task
        self.optim = dict(optim)
        self.step_hook = step_hook
        self.val_metrics = task.metrics()
        self.test_metrics = task.metrics()
        self.val_loss = torchmetrics.MeanMetric()
        self.test_loss = torchmetrics.MeanMetric()

    def configure_model(self) -> None:
        if self.model is None and self.model_factory is not None:
            self.model = self.model_factory()

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
                     batch_size=batch["input_ids"].shape[0])
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
        loss, preds, target = self.task.step(self.model, batch)
        weight = (batch["labels"][:, 1:] != -100).sum() if batch["labels"].dim() == 2 else batch["labels"].numel()
        loss_metric.update(loss.detach(), weight)
        for m in metrics.values():
            m.update(preds, target)

    def _eval_end(self, prefix, metrics, loss_metric):
        loss = loss_metric.compute()
        out = {f"{prefix}/loss": loss}
        if self.task.name == "causal_lm":
            out[f"{prefix}/ppl"] = torch.exp(loss.clamp(max=50))
        for k, m in metrics.items():
            out[f"{prefix}/{k}"] = m.compute()
            m.reset()
        loss_metric.reset()
        self.log_dict(out, sync_dist=False)  # torchmetrics already synchronised the states

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
        o = self.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        name = o.get("name", "adamw")
        if name == "adamw":
            kw: dict[str, Any] = {"lr": o["lr"], "weight_decay": o.get("weight_decay", 0.0),
                                  "betas": tuple(o.get("betas", (0.9, 0.999))), "eps": o.get("eps", 1e-8)}
            if o.get("fused"):  # one kernel for all tensors; CUDA, and CPU since torch 2.4
                kw["fused"] = True
            opt = torch.optim.AdamW(params, **kw)
        elif name == "sgd":
            opt = torch.optim.SGD(params, lr=o["lr"], momentum=o.get("momentum", 0.9), weight_decay=o.get("weight_decay", 0.0))
        elif name == "paged_adamw_8bit":
            import bitsandbytes as bnb

            opt = bnb.optim.PagedAdamW8bit(params, lr=o["lr"], weight_decay=o.get("weight_decay", 0.0))
        else:
            raise ValueError(f"unknown optimizer {name}")
        sched = o.get("scheduler", "linear")
        if sched in (None, "constant"):
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = int(o.get("warmup_ratio", 0.0) * total)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / max(1, warm)
            progress = (step - warm) / max(1, total - warm)
            if sched == "cosine":
                return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
            return max(0.0, 1.0 - progress)

        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor), "interval": "step"}}
