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

import contextlib
import logging
import os
import resource
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterator

from omegaconf import DictConfig, OmegaConf

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
    gradient_checkpointing: bool = False
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
    else:
        n = int(dev)
    return max(1, n) * nodes


def _int_option(cfg: DictConfig, key: str) -> int | None:
    v = OmegaConf.select(cfg, key, default=None)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConfigError(f"must be a positive integer, got {v!r}", option=key)
    return v


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
    gc = bool(OmegaConf.select(cfg, "model.gradient_checkpointing", default=False))
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


# ---- OOM --------------------------------------------------------------------------------------
def is_oom(e: BaseException | None) -> bool:
    """CUDA OOM, host MemoryError, or the CPU allocator failing (e.g. under a memory cap)."""
    seen = 0
    while e is not None and seen < 8:
        msg = str(e).lower()
        if (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "out of memory" in msg
                or "can't allocate memory" in msg or "cannot allocate memory" in msg):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


class OutOfMemory(MemoryError):
    """A fit ran out of memory at every micro-batch tried; carries what it reached."""

    def __init__(self, message: str, budget: Budget, reached: dict[str, Any]):
        super().__init__(message)
        self.budget, self.reached = budget, reached


def memory_limit_mb() -> float | None:
    v = os.environ.get(MEMORY_LIMIT_ENV)
    if not v:
        return None
    try:
        mb = float(v)
    except ValueError:
        raise ConfigError(f"{MEMORY_LIMIT_ENV}={v!r} is not a number of MiB", option=MEMORY_LIMIT_ENV) from None
    if mb <= 0:
        raise ConfigError(f"{MEMORY_LIMIT_ENV} must be > 0", option=MEMORY_LIMIT_ENV)
    return mb


def _proc_status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def memory_reached() -> dict[str, Any]:
    """Peaks of this process (resident, virtual, CUDA) — what an OOM run got to."""
    from peftbench.measure.memory import peak_rss_mb

    out: dict[str, Any] = {"peak_rss_mb": _proc_status_mb("VmHWM") or peak_rss_mb(),
                           "peak_vm_mb": _proc_status_mb("VmPeak")}
    import torch

    if torch.cuda.is_available():
        out["peak_gpu_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["peak_gpu_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    return out


@contextlib.contextmanager
def memory_cap(limit_mb: float | None) -> Iterator[None]:
    """Cap this process's memory at ``limit_mb`` (resident) while the block runs.

    Enforced as an address-space limit of (current virtual size + limit − current resident size),
    so growth beyond the cap fails in the allocator like a full device would; restored afterwards.
    """
    if not limit_mb:
        yield
        return
    vm, rss = _proc_status_mb("VmSize"), _proc_status_mb("VmRSS")
    if vm is None or rss is None:
        raise ConfigError(f"{MEMORY_LIMIT_ENV} needs Linux /proc", option=MEMORY_LIMIT_ENV)
    if rss >= limit_mb:
        raise MemoryError(f"out of memory: {rss:.0f} MiB resident before training, over the "
                          f"{MEMORY_LIMIT_ENV}={limit_mb:.0f} cap")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = int((vm + limit_mb - rss) * 2**20)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def run_with_budget(budget: Budget, attempt: Callable[[Budget], dict[str, Any]]) -> dict[str, Any]:
    """Run ``attempt(budget)`` (one whole run: load, apply, fit, evaluate); on OOM with ``auto``,
    run it again with half the micro-batch. Each attempt starts from scratch with the same seed,
    so it starts from the same initial weights. Gives up with a record part of status ``oom``
    carrying the memory reached, so the sweep goes on and the report shows the cell as OOM."""
    attempts: list[dict[str, Any]] = []
    while True:
        try:
            part = attempt(budget)
            part.setdefault("budget", {}).update(attempts=list(attempts))
            return part
        except Exception as e:  # noqa: BLE001 - only OOMs are handled; the rest re-raised
            if not is_oom(e):
                raise
            reached = memory_reached()
            attempts.append({"micro_batch_size": budget.micro_batch_size,
                             "accumulate_grad_batches": budget.accumulate_grad_batches, **reached})
            nxt = budget.halved() if budget.auto else None
            if nxt is None:
                why = "at micro-batch 1" if budget.auto else "(data.micro_batch_size: auto would retry smaller)"
                error = f"out of memory {why}: {type(e).__name__}: {str(e)[:300]}"
                log.error("%s", error)
                return {"status": "oom", "error": error,
                        "memory": {**reached, "memory_limit_mb": budget.memory_limit_mb},
                        "budget": replace(budget, attempts=tuple(attempts)).record(None)}
        # Outside the except block: the failed attempt's frames (and their tensors) are released.
        log.warning("OOM at micro-batch %d; retrying with %d x %d accumulation", budget.micro_batch_size,
                    nxt.micro_batch_size, nxt.accumulate_grad_batches)
        import gc

        gc.collect()
        budget = nxt


# ---- gradient checkpointing -------------------------------------------------------------------
def check_gradient_checkpointing(cfg: DictConfig) -> bool:
    """Refuse gradient checkpointing for a method that cannot use it, before any weight loads."""
    if not OmegaConf.select(cfg, "model.gradient_checkpointing", default=False):
        return False
    from peftbench.methods.registry import get_method

    method = get_method(cfg.method.name)
    if not getattr(method, "supports_grad_checkpointing", True):
        raise ConfigError(f"method '{cfg.method.name}' cannot run with gradient checkpointing (its virtual "
                          "tokens / key-value prefixes go through the cache that checkpointed layers drop); "
                          "set model.gradient_checkpointing=false", option="model.gradient_checkpointing")
    return True


def enable_gradient_checkpointing(model) -> None:
    """Recompute activations in backward (non-reentrant: works with frozen inputs and DDP)."""
    fn = getattr(model, "gradient_checkpointing_enable", None)
    base = getattr(model, "get_base_model", lambda: model)()
    if fn is None or not getattr(base, "supports_gradient_checkpointing", False):
        raise ConfigError(f"{type(base).__name__} does not support gradient checkpointing",
                          option="model.gradient_checkpointing")
    fn(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "enable_input_require_grads"):  # peft: frozen embeddings feed the first checkpoint
        model.enable_input_require_grads()
    cfg = getattr(base, "config", None)
    if cfg is not None:
        cfg.use_cache = False  # a KV cache is useless in training and conflicts with recomputation
