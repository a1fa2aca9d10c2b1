"""Prefix tuning — Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation",
arXiv:2101.00190.

Update rule: every attention layer l attends over [P_k^l; K^l] and [P_v^l; V^l]; the prefixes are
produced by a reparameterisation MLP, P = MLP(E) with E ∈ R^{n×d}:
Linear(d→h) → tanh → Linear(h→2·L·d), which stabilises training (the paper's key trick). Only E
and the MLP train (+ the task head); the model is frozen. peft PrefixTuningConfig(prefix_projection=True).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftbench.methods._prompt_base import PromptLearning
from peftbench.methods.base import ApplyContext, require_positive
from peftbench.methods.registry import register_method


@register_method("prefix_tuning")
@dataclass
class PrefixTuning(PromptLearning):
    paper = "https://arxiv.org/abs/2101.00190"
    summary = "learned key/value prefixes at every layer via a reparameterisation MLP (+ head)"
    needs_past_kv = True

    num_virtual_tokens: int = 20
    encoder_hidden_size: int = 512  # width h of the reparameterisation MLP

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        require_positive(encoder_hidden_size=self.encoder_hidden_size)

    def peft_config(self, ctx: ApplyContext) -> Any:
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(**self.peft_kwargs(ctx), prefix_projection=True,
                                  encoder_hidden_size=self.encoder_hidden_size)
