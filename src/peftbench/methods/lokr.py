"""LoKr — Yeh et al. 2024, "Navigating Text-To-Image Customization: From LyCORIS Fine-Tuning to
Model Evaluation", arXiv:2309.14859 (LyCORIS LoKr).

Update rule: ΔW = C ⊗ (B A) — a Kronecker product of a small matrix and a low-rank product; W0
frozen. Mergeable; implemented by peft (LoKrConfig), saved in peft's format. Refuses Conv1D
families (GPT-2): see ``_lycoris``.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftbench.methods._lycoris import LycorisMethod
from peftbench.methods.registry import register_method


@register_method("lokr")
@dataclass
class LoKr(LycorisMethod):
    paper = "https://arxiv.org/abs/2309.14859"
    summary = "Kronecker-product update (LyCORIS LoKr); mergeable"

    peft_config_class = "LoKrConfig"
