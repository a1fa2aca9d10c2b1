"""Collation: dynamic padding (to the batch's longest, rounded up to a multiple of 8) by default,
and length-grouped batching for classification (training: shuffled buckets; evaluation: sorted)."""

from __future__ import annotations

import random
from typing import Any, Iterator

import torch

from peftbench.data.tokenize import IGNORE


class PadCollator:
    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = 8, fixed_length: int | None = None,
                 padding_side: str = "right"):
        self.pad_id, self.mult, self.fixed, self.side = pad_id, pad_to_multiple_of, fixed_length, padding_side

    def _target(self, n: int) -> int:
        if self.fixed:
            return self.fixed
        if self.mult:
            n = -(-n // self.mult) * self.mult
        return n

    def __call__(self, feats: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        L = self._target(max(len(f["input_ids"]) for f in feats))
        out: dict[str, list] = {"input_ids": [], "attention_mask": []}
        has_tt = "token_type_ids" in feats[0]
        seq_labels = isinstance(feats[0].get("labels"), list)
        if has_tt:
            out["token_type_ids"] = []
        labels = []
        for f in feats:
            ids = list(f["input_ids"])[:L]
            pad = L - len(ids)

            def padded(x, v):
                return (x + [v] * pad) if self.side == "right" else ([v] * pad + x)

            out["input_ids"].append(padded(ids, self.pad_id))
            out["attention_mask"].append(padded(list(f["attention_mask"])[:L], 0))
            if has_tt:
                out["token_type_ids"].append(padded(list(f["token_type_ids"])[:L], 0))
            if seq_labels:
                labels.append(padded(list(f["labels"])[:L], IGNORE))
            elif "labels" in f:
                labels.append(int(f["labels"]))
        batch = {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
        if labels:
            batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return batch


class LengthGroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Shuffle, sort within buckets of ``bucket_batches`` batches by length, then shuffle the
    batches: padding shrinks while training order stays random (re-drawn every epoch from
    ``seed + epoch``). Resumable like ``run.resume.ResumableRandomSampler`` (``resume_at``).
    Under DDP it splits each epoch's batches over the ranks itself (``set_shard``): Lightning
    cannot inject a DistributedSampler into a batch sampler it did not build."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, bucket_batches: int = 50, drop_last: bool = False):
        self.lengths, self.bs, self.seed, self.bucket, self.drop_last = lengths, batch_size, seed, bucket_batches, drop_last
        self.epoch, self.skip = 0, 0
        self.rank, self.world = 0, 1

    def set_shard(self, rank: int, world: int) -> None:
        """Iterate only rank ``rank``'s share of ``world``: every rank draws the same epoch and
        takes every ``world``-th batch (the list padded with its first batches, so every rank
        runs the same number of steps, as DDP requires)."""
        self.rank, self.world = int(rank), int(world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, batches_done: int, batch_size: int = 0) -> tuple[int, int]:
        """Continue a checkpointed run: epoch ``epoch`` minus its first ``batches_done`` batches
        (Lightning never calls ``set_epoch`` on a batch sampler, so the epoch is set here too)."""
        if batches_done >= len(self):  # saved on an epoch's last batch
            epoch, batches_done = epoch + 1, 0
        self.epoch, self.skip = epoch, batches_done
        return epoch, batches_done

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        idx = list(range(len(self.lengths)))
        rng.shuffle(idx)
        size = self.bs * self.bucket
        batches = []
        for i in range(0, len(idx), size):
            chunk = sorted(idx[i: i + size], key=lambda j: self.lengths[j])
            batches += [chunk[k: k + self.bs] for k in range(0, len(chunk), self.bs)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.bs]
        rng.shuffle(batches)
        if self.world > 1:
            n = len(batches)
            batches += [batches[i % n] for i in range(-n % self.world)]
            batches = batches[self.rank::self.world]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches, skip, self.skip = self._batches(), self.skip, 0
        self.epoch += 1
        return iter(batches[skip:])

    def __len__(self) -> int:
        n = len(self.lengths)
        batches = n // self.bs if self.drop_last else -(-n // self.bs)
        return (batches + self.world - 1) // self.world


class LengthSortedBatches(torch.utils.data.Sampler[list[int]]):
    """Evaluation batches of the given indices, longest first, so a batch pads little: the order of
    evaluation changes no metric, and each example's record is stored by its row id, not its place
    (run/predictions.py). Longest first: a batch too large for memory fails at once."""

    def __init__(self, indices: list[int], lengths: list[int], batch_size: int) -> None:
        order = sorted(indices, key=lambda i: (-lengths[i], i))
        self.batches = [order[k: k + batch_size] for k in range(0, len(order), batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
