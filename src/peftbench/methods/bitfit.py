"""BitFit — Ben Zaken et al. 2022, "BitFit: Simple Parameter-efficient Fine-tuning for
Transformer-based Masked Language-models", arXiv:2106.10199.

Update rule: only bias vectors b train (W frozen); optionally the task head too.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods.base import ApplyContext, Method, freeze, matching_modules, unfreeze_modules
from peftbench.methods.registry import register_method


@register_method("bitfit")
@dataclass
class BitFit(Method):
    family = "selective"
    paper = "https://arxiv.org/abs/2106.10199"
    summary = "bias terms only (+ the task head when train_head)"

    train_head: bool = True

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        # Llama-style blocks have no biases (unless attention_bias / mlp_bias; Qwen2 only on q/k/v):
        # the context read that off the meta-device build. Without them BitFit trains nothing, or the
        # task head alone: head-only under BitFit's name in a results table. Refused before loading.
        if ctx.has_bias is False:
            also = (" (with train_head it would train the task head alone: that is method=head_only)"
                    if self.train_head and ctx.task == "classification" else "")
            raise ConfigError(f"this model has no bias terms to train{also}", option="method")

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        freeze(model)
        head = tuple(m + "." for m in matching_modules(model, ctx.head_modules))  # unfreeze_modules' rule
        body = 0  # bias weights outside the task head: a head's own bias does not make BitFit BitFit
        for name, p in model.named_parameters():
            if name.endswith(".bias") or name == "bias":
                p.requires_grad_(True)
                body += 0 if name.startswith(head) else p.numel()
        if self.train_head and ctx.task == "classification":
            unfreeze_modules(model, ctx.head_modules)
        if body == 0:  # a context that could not tell (has_bias None), or biases in the head only
            raise ConfigError("the model has no bias terms to train outside its task head (BitFit would be "
                              "head-only or nothing: method=head_only)", option="method")
        return model
