"""(IA)³ — Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
In-Context Learning", arXiv:2205.05638.

Update rule: learned vectors rescale activations — k ← l_k ⊙ k, v ← l_v ⊙ v, and the FFN's inner
activation h ← l_ff ⊙ h (applied to the input of the FFN output projection); l initialised to 1.
Mergeable (the vectors fold into the weights). peft IA3Config.
Targets: ctx.targets["ia3"] / ["ia3_ffn"] when the family declares them, else peft's own table
for the model type, else our fallback table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftbench.errors import ConfigError
from peftbench.methods.base import ApplyContext
from peftbench.methods.peft_base import PeftMethod
from peftbench.methods.registry import register_method

# model_type → (target_modules, feedforward_modules); feedforward ⊂ targets
FALLBACK: dict[str, tuple[list[str], list[str]]] = {
    "bert": (["key", "value", "output.dense"], ["output.dense"]),
    "roberta": (["key", "value", "output.dense"], ["output.dense"]),
    "gpt2": (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "qwen2": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "mistral": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
}


@register_method("ia3")
@dataclass
class IA3(PeftMethod):
    family = "additive"
    paper = "https://arxiv.org/abs/2205.05638"
    summary = "learned rescaling vectors on keys, values and FFN activations (+ head); mergeable"
    supports_merge = True

    target_modules: Any = None  # null → family / fallback table
    feedforward_modules: Any = None  # subset of target_modules scaled on their input

    def _targets(self, ctx: ApplyContext) -> tuple[Any, Any]:
        if self.target_modules is not None:
            ff = self.feedforward_modules if self.feedforward_modules is not None else []
            return self.target_modules, ff
        if "ia3" in ctx.targets:
            return list(ctx.targets["ia3"]), list(ctx.targets.get("ia3_ffn", []))
        if ctx.model_type in FALLBACK:
            t, f = FALLBACK[ctx.model_type]
            return list(t), list(f)
        raise ConfigError(f"no default (IA)3 targets for model type '{ctx.model_type}'; set method.target_modules "
                          "and method.feedforward_modules", option="method.target_modules")

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        t, f = self._targets(ctx)
        self.check_targets(t, ctx)
        if isinstance(t, list) and isinstance(f, list) and not set(f) <= set(t):
            raise ConfigError(f"feedforward_modules {f} must be a subset of target_modules {t}",
                              option="method.feedforward_modules")

    def peft_config(self, ctx: ApplyContext) -> Any:
        from peft import IA3Config

        t, f = self._targets(ctx)
        return IA3Config(task_type=ctx.peft_task_type, target_modules=t, feedforward_modules=f)
