"""QLoRA — Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs", arXiv:2305.14314.

Update rule: W' = deq(W0_NF4) + (alpha / r) · B A — the frozen base is stored in 4-bit NormalFloat
with double quantisation (bitsandbytes), LoRA factors train in the compute dtype (bf16 on CUDA,
fp32 on CPU). Paged 8-bit AdamW is the paper's optimizer: ``train_optimizer()`` puts it in the run's
optimizer block on CUDA (paged optimizers do not exist on CPU; ``method.optimizer: null`` keeps the
run's), and results.json records it — it breaks "same optimizer for every method", visibly.
Under FSDP the 4-bit weights must be stored in the compute dtype (``quant_storage``), or FSDP
cannot flatten them with the adapters; ``check_strategy`` refuses otherwise.

Targets default to LoRA's (the family's attention q/v), so ``qlora`` vs ``lora`` isolates the 4-bit
base; the paper's all-linear recipe is ``target_modules: all_linear``.

Merging folds BA into the base *dequantized* to the dtype it was loaded in (W0 ← deq(W0) + ΔW, no
re-quantisation, which would move every weight of a block): the merged model is the function the
adapter computes, as in the usual QLoRA deployment (adapter merged into the 16-bit base). So
``changed`` and ``delta_rank`` mean what they mean for LoRA on the same targets: entries of the
adapted matrices that differ after the merge, and rank r per matrix.
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
from peftbench.methods.peft_base import merge_and_unload
from peftbench.methods.registry import register_method


def _bitsandbytes_available() -> bool:
    try:
        importlib.import_module("bitsandbytes")
    except Exception:  # ImportError, or a broken native library
        return False
    return True


def keep_plain_cpu_layout(model: nn.Module) -> None:
    """Keep every 4-bit weight in bitsandbytes' plain layout on CPU.

    On AVX512-BF16 CPUs bitsandbytes (≥ 0.49) repacks a 4-bit weight in place at its first no-grad
    eval forward. The repack fails on small layers (out_features % 32 or in_features % blocksize,
    e.g. a tiny test model's: "shape '[32, 0]' is invalid"), and where it succeeds its inverse is
    lossy (absmax re-quantised: ~2e-4 off), so a weight read after evaluation — the dequantized
    base of ``changed`` and of the merge — would no longer be the one the run trained on. The
    generic CPU kernel computes the same numbers from the plain layout."""
    for mod in model.modules():
        if getattr(mod, "support_avx512bf16_for_cpu", False):
            mod.support_avx512bf16_for_cpu = False


def _unpack_cpu_layout(model: nn.Module) -> None:
    """Undo a CPU repack done before :func:`keep_plain_cpu_layout` could stop it (a forward on the
    bare base, e.g. the forgetting measure), with bitsandbytes' own inverse — the one
    measure/params applies to copies, so the merged base and the counted base agree."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            p.data, p.quant_state = _convert_weight_packed_for_cpu_inverse(p.data, state)


def _is_4bit(model: nn.Module) -> bool:
    return any(getattr(p, "quant_state", None) is not None for p in model.parameters())


@register_method("qlora")
@dataclass
class QLoRA(LoRA):
    family = "reparameterized"
    paper = "https://arxiv.org/abs/2305.14314"
    summary = "LoRA on a 4-bit NF4 (double-quantised) frozen base"
    supports_merge = True  # into the dequantized base (see the module docstring)

    # null → LoRA's targets (the family's attention q/v), so QLoRA vs LoRA isolates the 4-bit base;
    # the paper adapts every linear layer of the blocks: target_modules="all_linear"
    target_modules: Any = None
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
        keep_plain_cpu_layout(base)
        return super().load(base, in_dir, ctx)

    def merge(self, model: nn.Module) -> nn.Module:
        """ΔW folded into the dequantized base (the model's load dtype), with peft's own merge (DoRA,
        rsLoRA alike): adapter state out, base unloaded and dequantized, adapter re-applied, merged."""
        if not _is_4bit(model):
            return super().merge(model)  # a plain base (e.g. on the meta device): LoRA's merge
        from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

        cfg = model.peft_config[model.active_adapter]
        state = get_peft_model_state_dict(model)
        _unpack_cpu_layout(model)
        base = model.unload().dequantize()  # transformers: every Linear4bit → nn.Linear
        if getattr(base, "is_loaded_in_4bit", False):  # a plain attribute peft reads; no longer true
            base.is_loaded_in_4bit = False
        plain = get_peft_model(base, cfg)
        set_peft_model_state_dict(plain, state)
        return merge_and_unload(plain)

    def peft_config(self, ctx: ApplyContext) -> Any:
        cfg = super().peft_config(ctx)
        if self.target_modules == "all_linear" and "all_linear" not in ctx.targets:
            cfg.target_modules = "all-linear"
        return cfg

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        from peft import prepare_model_for_kbit_training

        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_quantized", False):
            # the forgetting measure's no-grad forward on the bare base may have repacked the weights
            # (AVX512-BF16 CPUs), and a repacked layer fails in training: "a view of a leaf Variable
            # … in-place" at bitsandbytes' `result += bias`; back to the plain layout first
            _unpack_cpu_layout(model)
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=self.use_gradient_checkpointing)
            keep_plain_cpu_layout(model)
        # An unquantised model (e.g. `peftbench params` on a from-config tiny model) gets plain LoRA:
        # counts of trainable scalars are the same; the 4-bit storage needs a from_pretrained load.
        return super().apply(model, ctx)
