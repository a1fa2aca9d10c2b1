"""Studies that are not a text fine-tuning run (e.g. the toy-MLP LoRA study) plug in by a dotted
callable in ``cfg.study`` that returns the result sections; train() adds ids, env and writes."""

from __future__ import annotations

import importlib
from typing import Any

from omegaconf import DictConfig

from peftbench.errors import ConfigError


def run_study(cfg: DictConfig) -> dict[str, Any]:
    mod_name, _, fn_name = str(cfg.study).rpartition(".")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"study '{cfg.study}' cannot be imported: {e}", option="study") from e
    out = fn(cfg)
    allowed = {"metrics", "params", "model", "method", "dataset", "memory", "speed", "timings", "forgetting", "extra"}
    return {k: v for k, v in out.items() if k in allowed}
