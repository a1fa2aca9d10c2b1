"""(IA)³ — Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
In-Context Learning", arXiv:2205.05638.

Update rule: learned vectors rescale activations — k ← l_k ⊙ k, v ← l_v ⊙ v, and the FFN's inner
activation h ← l_ff ⊙ h (applied to the input of the FFN output projection); l initialised to 1.
Mergeable (the vectors fold into the weights). peft IA3Config.
Targets: method.target_modules / feedforward_modules, else the family yaml's ``targets.ia3`` /
``targets.ia3_ffn`` (carried by the apply context).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftbench.errors import ConfigError
from peftbench.methods.base import ApplyContext
from peftbench.methods.peft_base import PeftMethod
from peftbench.methods.registry import register_method


@register_method("ia3")
@dataclass
class IA3(PeftMethod):
    family = "additive"
    paper = "https://arxiv.org/abs/2205.05638"
    summary = "learned rescaling vectors on keys, values and FFN activations (+ head); mergeable"
    supports_merge = True

    target_modules: Any = None  # null → the family's targets.ia3
    feedforward_modules: Any = None  # subset of target_modules scaled on their input

    def _targets(self, ctx: ApplyContext) -> tuple[Any, Any]:
        if self.target_modules is not None:
            ff = self.feedforward_modules if self.feedforward_modules is not None else []
            return self.target_modules, ff
        if ctx.targets.get("ia3"):
            return list(ctx.targets["ia3"]), list(ctx.targets.get("ia3_ffn", []))
        raise ConfigError(f"model family '{ctx.family}' declares no (IA)3 targets (targets.ia3 / ia3_ffn in "
                          f"conf/model/{ctx.family}.yaml); set method.target_modules and method.feedforward_modules",
                          option="method.target_modules")

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
