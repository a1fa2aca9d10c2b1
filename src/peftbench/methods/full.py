"""Full fine-tuning: every parameter trains. The baseline every PEFT paper compares against."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftbench.methods.base import TASKS, ApplyContext, Method
from peftbench.methods.registry import register_method


@register_method("full")
@dataclass
class Full(Method):
    family = "selective"  # selects everything: the degenerate end of the selective family
    summary = "all parameters train"
    freezes_base = False
    tasks = TASKS + ("image_text",)  # every weight of any model

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
