"""VeRA — Kopiczko et al. 2024, "VeRA: Vector-based Random Matrix Adaptation", arXiv:2310.11454.

Update rule: ΔW = Λ_b B Λ_d A, with A, B frozen random matrices shared across layers (seeded by
``projection_prng_key``); only the scaling vectors d, b train. W0 frozen. Mergeable; implemented by
peft (VeraConfig), saved in peft's format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftbench.methods.base import ApplyContext, require_positive, resolve_targets
from peftbench.methods.peft_base import PeftMethod
from peftbench.methods.registry import register_method


@register_method("vera")
@dataclass
class VeRA(PeftMethod):
    family = "reparameterized"
    paper = "https://arxiv.org/abs/2310.11454"
    summary = "frozen shared random low-rank matrices, trainable scaling vectors only; mergeable"
    supports_merge = True

    r: int = 256  # rank of the shared random matrices (cheap: they are frozen)
    d_initial: float = 0.1  # initial value of the d scaling vector
    dropout: float = 0.0
    projection_prng_key: int = 0  # seed of the shared random matrices
    save_projection: bool = True  # store A/B in the checkpoint (else regenerated from the seed)
    target_modules: Any = None

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        require_positive(r=self.r, d_initial=self.d_initial)
        self.check_targets(resolve_targets(self.target_modules, ctx), ctx)

    def peft_config(self, ctx: ApplyContext) -> Any:
        from peft import VeraConfig

        return VeraConfig(task_type=ctx.peft_task_type, r=self.r, d_initial=self.d_initial, vera_dropout=self.dropout,
                          projection_prng_key=self.projection_prng_key, save_projection=self.save_projection,
                          target_modules=resolve_targets(self.target_modules, ctx))
