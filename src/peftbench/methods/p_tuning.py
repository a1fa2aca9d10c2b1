"""P-tuning — Liu et al. 2021, "GPT Understands, Too", arXiv:2103.10385.

Update rule: virtual token embeddings h_i = f(e_i) produced by a prompt encoder f (an MLP, or a
bi-LSTM followed by an MLP) from trainable embeddings e; [h; E(x)] is fed to the frozen model.
Only e and f train (+ the task head). peft PromptEncoderConfig.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftbench.errors import ConfigError
from peftbench.methods._prompt_base import PromptLearning
from peftbench.methods.base import ApplyContext, require_positive
from peftbench.methods.registry import register_method


@register_method("p_tuning")
@dataclass
class PTuning(PromptLearning):
    paper = "https://arxiv.org/abs/2103.10385"
    summary = "virtual tokens produced by a trainable MLP/LSTM prompt encoder (+ head)"

    num_virtual_tokens: int = 20
    encoder: str = "mlp"  # mlp | lstm
    encoder_hidden_size: int = 128
    encoder_num_layers: int = 2
    encoder_dropout: float = 0.0

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        require_positive(encoder_hidden_size=self.encoder_hidden_size, encoder_num_layers=self.encoder_num_layers)
        if self.encoder not in ("mlp", "lstm"):
            raise ConfigError(f"unknown encoder {self.encoder!r}; use mlp | lstm", option="method.encoder")

    def peft_config(self, ctx: ApplyContext) -> Any:
        from peft import PromptEncoderConfig

        return PromptEncoderConfig(
            **self.peft_kwargs(ctx), encoder_reparameterization_type=self.encoder.upper(),
            encoder_hidden_size=self.encoder_hidden_size, encoder_num_layers=self.encoder_num_layers,
            encoder_dropout=self.encoder_dropout,
        )
