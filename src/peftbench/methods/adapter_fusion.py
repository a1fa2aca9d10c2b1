"""AdapterFusion — Pfeiffer et al. 2021, "AdapterFusion: Non-Destructive Task Composition for
Transfer Learning", arXiv:2005.00247.

Two stages. Stage 1: one bottleneck adapter per task, trained separately (method=pfeiffer or
houlsby; each run saves ``adapter_model.safetensors`` + ``method.json``). Stage 2 (this method):
load those N adapters (frozen) at every insertion point and learn to combine them per token:
    a_n = h + A_n(h)                    (output of stage-one adapter n)
    α   = softmax_n( (Q h) · (K a_n) )  (attention over the N adapters)
    h' = Σ_n α_n · V a_n                (V initialised to the identity)
Only Q, K, V (per insertion point) and the task head train. Stage-one layer norms / heads are not
carried over (only adapter weights).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods import _adapter_layers as L
from peftbench.methods.base import ApplyContext, Method, freeze, unfreeze_modules
from peftbench.methods.registry import register_method

ADAPTER_METHODS = ("pfeiffer", "houlsby", "adapter_drop")
_SUFFIX = ".pb_adapter.down.weight"


class Fusion(nn.Module):
    def __init__(self, dim: int, n: int, temperature: float = 1.0):
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim, bias=False)
        self.adapters = nn.ModuleList()
        self.temperature = temperature
        nn.init.normal_(self.query.weight, std=0.02)
        nn.init.zeros_(self.query.bias)
        nn.init.normal_(self.key.weight, std=0.02)
        nn.init.zeros_(self.key.bias)
        nn.init.eye_(self.value.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = torch.stack([h + ad(h) for ad in self.adapters], dim=-2)  # (..., N, d)
        q = self.query(h).unsqueeze(-2)  # (..., 1, d)
        k = self.key(a)
        scores = (q * k).sum(-1) / self.temperature  # (..., N)
        alpha = torch.softmax(scores, dim=-1).unsqueeze(-1)
        return (alpha * self.value(a)).sum(-2)


def _fusion_hook(module: nn.Module, inputs: Any, output: Any) -> Any:
    h = output[0] if isinstance(output, tuple) else output
    out = module.pb_fusion(h)
    return (out, *output[1:]) if isinstance(output, tuple) else out


def read_stage_one(d: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    p = Path(d)
    meta, weights = p / "method.json", p / "adapter_model.safetensors"
    if not meta.is_file() or not weights.is_file():
        raise ConfigError(f"{p} holds no saved stage-one adapter (needs method.json and adapter_model.safetensors; "
                          f"train one with method=pfeiffer or houlsby first)", option="method.adapter_dirs")
    info = json.loads(meta.read_text())
    if info.get("name") not in ADAPTER_METHODS:
        raise ConfigError(f"{p} holds a '{info.get('name')}' run; stage-one adapters come from {ADAPTER_METHODS}",
                          option="method.adapter_dirs")
    state = load_file(str(weights))
    if not any(k.endswith(_SUFFIX) for k in state):
        raise ConfigError(f"{p}: no adapter weights in adapter_model.safetensors", option="method.adapter_dirs")
    return info, state


@register_method("adapter_fusion")
@dataclass
class AdapterFusion(Method):
    family = "additive"
    paper = "https://arxiv.org/abs/2005.00247"
    summary = "attention over N frozen stage-one adapters; only the fusion layers (+ head) train"

    adapter_dirs: list = field(default_factory=list)  # saved stage-one runs (pfeiffer / houlsby)
    temperature: float = 1.0
    train_head: bool = True

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """What trains, plus the frozen stage-one adapters inside each fusion: the fused model cannot
        be rebuilt from the base without them (so ``stored_bytes`` counts them, and the save does not
        depend on the stage-one folders' later contents)."""
        return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
                if p.requires_grad or ".pb_fusion." in n}

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        if not self.adapter_dirs:
            raise ConfigError("adapter_fusion needs stage-one adapters: set method.adapter_dirs to the output dirs "
                              "of pfeiffer/houlsby runs (one per task)", option="method.adapter_dirs")
        for d in self.adapter_dirs:
            read_stage_one(d)

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        freeze(model)
        stage_one = [read_stage_one(d) for d in self.adapter_dirs]
        points = sorted({k[: -len(_SUFFIX)] for _, st in stage_one for k in st if k.endswith(_SUFFIX)})
        for name in points:
            mod = L.get_submodule(model, name)
            dim = L.out_features(mod)
            fusion = Fusion(dim, len(stage_one), self.temperature).to(L._device_of(mod))
            for info, st in stage_one:
                pre = name + ".pb_adapter."
                sub = {k[len(pre):]: v for k, v in st.items() if k.startswith(pre)}
                if not sub:
                    continue  # this stage-one adapter has none here (e.g. Pfeiffer at an attn point)
                hp = info.get("hparams", {})
                ad = L.Bottleneck(dim, sub["down.weight"].shape[0], hp.get("activation", "relu"),
                                  float(hp.get("scale", 1.0))).to(L._device_of(mod))
                ad.load_state_dict(sub)
                ad.requires_grad_(False)
                fusion.adapters.append(ad)
            mod.pb_fusion = fusion
            mod.register_forward_hook(_fusion_hook)
        if self.train_head and ctx.task == "classification":
            unfreeze_modules(model, ctx.head_modules)
        return model
