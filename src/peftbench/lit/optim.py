"""Optimizers and learning-rate schedules by name (``optim.name``, ``optim.scheduler``; checked in
config/plan.py before weights load). Only parameters with ``requires_grad`` reach the optimizer."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch

from peftbench.config.plan import OPTIMIZERS, SCHEDULES


def _adamw(params: list[torch.nn.Parameter], o: dict[str, Any]) -> torch.optim.Optimizer:
    kw: dict[str, Any] = {"lr": o["lr"], "weight_decay": o.get("weight_decay", 0.0),
                          "betas": tuple(o.get("betas", (0.9, 0.999))), "eps": o.get("eps", 1e-8)}
    if o.get("fused"):  # one kernel for all tensors; CUDA, and CPU since torch 2.4
        kw["fused"] = True
    return torch.optim.AdamW(params, **kw)


def _sgd(params: list[torch.nn.Parameter], o: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=o["lr"], momentum=o.get("momentum", 0.9), weight_decay=o.get("weight_decay", 0.0))


def _paged_adamw_8bit(params: list[torch.nn.Parameter], o: dict[str, Any]) -> torch.optim.Optimizer:
    import bitsandbytes as bnb

    return bnb.optim.PagedAdamW8bit(params, lr=o["lr"], weight_decay=o.get("weight_decay", 0.0))


BUILDERS: dict[str, Callable[[list[torch.nn.Parameter], dict[str, Any]], torch.optim.Optimizer]] = {
    "adamw": _adamw, "sgd": _sgd, "paged_adamw_8bit": _paged_adamw_8bit}
assert set(BUILDERS) == set(OPTIMIZERS), "config/plan.py's OPTIMIZERS must name every builder"


def make_optimizer(parameters: Iterable[torch.nn.Parameter], optim: dict[str, Any]) -> torch.optim.Optimizer:
    params = [p for p in parameters if p.requires_grad]
    return BUILDERS[optim.get("name", "adamw")](params, optim)


def lr_factor(schedule: str | None, total: int, warmup_ratio: float) -> Callable[[int], float] | None:
    """The multiplier of the base lr at each optimizer step: linear warm-up, then linear or cosine
    decay to 0; None for a constant rate."""
    if not schedule or schedule == "constant":
        return None
    assert schedule in SCHEDULES, schedule
    warm = int(warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / max(1, warm)
        progress = (step - warm) / max(1, total - warm)
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return factor
