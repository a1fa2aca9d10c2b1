"""LoRA variants that peft implements, each reachable as its own method name.

- dora   — Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation", arXiv:2402.09353:
           W' = m · (W0 + BA) / ‖W0 + BA‖_c  (trainable magnitude m per column + LoRA direction).
- rslora — Kalajdzievski 2023, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA",
           arXiv:2312.03732: W' = W0 + (alpha / √r) · BA.
- loha   — Hyeon-Woo et al. 2022, "FedPara", arXiv:2108.06098 (LyCORIS LoHa):
           ΔW = (B1 A1) ⊙ (B2 A2)  (Hadamard product of two low-rank products).
- lokr   — Yeh et al. 2024, "Navigating Text-To-Image Customization: From LyCORIS Fine-Tuning to
           Model Evaluation", arXiv:2309.14859 (LyCORIS LoKr): ΔW = C ⊗ (B A)  (Kronecker product).
- vera   — Kopiczko et al. 2024, "VeRA: Vector-based Random Matrix Adaptation", arXiv:2310.11454:
           ΔW = Λ_b B Λ_d A with A, B frozen random matrices shared across layers; only the scaling
           vectors d, b train.
All are frozen-base, mergeable reparameterisations saved in peft's format.
LoHa / LoKr: peft's LyCORIS layers support nn.Linear/Conv only — GPT-2's Conv1D is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from peftbench.errors import ConfigError
from peftbench.methods.base import ApplyContext, require_positive, resolve_targets
from peftbench.methods.lora import LoRA
from peftbench.methods.peft_base import PeftMethod
from peftbench.methods.registry import register_method


@register_method("dora")
@dataclass
class DoRA(LoRA):
    paper = "https://arxiv.org/abs/2402.09353"
    summary = "LoRA direction + trainable per-column magnitude (weight decomposition); mergeable"
    use_dora: bool = True


@register_method("rslora")
@dataclass
class RsLoRA(LoRA):
    paper = "https://arxiv.org/abs/2312.03732"
    summary = "LoRA scaled by alpha/sqrt(r) (rank-stabilised); mergeable"
    use_rslora: bool = True


# model types whose default targets are transformers' Conv1D (unsupported by peft's LyCORIS layers)
_CONV1D_MODEL_TYPES = {"gpt2"}


@dataclass
class _LycorisMethod(PeftMethod):
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
        if ctx.model_type in _CONV1D_MODEL_TYPES:
            raise ConfigError(
                f"peft's {self.name} supports nn.Linear/Conv layers only; {ctx.model_type} uses transformers "
                "Conv1D — use method=lora (or dora/rslora/vera) for this model", option="method",
            )
        self.check_targets(resolve_targets(self.target_modules, ctx), ctx)

    def peft_config(self, ctx: ApplyContext) -> Any:
        import peft

        return getattr(peft, self.peft_config_class)(
            task_type=ctx.peft_task_type, r=self.r, alpha=self.alpha, rank_dropout=self.rank_dropout,
            module_dropout=self.module_dropout, target_modules=resolve_targets(self.target_modules, ctx))


@register_method("loha")
@dataclass
class LoHa(_LycorisMethod):
    paper = "https://arxiv.org/abs/2108.06098"
    summary = "Hadamard product of two low-rank updates (LyCORIS LoHa); mergeable"

    peft_config_class = "LoHaConfig"


@register_method("lokr")
@dataclass
class LoKr(_LycorisMethod):
    paper = "https://arxiv.org/abs/2309.14859"
    summary = "Kronecker-product update (LyCORIS LoKr); mergeable"

    peft_config_class = "LoKrConfig"


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
