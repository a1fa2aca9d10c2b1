"""Memory: measured peaks (CPU RSS, CUDA allocator) per stage, and an analytic estimate.

Measured peaks answer "what did this run need"; the analytic figure answers "what must any
implementation hold" (weights + gradients + optimizer state), so the two can be compared.
"""

from __future__ import annotations

import resource
import sys
from typing import Any

import lightning as L
import torch
from torch import nn

from peftbench.measure.params import is_quantized_4bit, numel

__all__ = ["MemoryCallback", "analytic_memory", "current_rss_mb", "peak_rss_mb"]

_MB = 2**20

# Adam-style optimizers keep two fp32-like moments per trainable scalar.
_OPTIMIZER_STATES = {
    "adam": 2, "adamw": 2, "adamax": 2, "nadam": 2, "radam": 2, "lamb": 2,
    "sgd": 0, "sgd_momentum": 1, "momentum": 1, "lion": 1, "rmsprop": 1, "adagrad": 1,
}


def peak_rss_mb() -> float:
    """Peak resident set size of this process over its lifetime, in MiB."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return maxrss / _MB if sys.platform == "darwin" else maxrss / 1024


def current_rss_mb() -> float:
    """Resident set size now, in MiB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / _MB
    except ImportError:  # pragma: no cover - psutil is a dependency, /proc a fallback
        with open("/proc/self/statm") as f:
            import os

            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / _MB


def _reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark (Linux ≥ 4.0), so a stage gets its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_hwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class MemoryCallback(L.Callback):
    """Peak CPU RSS and CUDA allocated/reserved memory per stage (fit / validate / test).

    Validation inside ``fit`` belongs to ``fit``: peaks are reset only when a top-level stage
    starts, so the fit peak includes its validation loops. Under DDP each stage's figures are
    reduced with max over ranks (the rank that ran out first is what matters).
    """

    _STAGES = ("fit", "validate", "test", "predict")

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float | None]] = {}
        self.world_size = 1
        self._cuda_device: torch.device | None = None
        self._rss_reset = False

    # -- stage bookkeeping ------------------------------------------------------------------
    def _start(self, trainer: L.Trainer) -> None:
        device = trainer.strategy.root_device
        self._cuda_device = device if device.type == "cuda" else None
        if self._cuda_device is not None:
            torch.cuda.synchronize(self._cuda_device)
            torch.cuda.reset_peak_memory_stats(self._cuda_device)
        self._rss_reset = _reset_rss_peak()

    def _end(self, trainer: L.Trainer, stage: str) -> None:
        hwm = _rss_hwm_mb() if self._rss_reset else None
        rss = hwm if hwm is not None else peak_rss_mb()
        alloc = reserved = None
        if self._cuda_device is not None:
            torch.cuda.synchronize(self._cuda_device)
            alloc = torch.cuda.max_memory_allocated(self._cuda_device) / _MB
            reserved = torch.cuda.max_memory_reserved(self._cuda_device) / _MB
        self.world_size = trainer.world_size
        if trainer.world_size > 1:
            vals = torch.tensor(
                [rss, alloc or 0.0, reserved or 0.0], dtype=torch.float64, device=trainer.strategy.root_device
            )
            vals = trainer.strategy.reduce(vals, reduce_op="max")
            rss = float(vals[0])
            if alloc is not None:
                alloc, reserved = float(vals[1]), float(vals[2])
        self.stages[stage] = {
            "peak_rss_mb": rss,
            "peak_gpu_allocated_mb": alloc,
            "peak_gpu_reserved_mb": reserved,
        }

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end(trainer, "fit")

    def _top_level(self, trainer: L.Trainer, stage: str) -> bool:
        fn = getattr(trainer.state, "fn", None)
        return str(getattr(fn, "value", fn)) == stage

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._top_level(trainer, "validate"):
            self._start(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._top_level(trainer, "validate"):
            self._end(trainer, "validate")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end(trainer, "test")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end(trainer, "predict")

    # -- results ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Flat dict: overall peaks (max over stages) then ``<stage>_<key>`` per stage run.

        GPU keys are None when the run did not use CUDA, so the schema has the same keys on CPU.
        """
        keys = ("peak_rss_mb", "peak_gpu_allocated_mb", "peak_gpu_reserved_mb")
        out: dict[str, Any] = {}
        for key in keys:
            vals = [s[key] for s in self.stages.values() if s.get(key) is not None]
            out[key] = max(vals) if vals else None
        if out["peak_rss_mb"] is None:
            out["peak_rss_mb"] = peak_rss_mb()
        for stage in self._STAGES:
            for key, val in self.stages.get(stage, {}).items():
                out[f"{stage}_{key}"] = val
        out["memory_world_size"] = self.world_size
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"stages": self.stages, "world_size": self.world_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stages = dict(state_dict.get("stages", {}))
        self.world_size = int(state_dict.get("world_size", 1))


def analytic_memory(
    model: nn.Module, optimizer_name: str = "adamw", bytes_per_param: int | None = 4
) -> dict[str, float]:
    """Lower bound of training memory in MiB: weights + gradients + optimizer state.

    ``bytes_per_param`` is the assumed size of every unquantized scalar (None: each tensor's own
    dtype); 4-bit weights always count their packed storage, since that is what they occupy.
    Gradients and optimizer state exist for trainable scalars only — the saving PEFT promises.
    Activations are not included: they depend on batch and sequence length.
    """
    name = optimizer_name.lower()
    if name not in _OPTIMIZER_STATES:
        raise ValueError(
            f"analytic_memory: unknown optimizer_name {optimizer_name!r}; "
            f"known: {', '.join(sorted(_OPTIMIZER_STATES))}"
        )
    weights = grads = 0.0
    for p in model.parameters():
        if is_quantized_4bit(p):
            weights += p.numel() * p.element_size()
            continue
        size = p.element_size() if bytes_per_param is None else bytes_per_param
        weights += numel(p) * size
        if p.requires_grad:
            grads += numel(p) * size
    optim = _OPTIMIZER_STATES[name] * grads
    return {
        "weights_mb": weights / _MB,
        "gradients_mb": grads / _MB,
        "optimizer_state_mb": optim / _MB,
        "total_mb": (weights + grads + optim) / _MB,
    }
