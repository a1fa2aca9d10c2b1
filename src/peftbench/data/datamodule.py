"""One LightningDataModule for every text task: examples are read and checked at construction
(before any weight is loaded), tokenized in ``setup`` with the ``datasets`` cache."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import torch

from peftbench.data.collate import LengthGroupedBatchSampler, PadCollator
from peftbench.data.examples import SplitExamples
from peftbench.data.load import load_examples, tokenize
from peftbench.data.tokenize import row_lengths


class TaskDataModule(L.LightningDataModule):
    def __init__(self, ds: Mapping[str, Any], data_dir: str | None, batch_size: int, eval_batch_size: int | None = None,
                 num_workers: int = 0, seed: int = 0, cache_dir: str | Path | None = None,
                 examples: dict[str, SplitExamples] | None = None):
        super().__init__()
        self.ds = dict(ds)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed
        self.examples = examples if examples is not None else load_examples(self.ds, data_dir)
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "peftbench" / "tokenized")
        self.tokenizer = None
        self.splits: dict[str, Any] = {}
        self.setup_seconds: float | None = None

    @property
    def task(self) -> str:
        return self.ds["task"]

    def set_tokenizer(self, tok) -> None:
        self.tokenizer = tok

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        t0 = time.perf_counter()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for name, ex in self.examples.items():
            self.splits[name] = tokenize(ex, self.tokenizer, self.ds, self.cache_dir)
        if self.packing and "train" in self.splits:  # eval stays unpacked: metrics per example, as ever
            from peftbench.data.packing import pack_dataset

            self.splits["train"] = pack_dataset(self.splits["train"], int(self.ds.get("max_length", 128)))
        self.setup_seconds = time.perf_counter() - t0

    @property
    def packing(self) -> bool:
        """Causal-LM SFT rows packed with several examples (data/packing.py); checked at plan time."""
        return bool(self.ds.get("packing")) and self.task == "causal_lm" and self.ds.get("format") != "text"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.ds["name"], "task": self.task,
            "sources": {k: v.source for k, v in self.examples.items()},
            "sizes": {k: len(v) for k, v in self.examples.items()},
            "padding": self.ds.get("padding", "dynamic"), "group_by_length": self.groups_by_length,
            "max_length": self.ds.get("max_length"), "setup_seconds": self.setup_seconds,
            "packing": self.packing,
            "packed_train_rows": len(self.splits["train"]) if self.packing and "train" in self.splits else None,
        }

    @property
    def groups_by_length(self) -> bool:
        """``dataset.group_by_length``: training draws length-grouped batches, evaluation sorts by length."""
        return bool(self.ds.get("group_by_length"))

    def collator(self) -> Any:
        if self.ds.get("generator"):  # feature vectors: stacked as they are
            return None
        if self.task == "image_text":  # images + captions (data/image_text.py)
            from peftbench.data.image_text import CaptionCollator

            return CaptionCollator()
        tok = self.tokenizer
        fixed = int(self.ds["max_length"]) if self.ds.get("padding") == "max_length" else None
        return PadCollator(tok.pad_token_id if tok.pad_token_id is not None else 0, 8, fixed)

    def _loader(self, split: str, train: bool):
        data = self.splits[split]
        collate = self.collator()
        if train and self.packing:
            from peftbench.data.packing import PackedCollator

            collate = self.packed_collator = PackedCollator(collate.pad_id)
        common = dict(collate_fn=collate, num_workers=self.num_workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=self.num_workers > 0)
        if train and self.groups_by_length:
            return torch.utils.data.DataLoader(data, batch_sampler=LengthGroupedBatchSampler(row_lengths(data), self.batch_size, self.seed), **common)
        g = torch.Generator().manual_seed(self.seed)
        return torch.utils.data.DataLoader(data, batch_size=self.batch_size if train else self.eval_batch_size,
                                           shuffle=train, generator=g if train else None, **common)

    def train_dataloader(self):
        return self._loader("train", True)

    def val_dataloader(self):
        return self._loader("validation", False)

    def test_dataloader(self):
        return self._loader("test" if "test" in self.splits else "validation", False)
