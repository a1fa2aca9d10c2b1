"""Per-example evaluation records: eval loaders whose batches carry each row's index in its split
(``ROW_IDS``, popped by the LightningModule before the model sees the batch), the capped subset the
convergence curve is measured on, and — rank 0, next to results.json — ``predictions/<split>.json.gz``
plus the record's ``eval`` section (docs/concepts.md).

Row ids are positions in the eval split as the run read it, so two runs of the same dataset config
(other methods, other seeds) pair example by example.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from peftbench.lit.module import ROW_IDS

SPLITS = {"val": "validation", "test": "test"}  # metric prefix -> data split
FLOAT_DIGITS = 6  # significant digits kept of a per-example loss


class IndexedRows(torch.utils.data.Dataset):
    """A dataset's rows paired with their index (first ``limit`` rows when given)."""

    def __init__(self, data: Any, limit: int | None = None) -> None:
        self.data, self.n = data, len(data) if limit is None else min(int(limit), len(data))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[int, Any]:
        return i, self.data[i]


class WithRowIds:
    """Collate the rows as the wrapped collator does, then add their indices under ``ROW_IDS``."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate or torch.utils.data.default_collate

    def __call__(self, rows: list[tuple[int, Any]]) -> dict[str, Any]:
        batch = self.collate([r for _, r in rows])
        batch[ROW_IDS] = torch.tensor([i for i, _ in rows], dtype=torch.long)
        return batch


def eval_shard(trainer: Any) -> tuple[int, int, bool] | None:
    """(rank, world size, unpadded) with more than one rank: the evaluation loaders carry their own
    distributed sampler, so they are split over the ranks even where Lightning injects none
    (``use_distributed_sampler=False``, set for length-grouped training). Unpadded under DDP: its
    evaluation forward (no grad) syncs nothing per batch, so ranks may run one batch more or less.
    Padded under FSDP/DeepSpeed (every forward gathers weights): a few rows are scored twice in the
    metrics (the predictions file keeps each row once)."""
    from lightning.pytorch.strategies import DDPStrategy

    if trainer.world_size > 1:
        return int(trainer.global_rank), int(trainer.world_size), isinstance(trainer.strategy, DDPStrategy)
    return None


def eval_loader(loader: torch.utils.data.DataLoader, limit: int | None = None, row_ids: bool = True,
                generator: torch.Generator | None = None,
                shard: tuple[int, int, bool] | None = None,
                by_length: bool = False) -> torch.utils.data.DataLoader:
    """The same evaluation loader (batch size, collation, workers; order unless ``by_length``), its
    batches carrying row ids unless ``row_ids=False``; ``limit``: only the split's first rows.
    ``generator`` replaces the loader's: an iterator over a loader without one draws its base seed
    from the global RNG.
    ``shard`` (rank, world, unpadded): this rank's rows (eval_shard); unpadded, every row on
    exactly one rank, unless the split has fewer rows than ranks (DDP's first eval forward syncs
    buffers: every rank needs a batch). ``by_length`` (``dataset.group_by_length``): this rank's
    rows in batches sorted by length, which pad little."""
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
    from torch.utils.data import DistributedSampler

    if row_ids:
        data, collate = IndexedRows(loader.dataset, limit), WithRowIds(loader.collate_fn)
    else:
        n = len(loader.dataset) if limit is None else min(int(limit), len(loader.dataset))
        data, collate = torch.utils.data.Subset(loader.dataset, range(n)), loader.collate_fn
    sampler = None
    if shard is not None:
        rank, world, unpadded = shard
        kind = UnrepeatedDistributedSampler if unpadded and len(data) >= world else DistributedSampler
        sampler = kind(data, num_replicas=world, rank=rank, shuffle=False)
    common = dict(collate_fn=collate, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                  persistent_workers=loader.persistent_workers,
                  generator=generator if generator is not None else loader.generator)
    if by_length:
        from peftbench.data.collate import LengthSortedBatches
        from peftbench.data.tokenize import row_lengths

        indices = list(sampler) if sampler is not None else list(range(len(data)))
        batches = LengthSortedBatches(indices, row_lengths(loader.dataset), loader.batch_size)
        return torch.utils.data.DataLoader(data, batch_sampler=batches,
                                           **common)
    return torch.utils.data.DataLoader(data, batch_size=loader.batch_size, shuffle=False, sampler=sampler, **common)


def _compact(values: list[Any]) -> list[Any]:
    """Ints stay ints; floats keep FLOAT_DIGITS significant digits."""
    return [float(f"{v:.{FLOAT_DIGITS}g}") if isinstance(v, float) else int(v) for v in values]


def scored_rows(columns: dict[str, list]) -> dict[str, list]:
    """Drop rows with nothing scored (a causal-LM row cut before its response: ``tokens == 0``)."""
    if "tokens" not in columns:
        return columns
    keep = [i for i, t in enumerate(columns["tokens"]) if t > 0]
    return {k: [v[i] for i in keep] for k, v in columns.items()}


def majority(labels: list[int]) -> tuple[float | None, int | None]:
    """(share of the most frequent label, that label; the smallest on a tie); unparsed (-1) ignored."""
    counts = Counter(v for v in labels if v >= 0)
    if not counts or not labels:
        return None, None
    label, count = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return count / len(labels), int(label)


def write_predictions(out: Path, examples: dict[str, dict[str, list]], headline: str,
                      files: bool = True) -> dict[str, Any]:
    """``predictions/<split>.json.gz`` for each evaluated split (unless ``files=False``) and the
    record's ``eval`` section."""
    section: dict[str, Any] = {}
    for split, columns in sorted(examples.items()):
        cols = {k: _compact(v) for k, v in scored_rows(columns).items()}
        rel = f"predictions/{split}.json.gz" if files else None
        if rel is not None:
            path = Path(out) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            with gzip.open(tmp, "wt", encoding="utf-8") as f:
                json.dump(cols, f, separators=(",", ":"))
            tmp.replace(path)
        rate, label = majority(cols["label"]) if "label" in cols else (None, None)
        section[split] = {"n": len(cols["ids"]), "majority_rate": rate, "majority_label": label,
                          "metric": f"{split}/{headline}", "predictions": rel}
    return section


def read_predictions(path: str | Path) -> dict[str, list]:
    """One predictions file (gzip of one JSON object of equal-length columns)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)
