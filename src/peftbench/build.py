"""Everything a run needs, resolved and checked before any weight is loaded or text tokenized."""

from __future__ import annotations

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
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise ConfigError(f"must be > 0, got {v!r}", option=key)


def check_numbers(cfg: DictConfig) -> None:
    for key in ("optim.lr", "data.batch_size", "data.eval_batch_size", "dataset.max_length"):
        _positive(cfg, key)
    for key in ("trainer.max_steps", "trainer.max_epochs"):
        _positive(cfg, key, allow_minus_one=True)
    for key in ("trainer.devices",):
        v = OmegaConf.select(cfg, key)
        if isinstance(v, int) and v <= 0:
            raise ConfigError(f"must be > 0 or 'auto', got {v!r}", option=key)


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
    max_len = cfg.dataset.get("max_length")
    if max_len and ctx.max_positions and max_len > ctx.max_positions:
        raise ConfigError(f"{max_len} exceeds the model's {ctx.max_positions} positions", option="dataset.max_length")
    examples = {}
    if load_data:
        from peftbench.data.examples import load_examples

        examples = load_examples(OmegaConf.to_container(cfg.dataset, resolve=True), cfg.paths.get("data_dir"))
    return Plan(cfg, spec, method, ctx, task, num_labels, examples)
