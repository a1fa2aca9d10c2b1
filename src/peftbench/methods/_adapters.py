"""Sequential bottleneck adapters — our own implementation (peft ships none); the shared base of
``houlsby``, ``pfeiffer`` and ``adapter_drop``, which differ in where the adapters sit.

    h ← h + W_up σ(W_down h)   after each insertion point (``positions``) of every chosen block;
W_down ∈ R^{b×d}, W_up ∈ R^{d×b} (zero-initialised: the adapted model starts equal to the base).
Adapters are inserted with forward hooks (see ``_adapter_layers``) so base parameter names do not
change; the trainable state (adapters + norms + head) is saved with the default ``Method.save`` and
loaded by re-applying to a fresh base and copying it in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods import _adapter_layers as L
from peftbench.methods.base import (
    ApplyContext,
    Method,
    freeze,
    matching_modules,
    require_positive,
    unfreeze_modules,
)


@dataclass
class BottleneckAdapters(Method):
    family = "additive"
    positions: ClassVar[tuple[str, ...]] = ("ffn_out",)
    train_norms: ClassVar[bool] = False

    bottleneck: int = 16  # b: width of the down-projection
    activation: str = "relu"  # relu | gelu | tanh | silu
    scale: float = 1.0  # multiplier on the adapter output
    train_head: bool = True  # classification: the task head trains too
    layers: Any = None  # null → every block; else a list of block indices that get adapters

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        require_positive(bottleneck=self.bottleneck, scale=self.scale)
        if self.activation not in ("relu", "gelu", "tanh", "silu"):
            raise ConfigError(f"unknown activation {self.activation!r}; use relu | gelu | tanh | silu",
                              option="method.activation")
        if self.layers is not None:
            bad = [i for i in self.layers if not 0 <= int(i) < ctx.num_layers]
            if bad:
                raise ConfigError(f"block indices {bad} outside 0..{ctx.num_layers - 1}", option="method.layers")
        for pos in self.positions:
            L.check_match(ctx, L.arch_targets(ctx, pos), option=f"model.targets.{pos}")

    # which block indices get adapters (AdapterDrop overrides)
    def block_indices(self, ctx: ApplyContext) -> list[int]:
        return list(range(ctx.num_layers)) if self.layers is None else sorted(int(i) for i in self.layers)

    def insertion_points(self, model: nn.Module, ctx: ApplyContext) -> dict[str, list[tuple[int, str]]]:
        """position → [(block index, qualified module name)]."""
        blocks_path, _ = L.find_blocks(model, ctx.layers_path)
        attn = set(matching_modules(model, L.arch_targets(ctx, "attn_out")))
        keep = set(self.block_indices(ctx))
        out: dict[str, list[tuple[int, str]]] = {}
        for pos in self.positions:
            names = matching_modules(model, L.arch_targets(ctx, pos))
            if pos == "ffn_out":  # BERT's "output.dense" also matches "attention.output.dense"
                names = [n for n in names if n not in attn]
            pts = []
            for n in names:
                i = L.block_index(n, blocks_path)
                if i is not None and i in keep:
                    pts.append((i, n))
            if not pts and keep:
                raise ConfigError(f"no {pos} module found in the blocks at {blocks_path}", option=f"model.targets.{pos}")
            out[pos] = pts
        return out

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        freeze(model)
        for pos, pts in self.insertion_points(model, ctx).items():
            ads = L.insert_sequential(model, [n for _, n in pts], self.bottleneck, self.activation, self.scale)
            for (i, _), ad in zip(pts, ads):
                ad.layer_idx = i
                ad.position = pos
        if self.train_norms:
            blocks_path, blocks = L.find_blocks(model, ctx.layers_path)
            for i in self.block_indices(ctx):
                for mod in blocks[i].modules():
                    if "norm" in type(mod).__name__.lower():
                        for p in mod.parameters():
                            p.requires_grad_(True)
        if self.train_head and ctx.task == "classification":
            unfreeze_modules(model, ctx.head_modules)
        return model
