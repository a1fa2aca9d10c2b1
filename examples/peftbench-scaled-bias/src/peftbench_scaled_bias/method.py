"""Scaled bias — a toy selective method for the plugin example.

Update rule: for every bias b of the target modules, b' = b + s ⊙ δ with δ (same shape as b,
zero-init) and a scalar s fixed by config; only δ trains. W and every other tensor stay frozen.
Equivalent to BitFit on a subset of biases with a re-scaled learning rate, which keeps the
example short while exercising the whole plugin path (apply, save, load, merge).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from peftbench.errors import ConfigError
from peftbench.methods.base import ApplyContext, Method, freeze, matching_modules, require_positive, unfreeze_modules


class _AddScaledDelta(nn.Module):
    def __init__(self, shape: torch.Size, scale: float):
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(shape))
        self.scale = scale

    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        return bias + self.scale * self.delta


@dataclass
class ScaledBias(Method):
    family = "selective"
    summary = "a scaled trainable delta on the biases of the target modules (+ head)"
    paper = "https://arxiv.org/abs/2106.10199"
    supports_merge = True

    scale: float = 1.0
    target_modules: list[str] = field(default_factory=lambda: ["dense", "c_proj", "c_fc", "c_attn"])
    train_head: bool = True

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        require_positive(scale=self.scale)
        if ctx.module_names and not matching_modules(ctx.module_names, self.target_modules):
            raise ConfigError(f"target_modules {self.target_modules} match nothing", option="method.target_modules")

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        freeze(model)
        for name in matching_modules(model, self.target_modules):
            mod = model.get_submodule(name)
            if getattr(mod, "bias", None) is not None:
                parametrize.register_parametrization(mod, "bias", _AddScaledDelta(mod.bias.shape, self.scale))
        if self.train_head and ctx.task == "classification":
            unfreeze_modules(model, ctx.head_modules)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        for mod in list(model.modules()):
            if parametrize.is_parametrized(mod, "bias"):
                parametrize.remove_parametrizations(mod, "bias", leave_parametrized=True)
        return model
