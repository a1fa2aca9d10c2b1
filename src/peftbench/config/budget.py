"""Fair training budgets: the effective batch is the unit, OOM is a result, precision is checked.

Every method in a sweep must see the same number of examples per update and the same number of
updates, whatever micro-batch fits in memory. So configs set ``data.effective_batch_size`` and
this module derives the per-device micro-batch and the gradient accumulation from it:

    effective_batch_size = micro_batch_size × accumulate_grad_batches × world_size

``data.micro_batch_size: auto`` starts from the largest micro-batch (no accumulation) and, when a
run runs out of memory, runs again from scratch (same seed, so the same initial weights) with the
micro-batch halved and the accumulation doubled, until it fits or the micro-batch is 1 — then the run is recorded ``oom``
with the memory it reached. An explicit micro-batch that runs out of memory is recorded ``oom``
at once (it was asked for, so it is not silently changed).

``PEFTBENCH_MEMORY_LIMIT_MB`` caps the memory a run may use during ``fit`` (a real address-space
limit, ``RLIMIT_AS``; allocations past it fail in the allocator). It models a smaller machine, so
OOM handling is testable on any CPU; it is read from the environment because it describes the
machine, not the experiment (it does not change the run id), and is recorded in ``budget``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench.config.checks import positive, positive_int
from peftbench.errors import ConfigError

log = logging.getLogger("peftbench")

MEMORY_LIMIT_ENV = "PEFTBENCH_MEMORY_LIMIT_MB"
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true")
_ALIASES = {"32": "32-true", 32: "32-true", "16": "16-mixed", 16: "16-mixed", "bf16": "bf16-mixed"}
# What Lightning runs on CPU (checked in tests/test_budget.py): fp16 autocast is CUDA-only there.
CPU_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true")


@dataclass(frozen=True)
class Budget:
    micro_batch_size: int
    accumulate_grad_batches: int
    world_size: int
    effective_batch_size: int
    precision: str
    auto: bool = False  # micro_batch_size: auto → halve on OOM
    memory_limit_mb: float | None = None
    gradient_checkpointing: bool = False  # the pipeline switches it on from here, nowhere else
    attempts: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def halved(self) -> "Budget | None":
        """The next smaller micro-batch that still divides the per-device batch, or None at 1."""
        per_device = self.micro_batch_size * self.accumulate_grad_batches
        micro = _largest_divisor(per_device, self.micro_batch_size // 2)
        if micro < 1 or micro == self.micro_batch_size:
            return None
        return replace(self, micro_batch_size=micro, accumulate_grad_batches=per_device // micro)

    def record(self, optimizer_steps: int | None) -> dict[str, Any]:
        """The results.json ``budget`` block."""
        d = asdict(self)
        d["attempts"] = list(self.attempts)
        d["optimizer_steps"] = optimizer_steps
        d["micro_batch_auto"] = d.pop("auto")
        return d


def _largest_divisor(n: int, at_most: int) -> int:
    for d in range(min(n, at_most), 0, -1):
        if n % d == 0:
            return d
    return 0


def normalize_precision(value: Any) -> str:
    p = _ALIASES.get(value, str(value))
    if p not in PRECISIONS:
        raise ConfigError(f"unsupported precision {value!r}; choose one of {list(PRECISIONS)}", option="trainer.precision")
    return p


def _on_cpu(cfg: DictConfig) -> bool:
    acc = str(cfg.trainer.get("accelerator") or "auto")
    if acc == "cpu":
        return True
    import torch

    return acc == "auto" and not torch.cuda.is_available()


def check_precision(cfg: DictConfig) -> str:
    """Refuse a precision the device cannot run, before any weight is loaded."""
    p = normalize_precision(cfg.trainer.get("precision") or "32-true")
    if _on_cpu(cfg) and p not in CPU_PRECISIONS:
        raise ConfigError(f"precision {p} needs a CUDA GPU (fp16 autocast is not supported on CPU); "
                          f"on CPU use one of {list(CPU_PRECISIONS)}", option="trainer.precision")
    if p.startswith("bf16") and not _on_cpu(cfg):
        import torch

        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"precision {p}: this GPU has no bf16 support; use 16-mixed or 32-true",
                              option="trainer.precision")
    return p


def world_size(cfg: DictConfig) -> int:
    """Processes taking part in one update, as Lightning will launch them (devices × nodes)."""
    name = str(OmegaConf.select(cfg, "strategy.name", default="single") or "single")
    nodes = int(cfg.trainer.get("num_nodes") or 1)
    if name in ("single", "auto"):
        return nodes
    dev = cfg.trainer.get("devices", 1)
    if isinstance(dev, (list, tuple)) or OmegaConf.is_list(dev):
        n = len(dev)
    elif dev in (None, "auto", -1, "-1"):
        import torch

        n = torch.cuda.device_count() if (not _on_cpu(cfg) and torch.cuda.is_available()) else 1
    elif isinstance(dev, str) and "," in dev:  # Lightning's "0,1": those device indices
        n = len([d for d in dev.split(",") if d.strip()])
    else:
        n = int(dev)
    return max(1, n) * nodes


def _int_option(cfg: DictConfig, key: str) -> int | None:
    return positive_int(OmegaConf.select(cfg, key, default=None), key)


def plan_budget(cfg: DictConfig) -> Budget:
    """Derive micro-batch and accumulation from the config; refuse what cannot be made equal."""
    precision = check_precision(cfg)
    world = world_size(cfg)
    raw_micro = OmegaConf.select(cfg, "data.micro_batch_size", default=None)
    auto = raw_micro == "auto"
    micro = None if auto else _int_option(cfg, "data.micro_batch_size")
    effective = _int_option(cfg, "data.effective_batch_size")
    accum_cfg = cfg.trainer.get("accumulate_grad_batches")
    limit = memory_limit_mb()
    gc = bool(OmegaConf.select(cfg, "model.gradient_checkpointing", default=False))  # the one read
    if effective is None:
        if auto:
            raise ConfigError("micro_batch_size: auto needs data.effective_batch_size (the batch it must keep)",
                              option="data.effective_batch_size")
        micro = micro or int(cfg.data.batch_size)
        accum = int(accum_cfg or 1)
        return Budget(micro, accum, world, micro * accum * world, precision, False, limit, gc)
    if accum_cfg not in (None, 1):
        raise ConfigError("accumulation is derived from data.effective_batch_size; leave it at 1 (or unset "
                          "data.effective_batch_size)", option="trainer.accumulate_grad_batches")
    if effective % world:
        raise ConfigError(f"{effective} is not divisible by the world size {world}", option="data.effective_batch_size")
    per_device = effective // world
    if auto:
        micro = per_device
    elif micro is not None:
        if per_device % micro:
            raise ConfigError(f"{micro} does not divide the per-device batch {per_device} "
                              f"(= data.effective_batch_size {effective} / world size {world})",
                              option="data.micro_batch_size")
    else:  # from data.batch_size, a default: take the largest micro-batch up to it that divides
        micro = _largest_divisor(per_device, int(cfg.data.batch_size))
    return Budget(micro, per_device // micro, world, effective, precision, auto, limit, gc)




def memory_limit_mb() -> float | None:
    v = os.environ.get(MEMORY_LIMIT_ENV)
    if not v:
        return None
    try:
        mb = float(v)
    except ValueError:
        raise ConfigError(f"{MEMORY_LIMIT_ENV}={v!r} is not a number of MiB", option=MEMORY_LIMIT_ENV) from None
    return positive(mb, MEMORY_LIMIT_ENV)


def check_gradient_checkpointing(cfg: DictConfig, method: Any = None) -> bool:
    """Refuse gradient checkpointing for a method that cannot use it, before any weight loads
    (``method``: the plan's method, or its class looked up by name)."""
    if not OmegaConf.select(cfg, "model.gradient_checkpointing", default=False):
        return False
    if method is None:
        from peftbench.methods.registry import get_method

        method = get_method(cfg.method.name)
    if not getattr(method, "supports_grad_checkpointing", True):
        raise ConfigError(f"method '{cfg.method.name}' cannot run with gradient checkpointing (its virtual "
                          "tokens / key-value prefixes go through the cache that checkpointed layers drop); "
                          "set model.gradient_checkpointing=false", option="model.gradient_checkpointing")
    return True


