"""Shared machinery for methods that peft implements: one ``peft_config(ctx)`` per method.

Saving and loading use peft's own format, so plain ``PeftModel.from_pretrained`` opens our adapters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods.base import ApplyContext, Method, matching_modules


@dataclass
class PeftMethod(Method):
    def peft_config(self, ctx: ApplyContext) -> Any:
        raise NotImplementedError

    def check_targets(self, targets: list[str] | str, ctx: ApplyContext, option: str = "method.target_modules") -> None:
        if ctx.module_names and not matching_modules(ctx.module_names, targets):
            raise ConfigError(
                f"target_modules {targets!r} match no module of {ctx.family} ({ctx.model_type}); "
                f"e.g. {sorted({n.rsplit('.', 1)[-1] for n in ctx.module_names if n})[:12]}",
                option=option,
            )

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        from peft import get_peft_model

        cfg = self.peft_config(ctx)
        if ctx.task == "classification" and getattr(cfg, "modules_to_save", None) is None and ctx.head_modules:
            # peft's SEQ_CLS default only knows "classifier"/"score"; say it explicitly for every family.
            cfg.modules_to_save = list(ctx.head_modules)
        return get_peft_model(model, cfg)

    def save(self, model: nn.Module, out_dir: str | Path) -> list[Path]:
        out = Path(out_dir)
        model.save_pretrained(str(out), safe_serialization=True)
        return sorted(p for p in out.iterdir() if p.is_file())

    def load(self, base: nn.Module, in_dir: str | Path, ctx: ApplyContext) -> nn.Module:
        from peft import PeftModel

        return PeftModel.from_pretrained(base, str(in_dir), is_trainable=True)

    def merge(self, model: nn.Module) -> nn.Module:
        if not self.supports_merge:
            return super().merge(model)
        return merge_and_unload(model)


def merge_and_unload(model: nn.Module) -> nn.Module:
    """peft's ``merge_and_unload``, first putting each ``modules_to_save`` copy without a ``weight``
    (our PooledHead) in place of its wrapper with peft's own per-wrapper unload: peft's generic
    ``BaseTuner._replace_module`` rebinds ``.weight`` of every unloaded module and fails on one
    without it (IA3, VeRA, LyCORIS on MPNet's pooled head; huggingface/peft PR #3213)."""
    from peft.utils.other import ModulesToSaveWrapper

    for name, mod in list(model.named_modules()):
        if isinstance(mod, ModulesToSaveWrapper) and not hasattr(mod.original_module, "weight"):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child,
                    mod.unload_and_optionally_merge_module(merge=True, safe_merge=False, adapter_names=None))
    return model.merge_and_unload()
