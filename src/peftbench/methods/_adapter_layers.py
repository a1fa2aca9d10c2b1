"""Shared pieces for our own (non-peft) methods: bottleneck adapters, forward-hook insertion, the
family's insertion points (``targets`` in conf/model/<family>.yaml, carried by the apply context),
and finding the list of transformer blocks by duck typing.

Why hooks instead of wrapper modules: a forward hook on e.g. ``attention.output.dense`` adds the
adapter without renaming any base parameter, so the frozen base keeps its exact state-dict names
(checkpoints, ``changed`` counts and "base is bit-identical" checks compare like with like). The
adapter itself is registered as a child of the hooked module (``<module>.pb_adapter``), so it is
saved, moved to device and counted like any other parameter.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods.base import ApplyContext, matching_modules


def arch_targets(ctx: ApplyContext, key: str) -> list[str]:
    """The family's insertion point ``key`` (conf/model/<family>.yaml ``targets``):
      attn_out: the attention output projection (Houlsby's first adapter sits after it)
      ffn_out:  the FFN output projection (Houlsby's second / Pfeiffer's only adapter)
      ffn_in:   the module whose *input* is the FFN input (parallel adapters read it)"""
    if ctx.targets.get(key):
        return list(ctx.targets[key])
    raise ConfigError(
        f"model family '{ctx.family}' declares no '{key}' insertion point; add targets.{key} to "
        f"conf/model/{ctx.family}.yaml (it declares: {sorted(ctx.targets)})",
        option=f"model.targets.{key}",
    )


def check_match(ctx: ApplyContext, targets: list[str] | str, option: str) -> None:
    if ctx.module_names and not matching_modules(ctx.module_names, targets):
        raise ConfigError(
            f"targets {targets!r} match no module of {ctx.family} ({ctx.model_type})", option=option
        )


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    mod = model
    for part in path.split("."):
        mod = getattr(mod, part)
    return mod


def find_blocks(model: nn.Module, layers_path: str = "") -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer blocks: ctx.layers_path, else the largest ModuleList whose
    entries are all the same class (duck typing: that is how every HF decoder/encoder stores them)."""
    if layers_path:
        for prefix in ("", "base_model.model.", "base_model."):
            try:
                mods = get_submodule(model, prefix + layers_path)
                if isinstance(mods, nn.ModuleList):
                    return prefix + layers_path, mods
            except AttributeError:
                continue
    best: tuple[str, nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and len({type(m) for m in mod}) == 1:
            if best is None or len(mod) > len(best[1]):
                best = (name, mod)
    if best is None:
        raise ConfigError("cannot find the list of transformer blocks; set model.layers_path", option="model.layers_path")
    return best


def block_index(name: str, blocks_path: str) -> int | None:
    """Index of the block a qualified module name lives in (``<blocks_path>.<i>.…``)."""
    prefix = blocks_path + "."
    if not name.startswith(prefix):
        # tolerate a peft wrapper prefix on one side only
        i = name.find("." + blocks_path.rsplit(".", 1)[-1] + ".")
        if i < 0:
            return None
        rest = name[i + len(blocks_path.rsplit(".", 1)[-1]) + 2:]
    else:
        rest = name[len(prefix):]
    head = rest.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def out_features(mod: nn.Module) -> int:
    """Output width of a Linear / GPT-2 Conv1D / any module with a 2-D weight."""
    if isinstance(mod, nn.Linear):
        return mod.out_features
    if hasattr(mod, "nf"):  # transformers Conv1D: weight is (in, out)
        return int(mod.nf)
    w = getattr(mod, "weight", None)
    if w is not None and w.dim() == 2:
        return int(w.shape[0])
    raise ConfigError(f"cannot infer the output width of {type(mod).__name__}", option="model.targets")


class Bottleneck(nn.Module):
    """h ↦ up(σ(down(h))) — the adapter delta; callers add the residual. ``up`` is zero-initialised,
    so a freshly inserted adapter is the identity and training starts from the base model."""

    def __init__(self, dim: int, bottleneck: int, activation: str = "relu", scale: float = 1.0, init_up_zero: bool = True):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.act = {"relu": nn.ReLU(), "gelu": nn.GELU(), "tanh": nn.Tanh(), "silu": nn.SiLU()}[activation]
        self.scale = scale
        self.active = True  # AdapterDrop switches this off per layer
        self.calls = 0  # forward calls since the last reset: makes AdapterDrop's saving measurable
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        if init_up_zero:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.scale * self.up(self.act(self.down(h.to(self.down.weight.dtype)))).to(h.dtype)


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _replace_first(out: Any, t: torch.Tensor) -> Any:
    return (t, *out[1:]) if isinstance(out, tuple) else t


def _sequential_hook(module: nn.Module, inputs: Any, output: Any) -> Any:
    """Sequential (Houlsby/Pfeiffer) adapter: out ← out + adapter(out)."""
    ad = module.pb_adapter
    if not ad.active:
        return output
    h = _first(output)
    return _replace_first(output, h + ad(h))


def _parallel_hook(module: nn.Module, inputs: Any, output: Any) -> Any:
    """Parallel adapter (He et al. 2022) on a module: out ← out + adapter(module input)."""
    ad = module.pb_adapter
    if not ad.active:
        return output
    x = inputs[0]
    return _replace_first(output, _first(output) + ad(x))


def _capture_pre_hook(adapter: nn.Module, module: nn.Module, inputs: Any) -> None:
    adapter._pb_input = inputs[0]


def _parallel_split_hook(module: nn.Module, inputs: Any, output: Any) -> Any:
    """Parallel adapter whose input is captured elsewhere (BERT: FFN input enters ``intermediate``,
    FFN output leaves ``output.dense``)."""
    ad = module.pb_adapter
    x = getattr(ad, "_pb_input", None)
    ad._pb_input = None
    if not ad.active or x is None:
        return output
    return _replace_first(output, _first(output) + ad(x))


def insert_sequential(model: nn.Module, module_names: list[str], bottleneck: int, activation: str = "relu",
                      scale: float = 1.0) -> list[Bottleneck]:
    adapters = []
    for name in module_names:
        mod = get_submodule(model, name)
        if hasattr(mod, "pb_adapter"):
            raise ConfigError(f"module {name} already has an adapter", option="method")
        ad = Bottleneck(out_features(mod), bottleneck, activation, scale)
        ad.to(device=_device_of(mod))
        mod.pb_adapter = ad
        mod.register_forward_hook(_sequential_hook)
        adapters.append(ad)
    return adapters


def insert_parallel(model: nn.Module, ctx: ApplyContext, block_names: list[str], bottleneck: int, scale: float,
                    activation: str = "relu") -> list[Bottleneck]:
    """One parallel adapter around the FFN of each block in ``block_names``."""
    ffn_in = arch_targets(ctx, "ffn_in")
    ffn_out = arch_targets(ctx, "ffn_out")
    adapters = []
    for block in block_names:
        bmod = get_submodule(model, block)
        ins = [n for n, _ in bmod.named_modules() if n and any(n == t or n.endswith("." + t) for t in ffn_in)]
        if not ins:
            raise ConfigError(f"no FFN module {ffn_in} in block {block}", option="model.targets.ffn_in")
        in_mod = bmod.get_submodule(ins[0])
        # same module in and out (GPT-2/Llama `mlp`): one hook; else capture input, add at output
        if in_mod.__class__.__name__.endswith("MLP") or "mlp" == ins[0].rsplit(".", 1)[-1]:
            ad = Bottleneck(_hidden_of(ctx), bottleneck, activation, scale).to(_device_of(in_mod))
            in_mod.pb_adapter = ad
            in_mod.register_forward_hook(_parallel_hook)
        else:
            outs = [n for n, _ in bmod.named_modules()
                    if n and any(n == t or n.endswith("." + t) for t in ffn_out) and "attention" not in n]
            if not outs:
                raise ConfigError(f"no FFN output module {ffn_out} in block {block}", option="model.targets.ffn_out")
            out_mod = bmod.get_submodule(outs[0])
            ad = Bottleneck(_hidden_of(ctx), bottleneck, activation, scale).to(_device_of(out_mod))
            out_mod.pb_adapter = ad
            in_mod.register_forward_pre_hook(functools.partial(_capture_pre_hook, ad))
            out_mod.register_forward_hook(_parallel_split_hook)
        adapters.append(ad)
    return adapters


def _hidden_of(ctx: ApplyContext) -> int:
    return int(ctx.hidden_size)


def _device_of(mod: nn.Module) -> torch.device:
    for p in mod.parameters():
        return p.device
    return torch.device("cpu")


def adapter_modules(model: nn.Module) -> list[Bottleneck]:
    return [m for m in model.modules() if isinstance(m, Bottleneck)]


def reset_calls(model: nn.Module) -> None:
    for m in adapter_modules(model):
        m.calls = 0


def count_calls(model: nn.Module) -> int:
    return sum(m.calls for m in adapter_modules(model))
