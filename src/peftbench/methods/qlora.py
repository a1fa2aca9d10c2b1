"""QLoRA — Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs", arXiv:2305.14314.

Update rule: W' = deq(W0_NF4) + (alpha / r) · B A — the frozen base is stored in 4-bit NormalFloat
with double quantisation (bitsandbytes), LoRA factors train in the compute dtype (bf16 on CUDA,
fp32 on CPU). Paged 8-bit AdamW is the paper's optimizer: ``train_optimizer()`` puts it in the run's
optimizer block on CUDA (paged optimizers do not exist on CPU; ``method.optimizer: null`` keeps the
run's), and results.json records it — it breaks "same optimizer for every method", visibly.
Under FSDP the 4-bit weights must be stored in the compute dtype (``quant_storage``), or FSDP
cannot flatten them with the adapters; ``check_strategy`` refuses otherwise.

Not mergeable here: folding BA into 4-bit weights re-quantises them, so merged outputs differ.
Note: 4-bit ``numel()`` counts half of each packed weight (Params4bit); count with measure/params.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods.base import ApplyContext, Method, require_positive
from peftbench.methods.lora import LoRA
from peftbench.methods.registry import register_method


def _bitsandbytes_available() -> bool:
    try:
        importlib.import_module("bitsandbytes")
    except Exception:  # ImportError, or a broken native library
        return False
    return True


def keep_plain_layout_where_cpu_repack_fails(model: nn.Module) -> None:
    """On AVX512-BF16 CPUs bitsandbytes (≥ 0.49) repacks a 4-bit weight at its first no-grad eval
    forward; the repack assumes out_features % 32 == 0 and in_features % blocksize == 0 and raises
    ("shape '[32, 0]' is invalid") on smaller layers, e.g. a tiny test model's. Those layers keep
    the plain layout (same numbers, bitsandbytes' generic CPU kernel)."""
    for mod in model.modules():
        state = getattr(getattr(mod, "weight", None), "quant_state", None)
        if state is None or not getattr(mod, "support_avx512bf16_for_cpu", False):
            continue
        out_f, in_f = state.shape[0], state.shape[-1]
        if out_f % 32 or in_f % state.blocksize:
            mod.support_avx512bf16_for_cpu = False


@register_method("qlora")
@dataclass
class QLoRA(LoRA):
    family = "reparameterized"
    paper = "https://arxiv.org/abs/2305.14314"
    summary = "LoRA on a 4-bit NF4 (double-quantised) frozen base"
    supports_merge = False

    target_modules: Any = "all_linear"  # the paper adapts every linear layer of the blocks
    quant_type: str = "nf4"  # nf4 | fp4
    double_quant: bool = True  # quantise the quantisation constants too
    use_gradient_checkpointing: bool = False  # recompute activations (saves memory; slower)
    optimizer: Any = "paged_adamw_8bit"  # used on CUDA only; null → the run's optimizer
    quant_storage: Any = None  # bnb_4bit_quant_storage (e.g. bfloat16: FSDP needs the compute dtype)

    def check(self, ctx: ApplyContext) -> None:
        if not _bitsandbytes_available():
            raise ConfigError(
                "QLoRA needs bitsandbytes, which is not importable here; `pip install bitsandbytes` "
                "(or choose method=lora)", option="method",
            )
        if self.quant_type not in ("nf4", "fp4"):
            raise ConfigError(f"unknown quant_type {self.quant_type!r}; use nf4 | fp4", option="method.quant_type")
        if self.target_modules == "all_linear" and "all_linear" not in ctx.targets:
            require_positive(r=self.r, alpha=self.alpha)
            return Method.check(self, ctx)  # peft's "all-linear" needs no name check
        super().check(ctx)

    @staticmethod
    def compute_dtype() -> torch.dtype:
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32

    def train_optimizer(self, optim: dict[str, Any]) -> dict[str, Any]:
        if self.optimizer and torch.cuda.is_available():
            return {**optim, "name": self.optimizer, "fused": False}
        return optim

    def storage_dtype(self) -> torch.dtype | None:
        if self.quant_storage is None:
            return None
        dt = getattr(torch, str(self.quant_storage).replace("torch.", ""), None)
        if not isinstance(dt, torch.dtype):
            raise ConfigError(f"unknown dtype {self.quant_storage!r} (e.g. bfloat16, float32, uint8)",
                              option="method.quant_storage")
        return dt

    def check_strategy(self, strategy: str) -> None:
        if strategy == "fsdp" and self.storage_dtype() != self.compute_dtype():
            raise ConfigError(
                f"QLoRA under FSDP needs bitsandbytes' bnb_4bit_quant_storage equal to the compute dtype "
                f"({self.compute_dtype()}) so 4-bit weights can be flattened and sharded; this QLoRA config sets "
                f"quant_storage={self.quant_storage!r}. Set method.quant_storage to the compute dtype, or use "
                f"strategy=ddp / strategy=single", option="method.quant_storage")

    def load_kwargs(self, ctx: ApplyContext) -> dict[str, Any]:
        from transformers import BitsAndBytesConfig

        extra: dict[str, Any] = {}
        if ctx.task == "classification" and ctx.head_modules:
            # the task head is new and trains (modules_to_save): it must stay unquantised
            extra["llm_int8_skip_modules"] = list(ctx.head_modules)
        storage = self.storage_dtype()
        if storage is not None:
            extra["bnb_4bit_quant_storage"] = storage
        return {"quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=self.quant_type,
            bnb_4bit_use_double_quant=self.double_quant, bnb_4bit_compute_dtype=self.compute_dtype(), **extra,
        )}

    def load(self, base: nn.Module, in_dir, ctx: ApplyContext) -> nn.Module:
        keep_plain_layout_where_cpu_repack_fails(base)
        return super().load(base, in_dir, ctx)

    def peft_config(self, ctx: ApplyContext) -> Any:
        cfg = super().peft_config(ctx)
        if self.target_modules == "all_linear" and "all_linear" not in ctx.targets:
            cfg.target_modules = "all-linear"
        return cfg

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        from peft import prepare_model_for_kbit_training

        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_quantized", False):
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=self.use_gradient_checkpointing)
            keep_plain_layout_where_cpu_repack_fails(model)
        # An unquantised model (e.g. `peftbench params` on a from-config tiny model) gets plain LoRA:
        # counts of trainable scalars are the same; the 4-bit storage needs a from_pretrained load.
        return super().apply(model, ctx)
