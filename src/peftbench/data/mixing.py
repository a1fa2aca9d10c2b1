"""Data mixing and replay: train on several sources at fixed ratios (e.g. 90% task + 10% general).

Keeping general data in the fine-tuning mix is the standard recipe against catastrophic
forgetting. A dataset config with a ``mix`` list trains on a seeded sample of its sources::

    name: alpaca_mix_c4
    task: causal_lm
    mix:
      - {dataset: alpaca, weight: 0.9}    # the first source is the task: its validation split is evaluated
      - {dataset: c4_demo, weight: 0.1}   # only c4_demo's *train* split is replayed
    mix_size: null                        # training sequences; null = the task's train size / its weight

Weights are fractions of training *sequences* (normalised to sum to 1). Each source is read and
tokenized with its own config (SFT examples are masked, text corpora packed into blocks of the
mix's ``max_length``), then ``round(weight * mix_size)`` sequences are drawn from each — without
replacement while a source has enough, with replacement (replay) beyond — and shuffled; all
draws come from ``random.Random(mix_seed)``, so one seed always gives the same mix.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Mapping

from peftbench.config.checks import positive, positive_int
from peftbench.config.paths import dataset_config
from peftbench.data.examples import SplitExamples, load_single
from peftbench.data.tokenize import tokenize_split
from peftbench.errors import ConfigError


@dataclass
class MixSource:
    ds: dict[str, Any]
    weight: float
    examples: SplitExamples


@dataclass
class MixedSplit(SplitExamples):
    """A training split made of several sources; tokenized by :func:`tokenize_mix`."""

    parts: list[MixSource] = field(default_factory=list)
    size: int = 0
    seed: int = 0
    shuffle: bool = True  # False: one source, taken whole and in order (evaluation splits)

    def __len__(self) -> int:
        return self.size


def _source_config(entry: Any, i: int, mix_ds: Mapping[str, Any]) -> tuple[dict[str, Any], float]:
    opt = f"dataset.mix[{i}]"
    if not isinstance(entry, Mapping) or "dataset" not in entry or "weight" not in entry:
        raise ConfigError("each mix entry needs {dataset: NAME, weight: W}", option=opt)
    w = positive(entry["weight"], f"{opt}.weight")
    if isinstance(entry["dataset"], Mapping):
        ds = dict(entry["dataset"])
    else:
        ds = dataset_config(str(entry["dataset"]), option=f"{opt}.dataset")
    if ds.get("mix"):
        raise ConfigError("a mix source cannot itself be a mix", option=f"{opt}.dataset")
    if ds.get("task") != mix_ds.get("task"):
        raise ConfigError(f"source '{ds.get('name')}' is a {ds.get('task')} set, the mix is {mix_ds.get('task')}",
                          option=f"{opt}.dataset")
    for key in ("max_length", "use_chat_template", "padding"):  # the mix decides how sequences look
        if mix_ds.get(key) is not None:
            ds[key] = mix_ds[key]
    if i == 0:  # the task source: its held-out splits are what the run evaluates
        for key in ("val_limit", "test_limit"):
            if mix_ds.get(key) is not None:
                ds[key] = mix_ds[key]
    if ds.get("format") == "text":
        ds["block_size"] = int(mix_ds.get("max_length") or ds.get("block_size") or 128)
    for k, v in (entry.get("overrides") or {}).items():
        ds[k] = v
    return ds, float(w)


def load_mix(ds: Mapping[str, Any], data_dir: str | None) -> dict[str, SplitExamples]:
    """Read and check every source (before weights load). Validation/test = the first source's."""
    mix = ds.get("mix")
    if not isinstance(mix, (list, tuple)) or not mix:
        raise ConfigError("must be a non-empty list of {dataset, weight}", option="dataset.mix")
    sources = [_source_config(e, i, ds) for i, e in enumerate(mix)]
    total = sum(w for _, w in sources)
    loaded = [(sds, w / total, load_single(sds, data_dir)) for sds, w in sources]
    parts = [MixSource(sds, w, ex["train"]) for sds, w, ex in loaded]
    size = ds.get("mix_size")
    if size is None:
        size = round(len(parts[0].examples) / parts[0].weight)
    positive_int(size, "dataset.mix_size")
    if ds.get("train_limit"):
        size = min(size, int(ds["train_limit"]))
    label = "+".join(f"{p.ds['name']}:{p.weight:.3g}" for p in parts)
    out: dict[str, SplitExamples] = {
        "train": MixedSplit("train", f"mix({label})", {}, parts=parts, size=size, seed=int(ds.get("mix_seed", 0)))}
    for split, ex in loaded[0][2].items():  # evaluation: the task's own held-out splits, unmixed, in order
        if split != "train":
            out[split] = MixedSplit(split, ex.source, {}, parts=[MixSource(loaded[0][0], 1.0, ex)], size=len(ex),
                                    shuffle=False)
    return out


def counts(weights: list[float], size: int) -> list[int]:
    """Sequences per source: largest-remainder rounding, so the counts sum to ``size`` exactly."""
    raw = [w * size for w in weights]
    n = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: (-(raw[i] - n[i]), i))[: size - sum(n)]:
        n[i] += 1
    return n


def draw(n_available: int, n: int, rng: random.Random) -> list[int]:
    """``n`` indices into a source: a shuffled pass without replacement, then more passes (replay)."""
    out: list[int] = []
    while len(out) < n:
        idx = list(range(n_available))
        rng.shuffle(idx)
        out += idx[: n - len(out)]
    return out


def tokenize_mix(mixed: MixedSplit, tok, cache_dir) -> Any:
    """Tokenize each source with its own config (cached), then sample and shuffle with the mix seed."""
    import datasets

    keep = ["input_ids", "attention_mask", "labels"]
    if not mixed.shuffle:
        return tokenize_split(mixed.parts[0].examples, tok, mixed.parts[0].ds, cache_dir).select_columns(keep)
    rng = random.Random(mixed.seed)
    pieces = []
    for part, n in zip(mixed.parts, counts([p.weight for p in mixed.parts], mixed.size)):
        tokd = tokenize_split(part.examples, tok, part.ds, cache_dir)
        if len(tokd) == 0:
            raise ConfigError(f"mix source '{part.ds['name']}' gave no training sequences", option="dataset.mix")
        tokd = tokd.select_columns(keep)
        pieces.append(tokd.select(draw(len(tokd), n, rng)) if n else tokd.select([]))
    data = datasets.concatenate_datasets(pieces)
    order = list(range(len(data)))
    rng.shuffle(order)
    return data.select(order)
