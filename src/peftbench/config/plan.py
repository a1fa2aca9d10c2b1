"""``make_plan(cfg) -> Plan``: everything a run needs, resolved and checked before any weight is
loaded or text tokenized. Every refusal that can happen before loading happens here, once, in the
order a user would fix them: numbers, speed knobs, budget, model, method, lengths, strategy, data."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench.config.budget import Budget, check_gradient_checkpointing, plan_budget
from peftbench.config.checks import devices, in_range, integer, one_of, positive, positive_int
from peftbench.config.forgetting import ForgettingPlan, plan_forgetting
from peftbench.config.knobs import check_knobs
from peftbench.data.sft import run_dataset
from peftbench.errors import ConfigError
from peftbench.methods.base import Method
from peftbench.methods.registry import get_method
from peftbench.models import ModelSpec, build_context, resolve_spec
from peftbench.models.context import ApplyContext
from peftbench.models.vision_text import check_image_size

STRATEGIES = ("single", "auto", "ddp", "fsdp")
OPTIMIZERS = ("adamw", "sgd", "paged_adamw_8bit")  # built by lit/optim.py
SCHEDULES = ("linear", "cosine", "constant")


@dataclass(frozen=True)
class Plan:
    """One run, decided. Frozen: the OOM retry replaces only ``budget`` (``with_budget``)."""

    cfg: DictConfig
    out: Path
    run_id: str
    seed: int
    spec: ModelSpec
    method: Method
    ctx: ApplyContext
    task: str
    num_labels: int
    budget: Budget
    knobs: dict[str, Any]
    optim: dict[str, Any]
    strategy: dict[str, Any]
    dataset: dict[str, Any]
    data_dir: str | None
    cache_dir: Path
    forgetting: ForgettingPlan | None = None
    examples: dict[str, Any] = field(default_factory=dict)

    def with_budget(self, budget: Budget) -> "Plan":
        return replace(self, budget=budget)


POSITIVE_INTS = ("data.batch_size", "data.eval_batch_size", "dataset.max_length", "dataset.block_size",
                 "dataset.train_limit", "dataset.val_limit", "dataset.test_limit", "trainer.accumulate_grad_batches",
                 "measure.finite_check_every", "data.effective_batch_size", "measure.curve_max_examples")


def check_numbers(cfg: DictConfig) -> None:
    """Numbers and names, refused by option before anything loads: an integer option never rounds
    a fraction away (``data.batch_size=1.5`` is refused, not run at 1)."""
    def opt(key: str) -> Any:
        return OmegaConf.select(cfg, key)

    seed = opt("seed")  # ${oc.env:SLURM_ARRAY_TASK_ID} arrives as the string "3"
    integer(int(seed) if isinstance(seed, str) and seed.lstrip("-").isdigit() else seed, "seed")
    for key in ("optim.lr", "method.optim.lr", "optim.eps"):
        positive(opt(key), key)
    for key in POSITIVE_INTS:
        positive_int(opt(key), key)
    for key in ("trainer.max_steps", "trainer.max_epochs"):
        integer(opt(key), key, minimum=1, allow=(-1,))
    for key in ("data.num_workers", "measure.warmup_steps", "measure.curve_points"):
        integer(opt(key), key, minimum=0)
    one_of(opt("optim.name"), "optim.name", OPTIMIZERS)
    one_of(opt("optim.scheduler") or "constant", "optim.scheduler", SCHEDULES)  # null: a constant rate
    in_range(opt("optim.weight_decay"), "optim.weight_decay", 0.0, float("inf"))
    in_range(opt("optim.warmup_ratio"), "optim.warmup_ratio", 0.0, 1.0, hi_open=True)
    in_range(opt("dataset.val_fraction"), "dataset.val_fraction", 0.0, 1.0, hi_open=True)
    in_range(opt("dataset.test_fraction"), "dataset.test_fraction", 0.0, 1.0, hi_open=True)
    if (opt("dataset.val_fraction") or 0) + (opt("dataset.test_fraction") or 0) >= 1:
        raise ConfigError("dataset.val_fraction + dataset.test_fraction leave no training data (their sum must be < 1)",
                          option="dataset.test_fraction")
    if opt("dataset.metric") is not None:
        one_of(opt("dataset.metric"), "dataset.metric", ("acc", "f1", "mcc"))
    devices(opt("trainer.devices"))


CURVE_OWNED = ("trainer.val_check_interval", "trainer.check_val_every_n_epoch")


def check_curve_schedule(cfg: DictConfig) -> None:
    """``measure.curve_points`` > 0 sets when Lightning validates during fit (run/trainer.py
    ``curve_settings``); a validation schedule of the user's own would be silently replaced, so it
    is refused instead of ignored."""
    points = OmegaConf.select(cfg, "measure.curve_points") or 0
    for key in CURVE_OWNED:
        value = OmegaConf.select(cfg, key)
        if points > 0 and value is not None:
            raise ConfigError(
                f"{key}={value} conflicts with measure.curve_points={points}: the convergence curve sets when "
                f"validation runs during training. Set measure.curve_points=0 to use your own {key.split('.')[-1]}, "
                f"or drop {key} to keep the curve", option=key)


def check_eval_limits(cfg: DictConfig) -> None:
    """``dataset.group_by_length`` sorts the evaluation batches by length: a batch limit would score
    the split's longest rows, not a sample of it."""
    if not OmegaConf.select(cfg, "dataset.group_by_length"):
        return
    for key in ("trainer.limit_val_batches", "trainer.limit_test_batches"):
        v = OmegaConf.select(cfg, key)
        if v is not None and not (isinstance(v, float) and v == 1.0):
            raise ConfigError(f"{key}={v} with dataset.group_by_length=true would evaluate only the longest rows "
                              "(evaluation batches are sorted by length); use dataset.val_limit / test_limit "
                              "to evaluate fewer rows", option=key)


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


