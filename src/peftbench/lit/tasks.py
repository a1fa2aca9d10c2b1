"""Task = how a batch becomes loss, predictions and metrics. Method-agnostic.

Everything task-specific the LightningModule needs lives here: the training loss, the batch's row
count, how an evaluation batch updates the metrics and weighs the loss, and what follows from the
mean loss (perplexity). The module itself names no task.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torchmetrics
from torch import nn

from peftbench.data.tokenize import IGNORE
from peftbench.lit.generation import (
    CorpusBLEU,
    GeneratedLabels,
    all_attribute_hits,
    attribute_hits,
    captions,
    constant_caption,
)


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

    def rows(self, batch: dict[str, torch.Tensor]) -> int:
        """Examples in the batch (what the logged loss is averaged over)."""
        return int(batch["labels"].shape[0])

    def loss_weight(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the batch's mean loss was averaged over, so the epoch's loss is a true mean."""
        return batch["labels"].numel()

    def evaluate(self, model: nn.Module, batch: dict[str, torch.Tensor], metrics: nn.ModuleDict):
        """One evaluation batch: update the metrics; returns (loss, its weight)."""
        loss, preds, target = self.step(model, batch)
        for m in metrics.values():
            m.update(preds, target)
        return loss, self.loss_weight(batch)

    def from_loss(self, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """Metrics that follow from the epoch's mean loss."""
        return {}


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


def _update(metric: torchmetrics.Metric, values: torch.Tensor) -> None:
    if values.numel():  # a batch with nothing to score leaves the mean alone
        metric.update(values)


class CausalLM(Task):
    """Loss over non-masked labels (response tokens for SFT, all tokens for pretraining). With
    ``generated`` (a classification set read as SFT), also the accuracy of generated labels."""

    name = "causal_lm"

    def __init__(self, generated: GeneratedLabels | None = None):
        super().__init__()
        self.generated = generated

    def metrics(self) -> nn.ModuleDict:
        # update(correct, weight): the mean of per-token correctness = next-token accuracy
        m = {"token_acc": torchmetrics.MeanMetric()}
        if self.generated is not None:
            m.update(acc=torchmetrics.MeanMetric(), valid_label_rate=torchmetrics.MeanMetric(),
                     n_generated=torchmetrics.SumMetric())
        return nn.ModuleDict(m)

    def step(self, model, batch):
        out = model(**batch)
        logits = out.logits[:, :-1]
        target = batch["labels"][:, 1:]
        keep = target != IGNORE
        correct = (logits.argmax(-1) == target)[keep].float()
        return out.loss, correct, torch.ones_like(correct)

    def loss_weight(self, batch):
        return (batch["labels"][:, 1:] != IGNORE).sum()  # the loss is over shifted, unmasked labels

    def evaluate(self, model, batch, metrics):
        loss, correct, weight = self.step(model, batch)
        metrics["token_acc"].update(correct, weight)
        if self.generated is not None:
            hit, valid = self.generated(model, batch)
            _update(metrics["acc"], hit)
            _update(metrics["valid_label_rate"], valid)
            metrics["n_generated"].update(float(hit.numel()))
        return loss, self.loss_weight(batch)

    def from_loss(self, loss):
        return {"ppl": torch.exp(loss.clamp(max=50))}


class ImageText(Task):
    """Captioning (``pixel_values`` → caption ``labels``): the decoder's loss; at evaluation, corpus
    BLEU of greedy captions and, per named attribute, whether the caption names the right value
    (``<attr>_acc``) and whether every attribute is right (``all_attr_acc``). With ``constant`` (the
    best single caption on the train split), the same metrics for answering it to every image
    (``const_bleu``, ``const_<attr>_acc``, ``const_all_attr_acc``): a number only counts as learning
    where it beats its constant twin."""

    name = "image_text"

    def __init__(self, tokenizer: Any, max_new_tokens: int = 16, attributes: Mapping[str, list[str]] | None = None,
                 constant: str | None = None):
        super().__init__()
        self.tok, self.max_new_tokens = tokenizer, int(max_new_tokens)
        self.attributes = {k: list(v) for k, v in (attributes or {}).items()}
        self.constant = constant
        if constant is not None:  # the record holds its scores (const_*); the log says which caption it was
            import logging

            logging.getLogger(__name__).info("image_text baseline: the constant caption %r", constant)

    def metrics(self) -> nn.ModuleDict:
        names = [f"{k}_acc" for k in self.attributes] + (["all_attr_acc"] if self.attributes else [])
        m = {"bleu": CorpusBLEU(), **{n: torchmetrics.MeanMetric() for n in names}}
        if self.constant is not None:
            m.update({"const_bleu": CorpusBLEU(), **{f"const_{n}": torchmetrics.MeanMetric() for n in names}})
        return nn.ModuleDict(m)

    def loss_weight(self, batch):
        return (batch["labels"] != IGNORE).sum()  # the decoder shifts internally: every label is scored

    def _score(self, preds: list[str], refs: list[str], metrics: nn.ModuleDict, prefix: str = "") -> None:
        metrics[f"{prefix}bleu"].update(preds, refs)
        for k, values in self.attributes.items():
            _update(metrics[f"{prefix}{k}_acc"], attribute_hits(preds, refs, values))
        if self.attributes:
            _update(metrics[f"{prefix}all_attr_acc"], all_attribute_hits(preds, refs, self.attributes))

    def evaluate(self, model, batch, metrics):
        loss = model(**batch).loss
        preds = captions(model, self.tok, batch["pixel_values"], self.max_new_tokens)
        refs = [self.tok.decode(r[r != IGNORE], skip_special_tokens=True).strip() for r in batch["labels"]]
        self._score(preds, refs, metrics)
        if self.constant is not None:
            self._score([self.constant] * len(refs), refs, metrics, prefix="const_")
        return loss, self.loss_weight(batch)


def make_task(task: str, num_labels: int, dataset: Mapping[str, Any] | None = None, tokenizer: Any = None,
              examples: Mapping[str, Any] | None = None) -> Task:
    """The task of a run; ``dataset`` (the run's view, data/sft.py) and ``tokenizer`` feed the
    metrics that generate: a dataset read ``as_sft`` asks for generated-label accuracy. ``examples``
    (the plan's read splits): image–text picks its constant-caption baseline from the train captions."""
    ds = dataset or {}
    if task == "classification":
        return Classification(num_labels)
    if task == "image_text":
        train = (examples or {}).get("train")
        const = constant_caption(list(train.columns["text"]), ds.get("attributes")) if train is not None else None
        return ImageText(tokenizer, int(ds.get("max_length", 16)), ds.get("attributes"), const)
    sft = ds.get("as_sft")
    if sft and tokenizer is not None:
        return CausalLM(GeneratedLabels(tokenizer, ds["label_names"], int(sft.get("max_new_tokens") or 8)))
    return CausalLM()
