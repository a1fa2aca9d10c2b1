"""Data made by a seeded generator instead of read from files (``dataset.generator``): numeric
feature vectors that skip tokenization and are batched as tensors (``inputs`` + ``labels``).

``sphere_shift`` — seed study 004's covariate shift. Points uniform on the sphere of radius √d
("sphere") versus ``N(0, σ²I)`` with σ = ``shift_std`` ("gaussian": the seed's σ = 1/d, inputs
a sixteenth of the sphere's scale); label = 1 where mean(x) ≥ 0 (sign, with 0 → +1), else 0.
``train_on`` picks the training distribution (the base model's, or the adaptation's); the two
evaluation splits are ``validation`` = gaussian and ``test`` = uniform, fresh points of their own.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from peftbench.config.checks import one_of, positive, positive_int
from peftbench.data.examples import SplitExamples

FEATURES = "inputs"  # the column that holds feature vectors (and the model's input name)


def _sphere(n: int, d: int, g) -> Any:
    import torch

    x = torch.randn(n, d, generator=g)
    return x / x.norm(dim=1, keepdim=True) * math.sqrt(d)


def _gaussian(n: int, d: int, std: float, g) -> Any:
    import torch

    return torch.randn(n, d, generator=g) * std


def sphere_shift(gen: Mapping[str, Any], seed: int) -> dict[str, SplitExamples]:
    import torch

    d = positive_int(gen.get("d", 16), "dataset.generator.d")
    n_train = positive_int(gen.get("n_train", 2000), "dataset.generator.n_train")
    n_eval = positive_int(gen.get("n_eval", 10000), "dataset.generator.n_eval")
    std = positive(float(gen.get("shift_std", 1.0 / d)), "dataset.generator.shift_std")
    train_on = one_of(gen.get("train_on", "sphere"), "dataset.generator.train_on", ("sphere", "gaussian"))
    # One stream per split, each from (seed, split): the evaluation points are the same whichever
    # distribution a stage trains on, so a base model and its adaptation are scored on the same sets.
    def stream(i: int):
        return torch.Generator().manual_seed(seed * 1000 + i)

    draw: dict[str, Callable[[int, Any], Any]] = {"sphere": lambda n, g: _sphere(n, d, g),
                                                  "gaussian": lambda n, g: _gaussian(n, d, std, g)}
    splits = {"train": draw[train_on](n_train, stream(0 if train_on == "sphere" else 1)),
              "validation": draw["gaussian"](n_eval, stream(2)), "test": draw["sphere"](n_eval, stream(3))}
    names = {"train": f"sphere_shift:{train_on}", "validation": "sphere_shift:gaussian", "test": "sphere_shift:sphere"}
    return {k: SplitExamples(k, names[k], {FEATURES: list(x), "label": (x.mean(dim=1) >= 0).long().tolist()})
            for k, x in splits.items()}


GENERATORS: dict[str, Callable[[Mapping[str, Any], int], dict[str, SplitExamples]]] = {"sphere_shift": sphere_shift}


def load_generated(ds: Mapping[str, Any]) -> dict[str, SplitExamples]:
    gen = dict(ds["generator"])
    name = one_of(gen.get("name"), "dataset.generator.name", tuple(GENERATORS))
    return GENERATORS[name](gen, int(gen.get("seed", 0)))


def is_features(ex: SplitExamples) -> bool:
    return FEATURES in ex.columns


def feature_rows(ex: SplitExamples) -> list[dict[str, Any]]:
    """Rows a DataLoader batches with its default collation (stacked tensors)."""
    import torch

    return [{FEATURES: x, "labels": torch.tensor(y)} for x, y in zip(ex.columns[FEATURES], ex.columns["label"])]
