"""Shared checks for peft's prompt-learning methods (prompt / prefix / p-tuning)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from peftbench.errors import ConfigError
from peftbench.methods.base import ApplyContext, require_positive
from peftbench.methods.peft_base import PeftMethod


def check_prefix_support(ctx: ApplyContext, name: str) -> None:
    """Prefix-style methods feed learned key/values through the model's past-key-value input."""
    if not ctx.past_key_values:
        raise ConfigError(
            f"{name} feeds learned key/values through past_key_values; model family '{ctx.family}' "
            f"({ctx.model_type}) does not declare `past_key_values: true` in its yaml — use "
            "method=prompt_tuning or lora", option="method",
        )


@dataclass
class PromptLearning(PeftMethod):
    family = "additive"
    needs_past_kv: ClassVar[bool] = False
    # peft prompt learning prepends tokens / key-values: recomputation-based gradient checkpointing
    # and the new cache API have broken it repeatedly (see DESIGN pitfalls) — refuse it.
    supports_grad_checkpointing = False

    num_virtual_tokens: int = 20

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        require_positive(num_virtual_tokens=self.num_virtual_tokens)
        if ctx.max_positions and self.num_virtual_tokens >= ctx.max_positions:
            raise ConfigError(
                f"num_virtual_tokens={self.num_virtual_tokens} leaves no room for input tokens: the model has "
                f"{ctx.max_positions} positions", option="method.num_virtual_tokens",
            )
        if self.needs_past_kv:
            check_prefix_support(ctx, self.name)

    def load(self, base, in_dir, ctx: ApplyContext):
        """peft refuses ``is_trainable=True`` for prompt learning; load frozen, then re-enable the
        prompt encoder (and saved head copies) so a resumed run keeps training them."""
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, str(in_dir), is_trainable=False)
        for n, p in model.named_parameters():
            if "prompt_encoder" in n or "modules_to_save" in n:
                p.requires_grad_(True)
        return model

    def peft_kwargs(self, ctx: ApplyContext) -> dict:
        """The fields every peft prompt-learning config takes; peft reads dims (layers, heads, GQA
        key/value heads) off the model config itself."""
        return dict(task_type=ctx.peft_task_type, num_virtual_tokens=self.num_virtual_tokens)
