"""AdapterDrop — Rücklé et al. 2021, "AdapterDrop: On the Efficiency of Adapters in Transformers",
arXiv:2010.11918.

Pfeiffer (or Houlsby) bottleneck adapters, h ← h + W_up σ(W_down h), with the adapters of the
lowest ``drop_n`` blocks removed:
  drop_at: both       never inserted there (fewer trainable parameters, faster train and inference)
  drop_at: inference  trained in every block, skipped in the lowest drop_n blocks in eval mode
  drop_at: train      "robust" AdapterDrop: each training forward skips the adapters of the lowest
                      k ~ U{0..drop_n} blocks; all adapters run at inference
The saving is measurable: every adapter counts its forward calls (``_adapter_layers.count_calls``).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods import _adapter_layers as L
from peftbench.methods._adapters import BottleneckAdapters
from peftbench.methods.base import ApplyContext
from peftbench.methods.registry import register_method


def _drop_pre_hook(cfg: tuple[int, str], module: nn.Module, args, kwargs=None) -> None:
    drop_n, drop_at = cfg
    k = drop_n
    if drop_at == "train":
        k = random.randint(0, drop_n) if module.training else 0
    elif drop_at == "inference":
        k = 0 if module.training else drop_n
    for ad in L.adapter_modules(module):
        ad.active = getattr(ad, "layer_idx", 0) >= k


@register_method("adapter_drop")
@dataclass
class AdapterDrop(BottleneckAdapters):
    paper = "https://arxiv.org/abs/2010.11918"
    summary = "bottleneck adapters with those of the lowest drop_n blocks dropped (train/inference)"
    ddp_find_unused = True  # dropped adapters get no gradient in that step

    style: str = "pfeiffer"  # pfeiffer (after FFN) | houlsby (after attention and FFN, + norms)
    drop_n: int = 1  # adapters of blocks 0..drop_n-1 are dropped
    drop_at: str = "inference"  # train | inference | both

    def __post_init__(self) -> None:
        if self.style == "houlsby":
            self.positions = ("attn_out", "ffn_out")
            self.train_norms = True

    def check(self, ctx: ApplyContext) -> None:
        if self.style not in ("pfeiffer", "houlsby"):
            raise ConfigError(f"unknown style {self.style!r}; use pfeiffer | houlsby", option="method.style")
        if self.drop_at not in ("train", "inference", "both"):
            raise ConfigError(f"unknown drop_at {self.drop_at!r}; use train | inference | both", option="method.drop_at")
        if not 0 <= self.drop_n < ctx.num_layers:
            raise ConfigError(f"drop_n must be in 0..{ctx.num_layers - 1} (the model has {ctx.num_layers} blocks)",
                              option="method.drop_n")
        super().check(ctx)

    def block_indices(self, ctx: ApplyContext) -> list[int]:
        idx = super().block_indices(ctx)
        return [i for i in idx if i >= self.drop_n] if self.drop_at == "both" else idx

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        model = super().apply(model, ctx)
        if self.drop_at != "both" and self.drop_n > 0:
            model.register_forward_pre_hook(functools.partial(_drop_pre_hook, (self.drop_n, self.drop_at)),
                                            with_kwargs=True)
        return model
