"""Seed study 004: LoRA on a toy MLP (sphere -> Gaussian covariate shift).

A 16-32-32-1 ReLU MLP is trained on points uniform on the unit sphere in R^16 (label: mean of the
coordinates > 0), then adapted with peft LoRA (r=2, alpha=1) on its second layer (``fc2``) to
standard-normal inputs (same labelling rule). Gaussian inputs have norm ~4 instead of 1, so any
part of the base model that depends on the bias terms (which do not scale with the input) fails to
extrapolate. Entry point: :func:`run` (``study: peftbench.studies.toy_lora.run``).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import torch
from torch import nn

LAYER = "fc2"  # the adapted layer (32 -> 32)


class ToyMLP(nn.Module):
    def __init__(self, d_in: int = 16, hidden: int = 32) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x))))).squeeze(-1)


def sphere(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, d, generator=g)
    return x / x.norm(dim=1, keepdim=True)


def gaussian(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(n, d, generator=g)


def label(x: torch.Tensor) -> torch.Tensor:
    return (x.mean(dim=1) > 0).float()


def _train(model: nn.Module, x: torch.Tensor, epochs: int, lr: float, batch_size: int,
           g: torch.Generator) -> float:
    y = label(x)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    total, count = 0.0, 0
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        total, count = 0.0, 0
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
    return total / max(count, 1)  # mean loss of the last epoch


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor) -> float:
    model.eval()
    return ((model(x) > 0).float() == label(x)).float().mean().item()


def _get(cfg: Any, key: str, default: Any) -> Any:
    try:
        val = cfg.get(key, default)
    except AttributeError:
        val = getattr(cfg, key, default)
    return default if val is None else val


def run(cfg: Any) -> dict[str, Any]:
    import peft

    seed = int(_get(cfg, "seed", 0))
    t = _get(cfg, "toy", {})
    d_in, hidden = int(_get(t, "d_in", 16)), int(_get(t, "hidden", 32))
    r, alpha = int(_get(t, "lora_r", 2)), float(_get(t, "lora_alpha", 1))
    train_bias = bool(_get(t, "train_bias", True))
    b_lo, b_hi = (float(v) for v in _get(t, "fc1_bias_init", [-0.5, 0.0]))
    n_eval = int(_get(t, "n_eval", 10000))
    threads = int(_get(t, "num_threads", 1))
    if threads > 0:
        torch.set_num_threads(threads)

    t0 = time.time()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)

    # 1) base model on the unit sphere
    model = ToyMLP(d_in, hidden)
    with torch.no_grad():  # first-layer biases drawn below zero: units start as cap detectors
        model.fc1.bias.uniform_(b_lo, b_hi, generator=g)
    x_base = sphere(int(_get(t, "n_train", 1000)), d_in, g)
    base_loss = _train(model, x_base, int(_get(t, "epochs", 60)), float(_get(t, "lr", 1e-2)),
                       int(_get(t, "batch_size", 32)), g)
    u_eval, g_eval = sphere(n_eval, d_in, g), gaussian(n_eval, d_in, g)
    u_before, g_before = accuracy(model, u_eval), accuracy(model, g_eval)
    base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    base_total = sum(p.numel() for p in model.parameters())

    # 2) LoRA on fc2, trained on Gaussian inputs
    lcfg = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=[LAYER], lora_dropout=0.0,
                           bias="none")
    pmodel = peft.get_peft_model(model, lcfg)
    base_layer = pmodel.base_model.model.fc2.base_layer
    if train_bias:  # the write-up counts the layer bias among the "LoRA layer parameters"
        base_layer.bias.requires_grad_(True)
    trainable = sum(p.numel() for p in pmodel.parameters() if p.requires_grad)
    added = sum(p.numel() for n, p in pmodel.named_parameters() if "lora_" in n)
    x_adapt = gaussian(int(_get(t, "n_adapt", 10000)), d_in, g)
    adapt_loss = _train(pmodel, x_adapt, int(_get(t, "adapt_epochs", 20)),
                        float(_get(t, "adapt_lr", 1e-2)), int(_get(t, "adapt_batch_size", 128)), g)
    g_after, u_after = accuracy(pmodel, g_eval), accuracy(pmodel, u_eval)

    # 3) store the adapter (+ the fc2 bias when trained, via modules_to_save-free state file)
    out_dir = None
    paths = _get(cfg, "paths", None)
    if paths is not None:
        out_dir = _get(paths, "output_dir", None)
    tmp = None
    if not out_dir:
        tmp = tempfile.TemporaryDirectory()
        out_dir = tmp.name
    adapter_dir = os.path.join(str(out_dir), "adapter")
    pmodel.save_pretrained(adapter_dir)
    stored = 0
    for root, _, files in os.walk(adapter_dir):
        stored += sum(os.path.getsize(os.path.join(root, f)) for f in files
                      if f.endswith(".safetensors"))
    if train_bias:  # peft's adapter file does not hold the base bias; store it beside it
        from safetensors.torch import save_file
        bias_file = os.path.join(adapter_dir, "fc2_bias.safetensors")
        save_file({"fc2.bias": base_layer.bias.detach().clone()}, bias_file)
        stored += os.path.getsize(bias_file)

    # 4) typed counts on the merged model
    with torch.no_grad():
        lora_layer = pmodel.base_model.model.fc2
        delta = lora_layer.get_delta_weight("default")
        delta_rank = int(torch.linalg.matrix_rank(delta).item())
    merged = pmodel.merge_and_unload()
    merged_state = merged.state_dict()
    changed = sum(int((merged_state[k] != v).sum().item()) for k, v in base_state.items())
    if tmp is not None:
        tmp.cleanup()

    metrics = {
        "toy/uniform_acc_before": u_before,
        "toy/gaussian_acc_before": g_before,
        "toy/gaussian_acc_after": g_after,
        "toy/uniform_acc_after": u_after,
        "toy/gaussian_gain": g_after - g_before,
        "toy/base_train_loss": base_loss,
        "toy/adapt_train_loss": adapt_loss,
        "toy/wall_s": time.time() - t0,
    }
    return {
        "metrics": {k: float(v) for k, v in metrics.items()},
        "params": {"total": base_total + added, "trainable": trainable, "added": added,
                   "changed": changed, "stored_bytes": stored, "delta_rank": {LAYER: delta_rank}},
        "model": {"family": "toy_mlp", "size": f"{d_in}-{hidden}-{hidden}-1", "checkpoint": None,
                  "total": base_total},
        "method": {"name": "lora", "family": "reparameterized",
                   "hparams": {"r": r, "lora_alpha": alpha, "target_modules": [LAYER],
                               "train_bias": train_bias,
                               "adapt_epochs": int(_get(t, "adapt_epochs", 20)),
                               "adapt_lr": float(_get(t, "adapt_lr", 1e-2))}},
        "dataset": {"name": "sphere_to_gaussian", "task": "toy_classification"},
    }
