"""Task = how a batch becomes loss, predictions and metrics. Method-agnostic."""

from __future__ import annotations

import torch
import torchmetrics
from torch import nn


class Task(nn.Module):
    name = ""

    def metrics(self) -> nn.ModuleDict:
        raise NotImplementedError

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]):
        """Returns (loss, preds, target) — preds/target feed the metrics."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss alone: no predictions (an argmax over a causal LM's vocabulary every
        step would cost more than many adapters' whole update)."""
        return model(**batch).loss


class Classification(Task):
    name = "classification"

    def __init__(self, num_labels: int):
        super().__init__()
        self.num_labels = num_labels

    def metrics(self) -> nn.ModuleDict:
        kw = {"num_classes": self.num_labels}
        return nn.ModuleDict({
            "acc": torchmetrics.classification.MulticlassAccuracy(average="micro", **kw),
            "f1": torchmetrics.classification.MulticlassF1Score(average="macro", **kw),
        })

    def step(self, model, batch):
        out = model(**batch)
        return out.loss, out.logits.argmax(-1), batch["labels"]


class CausalLM(Task):
    """Loss over non-masked labels (response tokens for SFT, all tokens for pretraining)."""

    name = "causal_lm"

    def metrics(self) -> nn.ModuleDict:
        # update(correct, weight): the mean of per-token correctness = next-token accuracy
        return nn.ModuleDict({"token_acc": torchmetrics.MeanMetric()})

    def step(self, model, batch):
        out = model(**batch)
        logits = out.logits[:, :-1]
        target = batch["labels"][:, 1:]
        keep = target != -100
        correct = (logits.argmax(-1) == target)[keep].float()
        return out.loss, correct, torch.ones_like(correct)


def make_task(task: str, num_labels: int) -> Task:
    return Classification(num_labels) if task == "classification" else CausalLM()
