"""Any tuner that peft ships, by its PeftType name and keyword arguments:

    method=peft method.peft_type=BOFT 'method.kwargs={boft_block_size: 4}'

The name maps to peft's config class through ``peft.PEFT_TYPE_TO_CONFIG_MAPPING``; ``task_type``
comes from the run's task, ``target_modules`` defaults to the family's attention targets when the
config has that field and kwargs leave it out, and the task head goes to ``modules_to_save``.
Family, mergeability and counts are whatever that tuner does — the report lists it as "peft:<TYPE>".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from peftbench.errors import ConfigError
from peftbench.methods.base import ApplyContext, resolve_targets
from peftbench.methods.peft_base import PeftMethod, merge_and_unload
from peftbench.methods.registry import register_method


def _mapping() -> dict[str, type]:
    from peft import PEFT_TYPE_TO_CONFIG_MAPPING

    return {str(getattr(k, "value", k)).upper(): v for k, v in PEFT_TYPE_TO_CONFIG_MAPPING.items()}


@register_method("peft")
@dataclass
class PeftGeneric(PeftMethod):
    family = "reparameterized"  # nominal: depends on peft_type
    paper = "https://github.com/huggingface/peft"
    summary = "any peft tuner by name + kwargs (method.peft_type, method.kwargs)"
    supports_merge = False  # depends on the tuner; merge() still tries merge_and_unload
    ddp_find_unused = True

    peft_type: str = "LORA"  # a peft PeftType name, e.g. LORA, BOFT, OFT, IA3, FOURIERFT, HRA
    kwargs: dict = field(default_factory=dict)  # passed to the config class

    def config_class(self) -> type:
        m = _mapping()
        key = str(self.peft_type).upper()
        if key not in m:
            raise ConfigError(f"unknown peft_type {self.peft_type!r}; available: {', '.join(sorted(m))}",
                              option="method.peft_type")
        return m[key]

    def _kwargs(self, ctx: ApplyContext) -> dict[str, Any]:
        cls = self.config_class()
        names = {f.name for f in dataclasses.fields(cls)}
        kw = dict(self.kwargs or {})
        unknown = sorted(set(kw) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__} has no field(s) {unknown}", option=f"method.kwargs.{unknown[0]}")
        from peft import PromptLearningConfig

        # (`is_prompt_learning` is a property, so it cannot be read off the class: test the type.)
        if "target_modules" in names and kw.get("target_modules") is None and "attention" in ctx.targets \
                and not issubclass(cls, PromptLearningConfig):
            kw["target_modules"] = resolve_targets(None, ctx)
        return kw

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        kw = self._kwargs(ctx)
        if kw.get("target_modules") not in (None, "all-linear"):
            self.check_targets(kw["target_modules"], ctx, option="method.kwargs.target_modules")

    def peft_config(self, ctx: ApplyContext) -> Any:
        cls = self.config_class()
        try:
            return cls(task_type=ctx.peft_task_type, **self._kwargs(ctx))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{cls.__name__}: {e}", option="method.kwargs") from e

    def merge(self, model):
        if not hasattr(model, "merge_and_unload"):
            return super().merge(model)
        return merge_and_unload(model)
