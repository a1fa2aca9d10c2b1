"""Task = how a batch becomes loss, predictions and metrics. Method-agnostic.

Everything task-specific the LightningModule needs lives here: the training loss, the batch's row
count, how an evaluation batch updates the metrics and weighs the loss, what follows from the
mean loss (perplexity), the headline metric, and what one evaluated example's record is (the
per-example predictions the report pairs runs by: ``keep_examples`` in ``evaluate``). The module
itself names no task.
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
    headline = "loss"  # the metric a table shows first for this task (``<split>/<headline>``)

    def __init__(self) -> None:
        super().__init__()
        self._examples: dict[str, torch.Tensor] | None = None

    def keep_examples(self, **columns: torch.Tensor) -> None:
        """Called by ``evaluate``: one value per row of the batch, per column (e.g. label, pred;
        loss, tokens). Rows a column must leave out of the predictions file have ``tokens == 0``."""
        self._examples = {k: v.detach() for k, v in columns.items()}

    def pop_examples(self) -> dict[str, torch.Tensor] | None:
        """The last evaluated batch's per-row records (None when the task keeps none), once."""
        out, self._examples = self._examples, None
        return out

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
        """One evaluation batch: update the metrics (and keep the rows' records); returns (loss, its weight)."""
        loss, preds, target = self.step(model, batch)
        for m in metrics.values():
            m.update(preds, target)
        if preds.shape == target.shape:  # one prediction per row: what the paired tests need
            self.keep_examples(label=target, pred=preds)
        return loss, self.loss_weight(batch)

    def from_loss(self, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """Metrics that follow from the epoch's mean loss."""
        return {}


class MatthewsCorrCoef(torchmetrics.classification.MulticlassMatthewsCorrCoef):
    """Matthews correlation with GLUE's (scikit-learn's) convention: 0 where it is undefined (one
    class predicted, or one class in the labels). torchmetrics 1.x returns an epsilon-rule value there
    (0.035 for a constant predictor on CoLA's dev set, torchmetrics#3355), which would rank a constant
    predictor above a model that tries and errs. Gorodkin's R_K (the binary MCC for two classes)."""

    def compute(self) -> torch.Tensor:
        c = self.confmat.double()  # rows: label, columns: prediction
        n, t, p = c.sum(), c.sum(1), c.sum(0)
        den = (n * n - (p * p).sum()) * (n * n - (t * t).sum())
        cov = c.trace() * n - (t * p).sum()
        return (cov / den.sqrt() if den > 0 else torch.zeros((), dtype=c.dtype, device=c.device)).float()


class Classification(Task):
    name = "classification"
    headline = "acc"

    METRICS = ("acc", "f1", "mcc")

    def __init__(self, num_labels: int, headline: str = "acc"):
        super().__init__()
        if headline not in self.METRICS:
            raise ValueError(f"dataset.metric '{headline}': classification reports one of {list(self.METRICS)}")
        self.num_labels = num_labels
        self.headline = headline  # CoLA's convention is Matthews correlation (GLUE), not accuracy

    def metrics(self) -> nn.ModuleDict:
        kw = {"num_classes": self.num_labels}
        return nn.ModuleDict({
            "acc": torchmetrics.classification.MulticlassAccuracy(average="micro", **kw),
            "f1": torchmetrics.classification.MulticlassF1Score(average="macro", **kw),
            "mcc": MatthewsCorrCoef(**kw),
        })

    def step(self, model, batch):
        out = model(**batch)
        return out.loss, out.logits.argmax(-1), batch["labels"]


def _update(metric: torchmetrics.Metric, values: torch.Tensor) -> None:
    if values.numel():  # a batch with nothing to score leaves the mean alone
        metric.update(values)


def label_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The logits of the labelled positions: prompt tuning and p-tuning prepend their virtual tokens
    to the input, so peft returns ``num_virtual_tokens`` more positions than the labels cover (and
    pads the labels itself for the loss); the labelled ones are the last ``labels.shape[1]``."""
    return logits[:, logits.shape[1] - labels.shape[1]:]


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the mean cross-entropy over the unmasked labels (0 where there are none) and their
    count; ``logits[:, t]`` predicts ``labels[:, t]`` (shift before calling for a causal LM)."""
    # one row at a time: a float32 copy of a whole batch's logits can outgrow the model (long rows × vocab)
    total = torch.stack([nn.functional.cross_entropy(lg.float(), lb, ignore_index=IGNORE, reduction="sum")
                         for lg, lb in zip(logits, labels)])
    tokens = (labels != IGNORE).sum(1)
    return total / tokens.clamp(min=1), tokens


class CausalLM(Task):
    """Loss over non-masked labels (response tokens for SFT, all tokens for pretraining). With
    ``generated`` (a classification set read as SFT), also the accuracy of generated labels."""

    name = "causal_lm"

    def __init__(self, generated: GeneratedLabels | None = None):
        super().__init__()
        self.generated = generated
        self.headline = "acc" if generated is not None else "loss"

    def metrics(self) -> nn.ModuleDict:
        # update(correct, weight): the mean of per-token correctness = next-token accuracy
        m = {"token_acc": torchmetrics.MeanMetric()}
        if self.generated is not None:
            m.update(acc=torchmetrics.MeanMetric(), valid_label_rate=torchmetrics.MeanMetric(),
                     n_generated=torchmetrics.SumMetric())
        return nn.ModuleDict(m)

    def step(self, model, batch):
        out = model(**batch)
        logits = label_logits(out.logits, batch["labels"])[:, :-1]
        target = batch["labels"][:, 1:]
        keep = target != IGNORE
        correct = (logits.argmax(-1) == target)[keep].float()
        return out.loss, correct, torch.ones_like(correct)

    def loss_weight(self, batch):
        return (batch["labels"][:, 1:] != IGNORE).sum()  # the loss is over shifted, unmasked labels

    def evaluate(self, model, batch, metrics):
        out = model(**batch)
        logits, target = label_logits(out.logits, batch["labels"])[:, :-1], batch["labels"][:, 1:]
        keep = target != IGNORE
        correct = (logits.argmax(-1) == target)[keep].float()
        metrics["token_acc"].update(correct, torch.ones_like(correct))
        row_loss, tokens = token_losses(logits, target)
        rows = {"loss": row_loss, "tokens": tokens}
        if self.generated is not None:
            gold, pred = self.generated.answers(model, batch)
            hit = torch.tensor([p is not None and p == g for p, g in zip(pred, gold)], dtype=torch.float)
            _update(metrics["acc"], hit)
            _update(metrics["valid_label_rate"], torch.tensor([p is not None for p in pred], dtype=torch.float))
            metrics["n_generated"].update(float(hit.numel()))
            rows.update(self._answer_rows(batch, gold, pred, hit))
        self.keep_examples(**rows)
        return out.loss, self.loss_weight(batch)

    @staticmethod
    def _answer_rows(batch, gold: list[int | None], pred: list[int | None], hit: torch.Tensor) -> dict[str, torch.Tensor]:
        """Generated answers back onto the batch's rows (rows cut before their answer got none: -1);
        an unparsable answer is the label -1, so it never matches."""
        has = (batch["labels"] != IGNORE).any(1).cpu()  # the rows split_sft_rows keeps, in order
        cols = {k: torch.full((len(has),), -1, dtype=torch.long) for k in ("correct", "label", "pred")}
        cols["correct"][has] = hit.long()
        cols["label"][has] = torch.tensor([-1 if g is None else g for g in gold], dtype=torch.long)
        cols["pred"][has] = torch.tensor([-1 if p is None else p for p in pred], dtype=torch.long)
        return cols

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
    headline = "bleu"

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
        out = model(**batch)
        loss = out.loss
        row_loss, tokens = token_losses(label_logits(out.logits, batch["labels"]), batch["labels"])  # decoder shifts internally
        self.keep_examples(loss=row_loss, tokens=tokens)
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
        return Classification(num_labels, str(ds.get("metric") or "acc"))
    if task == "image_text":
        train = (examples or {}).get("train")
        const = constant_caption(list(train.columns["text"]), ds.get("attributes")) if train is not None else None
        return ImageText(tokenizer, int(ds.get("max_length", 16)), ds.get("attributes"), const)
    sft = ds.get("as_sft")
    if sft and tokenizer is not None:
        return CausalLM(GeneratedLabels(tokenizer, ds["label_names"], int(sft.get("max_new_tokens") or 8)))
    return CausalLM()
