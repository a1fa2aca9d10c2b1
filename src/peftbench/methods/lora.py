"""LoRA — Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685.

Update rule: W' = W0 + (alpha / r) · B A, with A ∈ R^{r×k} (random init) and B ∈ R^{d×r} (zero init)
trainable and W0 frozen. Merging folds BA into W0, so merged inference adds no parameters or latency.
Implemented by peft; ``use_dora`` / ``use_rslora`` reach its DoRA and rsLoRA variants by config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftbench.methods.base import TASKS, ApplyContext, require_positive, resolve_targets
from peftbench.methods.peft_base import PeftMethod
from peftbench.methods.registry import register_method


@register_method("lora")
@dataclass
class LoRA(PeftMethod):
    family = "reparameterized"
    paper = "https://arxiv.org/abs/2106.09685"
    summary = "low-rank update BA on target matrices; base frozen; mergeable"
    supports_merge = True
    tasks = TASKS + ("image_text",)  # any model with target matrices (image_text: the decoder's)

    r: int = 8
    alpha: float = 16
    dropout: float = 0.05
    target_modules: Any = None  # null → the family's attention q/v defaults
    bias: str = "none"
    use_dora: bool = False
    use_rslora: bool = False
    init_lora_weights: Any = True

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        require_positive(r=self.r, alpha=self.alpha)
        if not 0 <= self.dropout < 1:
            from peftbench.errors import ConfigError

            raise ConfigError(f"must be in [0, 1), got {self.dropout}", option="method.dropout")
        self.check_targets(resolve_targets(self.target_modules, ctx), ctx)

    def peft_config(self, ctx: ApplyContext) -> Any:
        from peft import LoraConfig

        return LoraConfig(
            task_type=ctx.peft_task_type,
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=resolve_targets(self.target_modules, ctx),
            bias=self.bias,
            use_dora=self.use_dora,
            use_rslora=self.use_rslora,
            init_lora_weights=self.init_lora_weights,
        )
