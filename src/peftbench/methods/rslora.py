"""rsLoRA — Kalajdzievski 2023, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA",
arXiv:2312.03732.

Update rule: W' = W0 + (alpha / √r) · BA (LoRA with the rank-stabilised scale instead of alpha/r);
W0 frozen. Mergeable; implemented by peft (LoRA with ``use_rslora``), saved in peft's format.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftbench.methods.lora import LoRA
from peftbench.methods.registry import register_method


@register_method("rslora")
@dataclass
class RsLoRA(LoRA):
    paper = "https://arxiv.org/abs/2312.03732"
    summary = "LoRA scaled by alpha/sqrt(r) (rank-stabilised); mergeable"
    use_rslora: bool = True
