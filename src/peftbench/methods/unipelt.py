"""UniPELT — Mao et al. 2022, "UniPELT: A Unified Framework for Parameter-Efficient Language Model
Tuning", arXiv:2110.07577.

Update rule: three sub-modules per block, each behind a learned gate g = σ(W_g x + b_g) computed
from that sub-module's input (one scalar per token):
    LoRA on the attention q/v projections:   y ← y + g_L(x) · (α/r) · B A x
    bottleneck adapter after the FFN output: h ← h + g_A(h) · W_up σ(W_down h)
    prefix tuning on attention (peft)
Simplification (documented): the prefix is *ungated* — gating prefix attention needs a change in
the attention computation itself, which peft's prefix does not expose; LoRA and adapter gates are
as in the paper. Sub-modules can be switched off (use_lora/use_adapter/use_prefix). Our own LoRA and
adapters are forward hooks; trainable state saved with the default ``Method.save``. Not mergeable
(the gates depend on the input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods import _adapter_layers as L
from peftbench.methods._prompt_base import check_prefix_support
from peftbench.methods.base import (
    ApplyContext,
    Method,
    freeze,
    matching_modules,
    require_positive,
    resolve_targets,
    unfreeze_modules,
)
from peftbench.methods.mam import apply_prefix, check_prefix_len
from peftbench.methods.pfeiffer import Pfeiffer
from peftbench.methods.registry import register_method


def _in_features(mod: nn.Module) -> int:
    if isinstance(mod, nn.Linear):
        return mod.in_features
    w = getattr(mod, "weight", None)
    if type(mod).__name__ == "Conv1D" and w is not None:
        return int(w.shape[0])
    if w is not None and w.dim() == 2:
        return int(w.shape[1])
    raise ConfigError(f"cannot infer the input width of {type(mod).__name__}", option="method.target_modules")


class GatedLoRA(nn.Module):
    def __init__(self, d_in: int, d_out: int, r: int, alpha: float):
        super().__init__()
        self.A = nn.Linear(d_in, r, bias=False)
        self.B = nn.Linear(r, d_out, bias=False)
        self.gate = nn.Linear(d_in, 1)
        self.scaling = alpha / r
        nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.A.weight.dtype)
        return torch.sigmoid(self.gate(x)) * self.scaling * self.B(self.A(x))


def _gated_lora_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    return output + module.pb_lora(inputs[0]).to(output.dtype)


class GatedBottleneck(L.Bottleneck):
    def __init__(self, dim: int, bottleneck: int, activation: str = "relu", scale: float = 1.0):
        super().__init__(dim, bottleneck, activation, scale)
        self.gate = nn.Linear(dim, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(h.to(self.gate.weight.dtype))).to(h.dtype) * super().forward(h)


@register_method("unipelt")
@dataclass
class UniPELT(Method):
    family = "hybrid"
    paper = "https://arxiv.org/abs/2110.07577"
    summary = "gated LoRA + gated bottleneck adapter + prefix tuning (+ head)"
    supports_grad_checkpointing = False

    use_lora: bool = True
    use_adapter: bool = True
    use_prefix: bool = True
    r: int = 8
    alpha: float = 16
    target_modules: Any = None  # LoRA targets; null → the family's attention q/v
    bottleneck: int = 16
    num_virtual_tokens: int = 10

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        if not (self.use_lora or self.use_adapter or self.use_prefix):
            raise ConfigError("all sub-modules are off; enable use_lora, use_adapter or use_prefix", option="method.use_lora")
        require_positive(r=self.r, alpha=self.alpha, bottleneck=self.bottleneck)
        if self.use_lora:
            L.check_match(ctx, resolve_targets(self.target_modules, ctx), option="method.target_modules")
        if self.use_adapter:
            L.check_match(ctx, L.arch_targets(ctx, "ffn_out"), option="model.targets.ffn_out")
        if self.use_prefix:
            check_prefix_len(ctx, self.num_virtual_tokens)
            check_prefix_support(ctx, self.name)

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        if self.use_prefix:
            model = apply_prefix(model, ctx, self.num_virtual_tokens, projection=False)
            hf = model.get_base_model()
        else:
            freeze(model)
            hf = model
            if ctx.task == "classification":
                unfreeze_modules(model, ctx.head_modules)
        if self.use_lora:
            names = matching_modules(hf, resolve_targets(self.target_modules, ctx))
            if not names:
                raise ConfigError(f"target_modules {self.target_modules!r} match nothing", option="method.target_modules")
            for n in names:
                mod = L.get_submodule(hf, n)
                lora = GatedLoRA(_in_features(mod), L.out_features(mod), self.r, self.alpha).to(L._device_of(mod))
                mod.pb_lora = lora
                mod.register_forward_hook(_gated_lora_hook)
        if self.use_adapter:
            points = Pfeiffer(bottleneck=self.bottleneck).insertion_points(hf, ctx)["ffn_out"]
            for i, n in points:
                mod = L.get_submodule(hf, n)
                ad = GatedBottleneck(L.out_features(mod), self.bottleneck).to(L._device_of(mod))
                ad.layer_idx = i
                mod.pb_adapter = ad
                mod.register_forward_hook(L._sequential_hook)
        return model