def check_strategy(cfg: DictConfig, method: Method) -> dict[str, Any]:
    """The strategy block, refused before weights when the machine or the method cannot run it."""
    s = OmegaConf.to_container(cfg.strategy, resolve=True) if cfg.get("strategy") else {"name": "single"}
    name = s.get("name", "single")
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{name}' (single | ddp | fsdp)", option="strategy")
    accel = cfg.trainer.get("accelerator")
    if name == "fsdp" or accel in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            if name == "fsdp":
                raise ConfigError("FSDP needs CUDA GPUs; on CPU use strategy=ddp or strategy=single", option="strategy")
            raise ConfigError(f"trainer.accelerator={accel} but no CUDA device is visible", option="trainer.accelerator")
    if name == "fsdp":
        method.check_strategy("fsdp")
    return s


def effective_optim(cfg: DictConfig) -> dict[str, Any]:
    """The global optimizer block, with what the method config declares under `optim` on top.

    The method's `lr` is only the default of `optim.lr` (an interpolation in train.yaml), so an
    explicit `optim.lr=` (command line, experiment, lr grid) is never silently replaced by it.
    """
    own = {k: v for k, v in (cfg.method.get("optim") or {}).items() if k != "lr"}
    return OmegaConf.to_container(OmegaConf.merge(cfg.optim, own), resolve=True)


def plan_method(cfg: DictConfig) -> tuple[ModelSpec, Method, ApplyContext, str, int]:
    """Model spec, the method built from its config and checked against the model, no weights."""
    task = run_dataset(OmegaConf.to_container(cfg.dataset, resolve=True))["task"]  # as_sft: causal_lm
    num_labels = len(cfg.dataset.get("label_names") or []) or 2
    spec = resolve_spec(cfg.model, cfg.model_size.name)
    method = get_method(cfg.method.name).from_config(OmegaConf.to_container(cfg.method, resolve=True))
    ctx = build_context(spec, task, num_labels)
    method.check(ctx)
    return spec, method, ctx, task, num_labels


def make_plan(cfg: DictConfig, out: Path | None = None, load_data: bool = True, run_id: str | None = None) -> Plan:
    """Compose-time checks in the order a user would fix them; reads (never tokenizes) the data.
    ``run_id``: the run's identity when the caller computed it before resolving a base stage."""
    from peftbench.data.packing import check_packing
    from peftbench.results import run_id as config_run_id

    check_numbers(cfg)
    check_curve_schedule(cfg)
    check_eval_limits(cfg)
    knobs = check_knobs(cfg)
    budget = plan_budget(cfg)
    spec, method, ctx, task, num_labels = plan_method(cfg)
    check_lengths(cfg, method, ctx)
    check_image_size(ctx.hf_config, OmegaConf.select(cfg, "dataset.image_size"))
    check_gradient_checkpointing(cfg, method)
    if cfg.get("save_model") and method.freezes_base and not method.supports_merge:
        raise ConfigError(f"save_model writes a plain model; '{method.name}' neither trains the whole model nor "
                          "merges into it", option="save_model")
    dataset = run_dataset(OmegaConf.to_container(cfg.dataset, resolve=True))
    check_packing(dataset, method)
    strategy = check_strategy(cfg, method)
    data_dir = cfg.paths.get("data_dir")
    forgetting = plan_forgetting(cfg) if load_data else None
    examples: dict[str, Any] = {}
    if load_data:
        from peftbench.data.load import load_examples

        examples = load_examples(dataset, data_dir)
    out = Path(out if out is not None else (cfg.paths.get("output_dir") or "outputs/run"))
    return Plan(cfg=cfg, out=out, run_id=run_id or config_run_id(OmegaConf.to_container(cfg, resolve=True)), seed=int(cfg.seed),
                spec=spec, method=method, ctx=ctx, task=task, num_labels=num_labels, budget=budget, knobs=knobs,
                optim=method.train_optimizer(effective_optim(cfg)), strategy=strategy, dataset=dataset, data_dir=data_dir,
                cache_dir=Path(cfg.paths.cache_dir) / "tokenized", forgetting=forgetting, examples=examples)
