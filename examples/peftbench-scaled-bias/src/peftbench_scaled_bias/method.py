"""Scaled bias — a toy selective method for the plugin example.

Update rule: for every bias b of the target modules, b' = b + s·δ with δ (same shape as b,
zero-init) and a scalar s fixed by config; only δ trains. W and every other tensor stay frozen.
Equivalent to BitFit on a subset of biases with a re-scaled learning rate, which keeps the
example short while exercising the whole plugin path (apply, save, load, merge).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods.base import ApplyContext, Method, freeze, matching_modules, require_positive, unfreeze_modules


def _add_delta(mod: nn.Module, args, out: torch.Tensor) -> torch.Tensor:
    """Forward hook: the bias shift b' = b + s·δ, applied to the module output (same effect)."""
    return out + mod.bias_scale * mod.bias_delta


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
                # A new parameter + a hook (not torch parametrize: its dynamically created class
                # is shared by deep copies, so merging a copy would break the original).
                mod.register_parameter("bias_delta", nn.Parameter(torch.zeros_like(mod.bias)))
                mod.bias_scale = self.scale
                mod.register_forward_hook(_add_delta)
        if self.train_head and ctx.task == "classification":
            unfreeze_modules(model, ctx.head_modules)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        for mod in model.modules():
            if hasattr(mod, "bias_delta"):
                with torch.no_grad():
                    mod.bias.add_(mod.bias_scale * mod.bias_delta)
                del mod.bias_delta
                for key, fn in list(mod._forward_hooks.items()):
                    if fn is _add_delta:
                        del mod._forward_hooks[key]
        return model
