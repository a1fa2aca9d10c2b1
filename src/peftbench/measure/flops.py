"""Training FLOPs per token and model FLOPs utilisation (MFU), counted as litgpt and nanoGPT do.

Per token, a matmul with N weights costs 2N FLOPs forward and 4N backward (2N for the gradient
of its input, 2N for the gradient of its weights): the familiar 6N. A frozen weight needs no
weight gradient, so a PEFT step costs ``2N (forward) + 2N (input gradients) + 2·N_trainable
(weight gradients)`` — litgpt's ``estimate_flops`` splits trainable and frozen parameters the same
way. Attention scores and values add ``2·2·L·d·T`` forward per token (QKᵀ and AV over a context
of T), 3× that with backward: nanoGPT's ``12·L·H·Q·T``; causal masking is not discounted (as there).
N counts the weights that take part in a matmul: an embedding *lookup* costs nothing, but a tied
output head (``lm_head`` sharing the embedding) is a matmul and counts once.

MFU = achieved FLOP/s ÷ the device's dense bf16 peak (the spec sheets' numbers without sparsity).
No torch at module level: the GPU-hours estimator uses these numbers without loading a model.
"""

from __future__ import annotations

from typing import Any

# Dense bf16 tensor-core peak FLOP/s (no 2:4 sparsity), from NVIDIA's data sheets. Matched by
# substring of torch.cuda.get_device_name(), most specific first.
PEAK_BF16: tuple[tuple[str, float], ...] = (
    ("H200", 989.4e12),       # H200 SXM (same tensor cores as H100 SXM, more HBM)
    ("H100 PCIE", 756.0e12),  # H100 PCIe
    ("H100 NVL", 835.0e12),
    ("H100", 989.4e12),       # H100 SXM5 (names: "NVIDIA H100 80GB HBM3")
    ("A100", 312.0e12),       # A100 SXM and PCIe
)


def peak_bf16_flops(device_name: str | None) -> float | None:
    """The dense bf16 peak of a device by its name; None for a device not in the table."""
    if not device_name:
        return None
    name = device_name.upper()
    for key, peak in PEAK_BF16:
        if key in name:
            return peak
    return None


def flops_per_token(n_params: int, n_trainable: int, n_layers: int = 0, d_model: int = 0, context: int = 0,
                    training: bool = True) -> float:
    """FLOPs per token of one training step (forward + backward) or, with ``training=False``, a forward.

    ``n_params``: matmul weights (frozen + trainable); ``n_trainable``: those the optimizer updates;
    ``n_layers``, ``d_model``, ``context``: the attention term (0 leaves it out)."""
    if n_params < 0 or n_trainable < 0 or n_trainable > n_params:
        raise ValueError(f"need 0 <= n_trainable <= n_params, got {n_trainable}, {n_params}")
    attn_fwd = 4.0 * n_layers * d_model * context
    if not training:
        return 2.0 * n_params + attn_fwd
    return 4.0 * n_params + 2.0 * n_trainable + 3.0 * attn_fwd


def mfu(tokens_per_s: float | None, per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: ``tokens_per_s · per_token / peak``; None where a figure is missing."""
    if not tokens_per_s or not peak:
        return None
    return tokens_per_s * per_token / peak


def matmul_params(model: Any) -> dict[str, int]:
    """Weights of a model that take part in matmuls: ``{"all": N, "trainable": N_trainable}``.

    Parameters of ``nn.Embedding`` modules are lookups and left out, unless the same tensor is
    also a ``Linear`` weight (a tied output head), which then counts once. 4-bit packed weights
    count as their unpacked shape (``measure.params.numel``)."""
    from torch import nn

    from peftbench.measure.params import numel

    lookups = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    heads = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    total = trainable = 0
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) in seen or (id(p) in lookups and id(p) not in heads):
            continue
        seen.add(id(p))
        n = numel(p)
        total += n
        trainable += n if p.requires_grad else 0
    return {"all": total, "trainable": trainable}
