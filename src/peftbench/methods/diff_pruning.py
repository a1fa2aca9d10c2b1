"""Diff pruning — Guo et al. 2021, "Parameter-Efficient Transfer Learning with Diff Pruning",
arXiv:2012.07463.

Update rule: W = W0 + M ⊙ δ, with W0 frozen, δ (same shape as W0) trainable and M a fixed binary
mask keeping a fraction ``density`` of the entries (random with a seed, or the largest-|W0| ones).
The paper learns M with an L0 relaxation; a fixed mask is the usual cheap stand-in and keeps the
point of the method visible in the counts: ``trainable`` = |δ| ≫ ``changed`` = |M|.

Implemented as a forward hook y ← y + x (M⊙δ)ᵀ on each target Linear / Conv1D (the base parameter
names do not change). ``merge`` folds M⊙δ into W0 and removes δ. Saved state is M⊙δ (dense).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods import _adapter_layers as L
from peftbench.methods.base import (
    ApplyContext,
    Method,
    freeze,
    matching_modules,
    resolve_targets,
    unfreeze_modules,
)
from peftbench.methods.registry import register_method


def _is_conv1d(mod: nn.Module) -> bool:
    return type(mod).__name__ == "Conv1D" and hasattr(mod, "nf")


def _diff_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    delta = module.pb_diff_delta * module.pb_diff_mask
    x = inputs[0]
    if _is_conv1d(module):  # weight (in, out): y = x W + b
        return output + (x @ delta.to(x.dtype))
    return output + F.linear(x, delta.to(x.dtype))


@register_method("diff_pruning")
@dataclass
class DiffPruning(Method):
    family = "selective"
    paper = "https://arxiv.org/abs/2012.07463"
    summary = "sparse delta M⊙δ on target weights (fixed mask); trainable ≫ changed; mergeable"
    supports_merge = True

    density: float = 0.01  # fraction of each target weight's entries that may change
    mask: str = "random"  # random (seeded) | magnitude (largest |W0| entries)
    seed: int = 0  # random-mask seed: the mask is rebuilt identically on load
    target_modules: Any = "all_linear"  # key of the family's targets, list of names, or regex
    train_head: bool = True

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        if not 0 < self.density <= 1:
            raise ConfigError(f"must be in (0, 1], got {self.density}", option="method.density")
        if self.mask not in ("random", "magnitude"):
            raise ConfigError(f"unknown mask {self.mask!r}; use random | magnitude", option="method.mask")
        L.check_match(ctx, self._targets(ctx), option="method.target_modules")

    def _targets(self, ctx: ApplyContext) -> list[str] | str:
        return resolve_targets(self.target_modules, ctx, default_key="all_linear")

    def _mask_for(self, w: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        k = max(1, int(round(self.density * w.numel())))
        if w.device.type == "meta":  # counting on a meta-device build (`peftbench params`): no values
            return torch.empty_like(w)
        if self.mask == "magnitude":
            score = w.detach().abs().float().flatten()
        else:
            score = torch.rand(w.numel(), generator=gen)
        idx = torch.topk(score.cpu(), k).indices
        m = torch.zeros(w.numel(), dtype=w.dtype)
        m[idx] = 1
        return m.view_as(w).to(w.device)

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        freeze(model)
        gen = torch.Generator().manual_seed(self.seed)
        names = [n for n in matching_modules(model, self._targets(ctx))
                 if getattr(L.get_submodule(model, n), "weight", None) is not None
                 and L.get_submodule(model, n).weight.dim() == 2]
        if not names:
            raise ConfigError(f"target_modules {self.target_modules!r} match no 2-D weight", option="method.target_modules")
        for n in names:
            mod = L.get_submodule(model, n)
            w = mod.weight
            mod.pb_diff_delta = nn.Parameter(torch.zeros_like(w, dtype=torch.float32 if not w.is_floating_point() else w.dtype))
            mod.register_buffer("pb_diff_mask", self._mask_for(w, gen), persistent=False)
            mod._pb_diff_handle = mod.register_forward_hook(_diff_hook)
        if self.train_head and ctx.task == "classification":
            unfreeze_modules(model, ctx.head_modules)
        return model

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        state = super().trainable_state(model)
        for n, mod in model.named_modules():
            if hasattr(mod, "pb_diff_delta"):
                key = f"{n}.pb_diff_delta" if n else "pb_diff_delta"
                state[key] = (mod.pb_diff_delta * mod.pb_diff_mask).detach().cpu().contiguous()
        return state

    def merge(self, model: nn.Module) -> nn.Module:
        with torch.no_grad():
            for mod in list(model.modules()):
                if hasattr(mod, "pb_diff_delta"):
                    mod.weight.add_((mod.pb_diff_delta * mod.pb_diff_mask).to(mod.weight.dtype))
                    mod._pb_diff_handle.remove()
                    del mod.pb_diff_delta
                    del mod.pb_diff_mask
                    del mod._pb_diff_handle
        return model
