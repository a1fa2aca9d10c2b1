"""Shared base of the LyCORIS methods peft implements (``loha``, ``lokr``): the two configs share
every field we set, so a method names only its paper and its peft config class.

peft's LyCORIS layers support nn.Linear/Conv only: a family whose projections are transformers
Conv1D (``conv1d: true`` in its yaml, e.g. GPT-2) is refused before any weight is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from peftbench.errors import ConfigError
from peftbench.methods.base import ApplyContext, require_positive, resolve_targets
from peftbench.methods.peft_base import PeftMethod


@dataclass
class LycorisMethod(PeftMethod):
    family = "reparameterized"
    supports_merge = True
    peft_config_class: ClassVar[str] = ""  # LoHaConfig | LoKrConfig: the two share every field we set

    r: int = 8
    alpha: float = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    target_modules: Any = None  # null → the family's attention q/v defaults

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        require_positive(r=self.r, alpha=self.alpha)
        if ctx.conv1d:
            raise ConfigError(
                f"peft's {self.name} supports nn.Linear/Conv layers only; {ctx.family} ({ctx.model_type}) "
                "uses transformers Conv1D — use method=lora (or dora/rslora/vera) for this model",
                option="method",
            )
        self.check_targets(resolve_targets(self.target_modules, ctx), ctx)

    def peft_config(self, ctx: ApplyContext) -> Any:
        import peft

        return getattr(peft, self.peft_config_class)(
            task_type=ctx.peft_task_type, r=self.r, alpha=self.alpha, rank_dropout=self.rank_dropout,
            module_dropout=self.module_dropout, target_modules=resolve_targets(self.target_modules, ctx))
