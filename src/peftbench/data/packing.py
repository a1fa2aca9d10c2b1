"""Sequence packing for causal-LM SFT: several short examples share one row, so a batch holds
almost no padding.

Attention stays inside each example where the model builds its mask with transformers'
``create_causal_mask`` (llama, qwen2, gpt2, ... — every causal-LM family peftbench ships): a packed
batch carries ``position_ids`` that restart at 0 for each example and *no* ``attention_mask``,
and transformers then derives a block-diagonal causal mask from the position resets (its
packed-sequence detection; eager, sdpa and flash attention alike). Row padding forms its own
segment (positions restart there too, labels ignored), so no real token attends to it. A model
whose mask code does not read position resets would attend across examples: tests/test_padding.py
checks, per shipped family, that a packed example's logits equal the example run alone.

The loss never crosses a boundary either: the first label of every example is ignored (it would
be predicted from the previous example's last token); for SFT it is a prompt token, masked anyway.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from peftbench.data.tokenize import IGNORE
from peftbench.errors import ConfigError


def check_packing(ds: Mapping[str, Any], method: Any) -> None:
    """``dataset.packing`` is for causal-LM SFT with methods that leave positions alone. ``ds``: the
    dataset as the run sees it (a classification set read as SFT is causal-LM data)."""
    if not ds.get("packing"):
        return
    if ds.get("task") != "causal_lm":
        raise ConfigError("packing is for causal-LM data; classification batches use dynamic padding "
                          "and dataset.group_by_length instead", option="dataset.packing")
    if ds.get("format") == "text":
        raise ConfigError("format: text is already packed into block_size blocks", option="dataset.packing")
    if ds.get("padding") == "max_length":
        raise ConfigError("packing fills rows up to dataset.max_length itself; use padding: dynamic",
                          option="dataset.padding")
    if getattr(method, "num_virtual_tokens", None) is not None or not getattr(method, "supports_grad_checkpointing", True):
        # prompt learning prepends virtual tokens / key-value prefixes: position resets and the
        # block-diagonal mask no longer line up with the inputs
        raise ConfigError(f"method '{method.name}' prepends virtual tokens, which packed rows cannot "
                          "keep apart; set dataset.packing=false", option="dataset.packing")


def pack(examples: Iterable[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Greedy packing in data order (deterministic): an example joins the current row while it fits
    in ``max_length`` tokens. Examples are never split (an SFT response keeps its prompt)."""
    rows: list[dict[str, list[int]]] = []
    cur: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": [], "seq_lengths": []}
    for ex in examples:
        ids, labels = list(ex["input_ids"])[:max_length], list(ex["labels"])[:max_length]
        if not ids:
            continue
        if cur["input_ids"] and len(cur["input_ids"]) + len(ids) > max_length:
            rows.append(cur)
            cur = {"input_ids": [], "labels": [], "position_ids": [], "seq_lengths": []}
        cur["input_ids"] += ids
        cur["labels"] += [IGNORE] + labels[1:]  # no prediction across the boundary
        cur["position_ids"] += list(range(len(ids)))
        cur["seq_lengths"].append(len(ids))
    if cur["input_ids"]:
        rows.append(cur)
    return rows


def pack_dataset(data: Any, max_length: int) -> Any:
    """A tokenized ``datasets.Dataset`` (input_ids/labels) → a packed one."""
    import datasets

    rows = pack(({"input_ids": i, "labels": l} for i, l in zip(data["input_ids"], data["labels"])), max_length)
    return datasets.Dataset.from_list(rows)


class PackedCollator:
    """Pads packed rows to the batch's longest (multiple of 8); the padding is its own segment.

    No ``attention_mask`` on purpose (see the module docstring). Counts all and useful tokens, so
    the run can report useful tokens/s and the padding fraction of packed batches.
    """

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = 8):
        self.pad_id, self.mult = pad_id, pad_to_multiple_of
        self.tokens = 0
        self.useful = 0

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n = max(len(r["input_ids"]) for r in rows)
        if self.mult:
            n = -(-n // self.mult) * self.mult
        ids, labels, pos = [], [], []
        for r in rows:
            pad = n - len(r["input_ids"])
            ids.append(list(r["input_ids"]) + [self.pad_id] * pad)
            labels.append(list(r["labels"]) + [IGNORE] * pad)
            pos.append(list(r["position_ids"]) + list(range(pad)))
            self.useful += len(r["input_ids"])
        self.tokens += n * len(rows)
        # use_cache=False: with a KV cache object present transformers skips packed-sequence detection
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "position_ids": torch.tensor(pos),
                "use_cache": False}

    @property
    def padding_fraction(self) -> float | None:
        return 1.0 - self.useful / self.tokens if self.tokens else None
