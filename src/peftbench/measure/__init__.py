"""Measurements: parameter counts by type, memory peaks, throughput (no training code here).

Names are re-exported lazily, so ``from peftbench.measure.params import count_params`` (CLI,
report helpers) does not pay for importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MemoryCallback": "memory",
    "analytic_memory": "memory",
    "current_rss_mb": "memory",
    "peak_rss_mb": "memory",
    "base_param_names": "params",
    "changed_params": "params",
    "count_params": "params",
    "delta_rank": "params",
    "is_quantized_4bit": "params",
    "merged_delta_rank": "params",
    "trainable_names": "params",
    "normalize_name": "params",
    "numel": "params",
    "param_table": "params",
    "snapshot": "params",
    "stored_bytes": "params",
    "ThroughputCallback": "throughput",
    "inference_latency": "throughput",
    "inference_overhead": "throughput",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
