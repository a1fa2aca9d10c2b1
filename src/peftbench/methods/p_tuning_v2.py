"""P-Tuning v2 — Liu et al. 2022, "P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning
Universally Across Scales and Tasks", arXiv:2110.07602.

Update rule: deep prompts — trainable key/value prefixes P^l ∈ R^{n×2d} at every layer l, learned
directly (no reparameterisation MLP), + the task head. peft PrefixTuningConfig(prefix_projection=False).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftbench.methods._prompt_base import PromptLearning
from peftbench.methods.base import ApplyContext
from peftbench.methods.registry import register_method


@register_method("p_tuning_v2")
@dataclass
class PTuningV2(PromptLearning):
    paper = "https://arxiv.org/abs/2110.07602"
    summary = "deep prompts: directly learned key/value prefixes at every layer (+ head)"
    needs_past_kv = True

    num_virtual_tokens: int = 20

    def peft_config(self, ctx: ApplyContext) -> Any:
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(**self.peft_kwargs(ctx), prefix_projection=False)
