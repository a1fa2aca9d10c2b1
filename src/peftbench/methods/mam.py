"""Mix-and-Match (MAM) adapter — He et al. 2022, "Towards a Unified View of Parameter-Efficient
Transfer Learning", arXiv:2110.04366.

Update rule: prefix tuning on attention (learned key/value prefixes P_k^l, P_v^l at every layer,
peft PrefixTuningConfig) + a *parallel* adapter around each FFN, scaled:
    FFN'(x) = FFN(x) + s · W_up ReLU(W_down x)      (W_up zero-initialised)
The model is frozen; prefixes, adapters and the task head train. The parallel adapters are our own
(forward hooks on the peft-wrapped model's FFNs); the trainable state (both parts) is saved with
the default ``Method.save`` and reloaded by re-applying to a fresh base.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods import _adapter_layers as L
from peftbench.methods._prompt_base import check_prefix_support
from peftbench.methods.base import ApplyContext, Method, require_positive
from peftbench.methods.registry import register_method


def apply_prefix(model: nn.Module, ctx: ApplyContext, num_virtual_tokens: int, projection: bool,
                 encoder_hidden_size: int = 512) -> nn.Module:
    """peft prefix tuning (the model comes back frozen and wrapped in a PeftModel)."""
    from peft import PrefixTuningConfig, get_peft_model

    cfg = PrefixTuningConfig(task_type=ctx.peft_task_type, num_virtual_tokens=num_virtual_tokens,
                             prefix_projection=projection, encoder_hidden_size=encoder_hidden_size)
    if ctx.task == "classification" and ctx.head_modules:
        cfg.modules_to_save = list(ctx.head_modules)
    return get_peft_model(model, cfg)


def check_prefix_len(ctx: ApplyContext, n: int) -> None:
    require_positive(num_virtual_tokens=n)
    if ctx.max_positions and n >= ctx.max_positions:
        raise ConfigError(f"num_virtual_tokens={n} leaves no room for input tokens: the model has "
                          f"{ctx.max_positions} positions", option="method.num_virtual_tokens")


@register_method("mam")
@dataclass
class MAM(Method):
    family = "hybrid"
    paper = "https://arxiv.org/abs/2110.04366"
    summary = "prefix tuning on attention + scaled parallel adapter on each FFN (+ head)"
    supports_grad_checkpointing = False  # prefix part (see prompt methods)

    num_virtual_tokens: int = 30  # prefix length l
    prefix_projection: bool = False  # reparameterisation MLP for the prefix
    bottleneck: int = 64  # parallel adapter width b (the paper: 512 for large models)
    scale: float = 4.0  # s: the parallel adapter's output scale
    activation: str = "relu"

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)
        require_positive(bottleneck=self.bottleneck, scale=self.scale)
        check_prefix_len(ctx, self.num_virtual_tokens)
        check_prefix_support(ctx, self.name)
        L.check_match(ctx, L.arch_targets(ctx, "ffn_in"), option="model.targets.ffn_in")

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        model = apply_prefix(model, ctx, self.num_virtual_tokens, self.prefix_projection)
        hf = model.get_base_model()
        path, blocks = L.find_blocks(hf, ctx.layers_path)
        L.insert_parallel(hf, ctx, [f"{path}.{i}" for i in range(len(blocks))], self.bottleneck, self.scale,
                          self.activation)
        return model
