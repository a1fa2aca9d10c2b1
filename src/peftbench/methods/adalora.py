"""AdaLoRA — Zhang et al. 2023, "Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning",
arXiv:2303.10512.

Update rule: W = W0 + P Λ Q (an SVD-shaped update, P/Q kept near-orthogonal by a regulariser added
to the loss); the singular values Λ of unimportant triplets are pruned during training so the
average rank goes from ``init_r`` to ``target_r`` on a cubic schedule between ``tinit`` and
``total_step - tfinal``. Implemented by peft; the rank re-allocation must run once per optimizer
step — ``on_train_step_end(model, global_step)`` (called by the LightningModule after the optimizer
step, while gradients still exist) does it. Mergeable like LoRA.

``total_step`` must match the real number of optimizer steps; the train loop may overwrite it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods.base import ApplyContext, require_positive, resolve_targets
from peftbench.methods.peft_base import PeftMethod
from peftbench.methods.registry import register_method


@register_method("adalora")
@dataclass
class AdaLoRA(PeftMethod):
    family = "reparameterized"
    paper = "https://arxiv.org/abs/2303.10512"
    summary = "SVD-form low-rank update whose per-matrix rank is pruned to a budget; mergeable"
    supports_merge = True
    ddp_find_unused = True  # pruned triplets stop receiving gradient

    init_r: int = 12  # starting rank of every adapted matrix
    target_r: int = 8  # average rank after budget allocation
    alpha: float = 32
    dropout: float = 0.0
    total_step: int = 100  # optimizer steps of the whole run (the schedule needs it up front)
    tinit: int = 0  # warm-up steps before pruning starts
    tfinal: int = 0  # final steps with the rank pattern frozen
    deltaT: int = 1  # steps between two re-allocations
    orth_reg_weight: float = 0.5  # weight of the orthogonality regulariser
    target_modules: Any = None  # null → the family's attention q/v defaults

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        require_positive(init_r=self.init_r, target_r=self.target_r, alpha=self.alpha,
                         total_step=self.total_step, deltaT=self.deltaT)
        if self.target_r > self.init_r:
            raise ConfigError(f"target_r ({self.target_r}) must be <= init_r ({self.init_r})", option="method.target_r")
        if self.tinit >= self.total_step - self.tfinal:
            raise ConfigError(f"tinit ({self.tinit}) must be < total_step - tfinal ({self.total_step - self.tfinal}); "
                              "there would be no budgeting phase", option="method.tinit")
        self.check_targets(resolve_targets(self.target_modules, ctx), ctx)

    def peft_config(self, ctx: ApplyContext) -> Any:
        from peft import AdaLoraConfig

        return AdaLoraConfig(
            task_type=ctx.peft_task_type, init_r=self.init_r, target_r=self.target_r, lora_alpha=self.alpha,
            lora_dropout=self.dropout, total_step=self.total_step, tinit=self.tinit, tfinal=self.tfinal,
            deltaT=self.deltaT, orth_reg_weight=self.orth_reg_weight,
            target_modules=resolve_targets(self.target_modules, ctx),
        )

    def on_train_step_end(self, model: nn.Module, step: int) -> None:
        """Rank re-allocation; call after optimizer.step(), before gradients are zeroed."""
        base = getattr(model, "base_model", None)
        if base is not None and hasattr(base, "update_and_allocate"):
            base.update_and_allocate(int(step))
