"""Prompt tuning — Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning",
arXiv:2104.08691.

Update rule: the input becomes [P; E(x)] with P ∈ R^{n×d} (n virtual token embeddings) the only
trained parameters (+ the task head for classification); the whole model is frozen. peft.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftbench.errors import ConfigError
from peftbench.methods._prompt_base import PromptLearning
from peftbench.methods.base import ApplyContext
from peftbench.methods.registry import register_method


@register_method("prompt_tuning")
@dataclass
class PromptTuning(PromptLearning):
    paper = "https://arxiv.org/abs/2104.08691"
    summary = "n soft-prompt embeddings prepended to the input (+ head)"

    num_virtual_tokens: int = 20
    init: str = "random"  # random | text (needs init_text and a tokenizer path)
    init_text: Any = None  # e.g. "Classify the sentiment of this review:"
    tokenizer_name_or_path: Any = None  # for init: text

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        if self.init not in ("random", "text"):
            raise ConfigError(f"unknown init {self.init!r}; use random | text", option="method.init")
        if self.init == "text" and not (self.init_text and self.tokenizer_name_or_path):
            raise ConfigError("init: text needs init_text and tokenizer_name_or_path", option="method.init_text")

    def peft_config(self, ctx: ApplyContext) -> Any:
        from peft import PromptTuningConfig

        kw = self.peft_kwargs(ctx)
        if self.init == "text":
            kw.update(prompt_tuning_init="TEXT", prompt_tuning_init_text=self.init_text,
                      tokenizer_name_or_path=self.tokenizer_name_or_path)
        return PromptTuningConfig(**kw)
