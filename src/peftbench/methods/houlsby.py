"""Houlsby adapters — Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP",
arXiv:1902.00751. Our own implementation (peft ships none).

Update rule: h ← h + W_up σ(W_down h) after the attention output projection AND after the FFN
output projection of every block; the blocks' layer norms also train (+ the task head).
W_down ∈ R^{b×d}, W_up ∈ R^{d×b} zero-initialised, so the adapted model starts equal to the base.
The insertion points come from the family yaml (``targets.attn_out`` / ``targets.ffn_out``);
the shared machinery is in ``_adapters``.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftbench.methods._adapters import BottleneckAdapters
from peftbench.methods.registry import register_method


@register_method("houlsby")
@dataclass
class Houlsby(BottleneckAdapters):
    paper = "https://arxiv.org/abs/1902.00751"
    summary = "bottleneck adapters after attention and FFN outputs + layer norms (+ head)"
    positions = ("attn_out", "ffn_out")
    train_norms = True
