"""DoRA — Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation", arXiv:2402.09353.

Update rule: W' = m · (W0 + BA) / ‖W0 + BA‖_c — a trainable magnitude m per column times the
LoRA-updated direction; W0 frozen. Mergeable; implemented by peft (LoRA with ``use_dora``), saved
in peft's format.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftbench.methods.lora import LoRA
from peftbench.methods.registry import register_method


@register_method("dora")
@dataclass
class DoRA(LoRA):
    paper = "https://arxiv.org/abs/2402.09353"
    summary = "LoRA direction + trainable per-column magnitude (weight decomposition); mergeable"
    use_dora: bool = True
