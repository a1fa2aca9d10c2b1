"""Pfeiffer adapters — Pfeiffer et al. 2021, "AdapterFusion: Non-Destructive Task Composition for
Transfer Learning", arXiv:2005.00247 (the "Pfeiffer" configuration). Our own implementation.

Update rule: one adapter per block, h ← h + W_up σ(W_down h) after the FFN output projection
(``targets.ffn_out`` of the family yaml); W_up zero-initialised; the base is frozen, the adapters
(+ the task head) train. The shared machinery is in ``_adapters``.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftbench.methods._adapters import BottleneckAdapters
from peftbench.methods.registry import register_method


@register_method("pfeiffer")
@dataclass
class Pfeiffer(BottleneckAdapters):
    paper = "https://arxiv.org/abs/2005.00247"
    summary = "one bottleneck adapter after each FFN output (+ head)"
    positions = ("ffn_out",)
