"""Everything a run needs, resolved and checked before any weight is loaded or text tokenized."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench.errors import ConfigError
from peftbench.methods.base import ApplyContext, Method
from peftbench.methods.registry import get_method
from peftbench.models import ModelSpec, build_context, resolve_spec


@dataclass
class Plan:
    cfg: DictConfig
    spec: ModelSpec
    method: Method
    ctx: ApplyContext
    task: str
    num_labels: int
    examples: dict[str, Any] = field(default_factory=dict)


def _positive(cfg: DictConfig, key: str, allow_minus_one: bool = False) -> None:
    v = OmegaConf.select(cfg, key)
    if v is None or (allow_minus_one and v == -1):
        return
    # NaN compares False with everything, so `v <= 0` alone lets optim.lr=nan through to the optimizer.
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ConfigError(f"must be a finite number > 0, got {v!r}", option=key)


def _in_range(cfg: DictConfig, key: str, lo: float, hi: float, hi_open: bool = False) -> None:
    v = OmegaConf.select(cfg, key)
    if v is None:
        return
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v \
        and (v < hi if hi_open else v <= hi)
    if not ok:
        raise ConfigError(f"must be a number in [{lo}, {hi}{')' if hi_open else ']'}, got {v!r}", option=key)


def check_numbers(cfg: DictConfig) -> None:
    for key in ("optim.lr", "method.optim.lr", "data.batch_size", "data.eval_batch_size", "dataset.max_length"):
        _positive(cfg, key)
    for key in ("trainer.max_steps", "trainer.max_epochs"):
        _positive(cfg, key, allow_minus_one=True)
    for key in ("optim.eps", "dataset.block_size", "dataset.train_limit", "dataset.val_limit", "dataset.test_limit"):
        _positive(cfg, key)
    _in_range(cfg, "optim.weight_decay", 0.0, float("inf"))
    _in_range(cfg, "optim.warmup_ratio", 0.0, 1.0, hi_open=True)
    _in_range(cfg, "dataset.val_fraction", 0.0, 1.0, hi_open=True)
    for key in ("trainer.devices",):
        v = OmegaConf.select(cfg, key)
        if isinstance(v, int) and v <= 0:
            raise ConfigError(f"must be > 0 or 'auto', got {v!r}", option=key)


def check_lengths(cfg: DictConfig, method: Method, ctx: ApplyContext) -> None:
    """Sequence lengths against the model's positions: past them, the position-embedding lookup
    fails with an index error deep inside transformers. Virtual tokens (prompt/prefix methods)
    take positions too, so they count against the same budget."""
    if not ctx.max_positions:
        return
    seq_key = "dataset.block_size" if cfg.dataset.get("format") == "text" and cfg.dataset.get("block_size") else "dataset.max_length"
    seq = OmegaConf.select(cfg, seq_key)
    for key in ("dataset.max_length", seq_key):
        v = OmegaConf.select(cfg, key)
        if v and v > ctx.max_positions:
            raise ConfigError(f"{v} exceeds the model's {ctx.max_positions} positions", option=key)
    virtual = getattr(method, "num_virtual_tokens", None)
    if isinstance(virtual, int) and not isinstance(virtual, bool) and seq and virtual + seq > ctx.max_positions:
        raise ConfigError(
            f"{virtual} virtual tokens + {seq_key.split('.')[-1]} {seq} exceed the model's {ctx.max_positions} "
            f"positions; lower method.num_virtual_tokens or {seq_key}", option="method.num_virtual_tokens")


def make_plan(cfg: DictConfig, load_data: bool = True) -> Plan:
    """Compose-time checks in the order a user would fix them: numbers, model, method, data."""
    check_numbers(cfg)
    task = cfg.dataset.task
    num_labels = len(cfg.dataset.get("label_names") or []) or 2
    spec = resolve_spec(cfg.model, cfg.model_size.name)
    method_cls = get_method(cfg.method.name)
    method = method_cls.from_config(OmegaConf.to_container(cfg.method, resolve=True))
    ctx = build_context(spec, task, num_labels)
    method.check(ctx)
    check_lengths(cfg, method, ctx)
    examples = {}
    if load_data:
        from peftbench.data.examples import load_examples

        examples = load_examples(OmegaConf.to_container(cfg.dataset, resolve=True), cfg.paths.get("data_dir"))
    return Plan(cfg, spec, method, ctx, task, num_labels, examples)
