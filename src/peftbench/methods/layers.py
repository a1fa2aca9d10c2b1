"""Layer selection — partial fine-tuning of the top blocks ("freezing the bottom layers"), as
studied e.g. by Lee et al. 2019, "What Would Elsa Do? Freezing Layers During Transformer
Fine-Tuning", arXiv:1911.03090.

Update rule: θ_i ← θ_i − η ∇θ_i L for the parameters of the selected blocks (the top ``top_k``, or
the listed ``indices``) and the task head; every other parameter is frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods import _adapter_layers as L
from peftbench.methods.base import ApplyContext, Method, freeze, unfreeze_modules
from peftbench.methods.registry import register_method


@register_method("layers")
@dataclass
class Layers(Method):
    family = "selective"
    paper = "https://arxiv.org/abs/1911.03090"
    summary = "the top-k transformer blocks (or listed indices) + the task head train"

    top_k: int = 1  # train the last top_k blocks (ignored when indices is set)
    indices: Any = None  # explicit block indices, e.g. [0, 5]; negative counts from the top
    train_head: bool = True  # classification: the task head trains too
    train_final_norm: bool = True  # the norm after the last block (ln_f / norm), when it exists

    def selected(self, n_layers: int) -> list[int]:
        if self.indices is not None:
            return sorted({int(i) % n_layers for i in self.indices})
        return list(range(n_layers - self.top_k, n_layers))

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        if self.indices is not None:
            bad = [i for i in self.indices if not -ctx.num_layers <= int(i) < ctx.num_layers]
            if bad or not list(self.indices):
                raise ConfigError(f"block indices {bad or '[]'} invalid for {ctx.num_layers} blocks", option="method.indices")
        elif not (isinstance(self.top_k, int) and 0 < self.top_k <= ctx.num_layers):
            raise ConfigError(f"top_k must be in 1..{ctx.num_layers}, got {self.top_k!r}", option="method.top_k")

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        freeze(model)
        _, blocks = L.find_blocks(model, ctx.layers_path)
        for i in self.selected(len(blocks)):
            for p in blocks[i].parameters():
                p.requires_grad_(True)
        if self.train_final_norm:
            unfreeze_modules(model, ["ln_f", "model.norm", "final_layer_norm"])
        if self.train_head and ctx.task == "classification":
            unfreeze_modules(model, ctx.head_modules)
        return model
