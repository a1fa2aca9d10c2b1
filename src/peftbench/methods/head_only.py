"""Head-only (linear probing): the body is frozen, only the task-specific head trains."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods.base import ApplyContext, Method, freeze, unfreeze_modules
from peftbench.methods.registry import register_method


@register_method("head_only")
@dataclass
class HeadOnly(Method):
    family = "selective"
    summary = "only the task head (classifier / score / lm_head) trains"

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        if not ctx.head_modules:
            raise ConfigError(f"model family '{ctx.family}' declares no head modules", option="model.head_modules")

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        freeze(model)
        if unfreeze_modules(model, ctx.head_modules) == 0:
            raise ConfigError(f"no head module {ctx.head_modules} in the model", option="model.head_modules")
        return model
