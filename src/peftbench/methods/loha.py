"""LoHa — Hyeon-Woo et al. 2022, "FedPara: Low-Rank Hadamard Product for Communication-Efficient
Federated Learning", arXiv:2108.06098 (LyCORIS LoHa).

Update rule: ΔW = (B1 A1) ⊙ (B2 A2) — the Hadamard product of two low-rank products; W0 frozen.
Mergeable; implemented by peft (LoHaConfig), saved in peft's format. Refuses Conv1D families (GPT-2):
see ``_lycoris``.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftbench.methods._lycoris import LycorisMethod
from peftbench.methods.registry import register_method


@register_method("loha")
@dataclass
class LoHa(LycorisMethod):
    paper = "https://arxiv.org/abs/2108.06098"
    summary = "Hadamard product of two low-rank updates (LyCORIS LoHa); mergeable"

    peft_config_class = "LoHaConfig"
