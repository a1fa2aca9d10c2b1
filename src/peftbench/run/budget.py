"""Running under a planned budget (config/budget.py): the OOM retry, the memory cap, gradient
checkpointing switched on in the model."""

from __future__ import annotations

import contextlib
import logging
import resource
from dataclasses import replace
from typing import Any, Callable, Iterator

from peftbench.config.budget import MEMORY_LIMIT_ENV, Budget
from peftbench.errors import ConfigError

log = logging.getLogger("peftbench")


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
