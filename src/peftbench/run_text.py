"""The standard path: model × method × text dataset → Lightning fit → measured record."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench.build import make_plan
from peftbench.errors import ConfigError

log = logging.getLogger("peftbench")


def _trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    kw = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if v is not None}
    return kw


def make_strategy(cfg: DictConfig, method) -> Any:
    s = OmegaConf.to_container(cfg.strategy, resolve=True)
    name = s.get("name", "single")
    if name in ("single", "auto"):
        return "auto"
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        fu = s.get("find_unused_parameters", "auto")
        if fu == "auto":
            fu = bool(getattr(method, "ddp_find_unused", False))
        return DDPStrategy(find_unused_parameters=fu, process_group_backend=s.get("backend"),
                           start_method=s.get("start_method", "popen"))
    if name == "fsdp":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("FSDP needs CUDA GPUs; on CPU use strategy=ddp or strategy=single", option="strategy")
        from peftbench.fsdp import make_fsdp_strategy

        return make_fsdp_strategy(s, method)
    raise ConfigError(f"unknown strategy '{name}' (single | ddp | fsdp)", option="strategy")


def effective_optim(cfg: DictConfig) -> dict[str, Any]:
    """The global optimizer block, with what the method config declares under `optim` on top.

    The method's `lr` is only the default of `optim.lr` (an interpolation in train.yaml), so an
    explicit `optim.lr=` (command line, experiment, lr grid) is never silently replaced by it.
    """
    own = {k: v for k, v in (cfg.method.get("optim") or {}).items() if k != "lr"}
    merged = OmegaConf.merge(cfg.optim, own)
    return OmegaConf.to_container(merged, resolve=True)


def make_loggers(cfg: DictConfig, out: Path) -> list[Any]:
    from hydra.utils import instantiate

    lg = cfg.get("logger")
    if not lg:
        return []
    from hydra.errors import InstantiationException

    from peftbench.errors import PeftbenchError

    try:
        loggers = [instantiate(v) for v in lg.values() if v is not None and v.get("_target_")]
    except InstantiationException as e:  # a tracker's own refusal (e.g. swanlab missing) stays a refusal
        if isinstance(e.__cause__, PeftbenchError):
            raise e.__cause__ from None
        raise
    if loggers:  # every tracker gets the resolved config (wandb: run config; tensorboard/csv: hparams)
        hp = OmegaConf.to_container(cfg, resolve=True)
        for logger in loggers:
            logger.log_hyperparams(hp)
    return loggers


@dataclass
class TrainerParts:
    trainer: Any
    memory: Any
    throughput: Any
    first_step: Any
    checkpoint: Any          # None when checkpointing is off
    train_loader: Any        # the resumable wrapper fit() must be given
    ckpt_path: str | None    # where to resume from (None: fresh start)


def make_trainer(cfg: DictConfig, lit: Any, train_loader: Any, out: Path, budget: Any, strategy: Any,
                 loggers: list[Any], t_start: float, extra_callbacks: tuple = ()) -> TrainerParts:
    """The Lightning Trainer every text run gets (callbacks, progress output, checkpoint/resume,
    precision, accumulation); ``peftbench bench`` times this same function as its path (b)."""
    import lightning as L

    from peftbench import resume
    from peftbench.callbacks import DivergenceCallback, FirstStepTimer, KeepFreedMemory
    from peftbench.measure import memory as mem
    from peftbench.measure import throughput as tp
    from peftbench.progress import progress_callbacks
    from peftbench.results import run_id

    memcb = mem.MemoryCallback()
    thr = tp.ThroughputCallback(warmup_steps=int(cfg.measure.warmup_steps))
    first = FirstStepTimer(t_start=t_start)
    callbacks = [memcb, thr, DivergenceCallback(every_n_steps=int(cfg.measure.finite_check_every)), first]
    if OmegaConf.select(cfg, "perf.keep_freed_memory", default=False):
        callbacks.insert(0, KeepFreedMemory())  # first: set before the memory callback resets its peak
    tkw = _trainer_kwargs(cfg)
    tkw.update(precision=budget.precision, accumulate_grad_batches=budget.accumulate_grad_batches)
    # rich bar on a terminal, plain periodic lines in CI / SLURM logs (see peftbench.progress)
    bars, tkw["enable_progress_bar"] = progress_callbacks(bool(tkw.get("enable_progress_bar", True)),
                                                          int(tkw.get("log_every_n_steps") or 25))
    callbacks += bars
    # resumable: trainable-state checkpoints + a sampler whose epoch order is (seed, epoch) only
    loader = resume.resumable_loader(train_loader, int(cfg.seed))
    rid = run_id(OmegaConf.to_container(cfg, resolve=True))
    ckpt_cb = resume.make_checkpoint_callback(OmegaConf.to_container(cfg.get("checkpoint") or {}, resolve=True),
                                              out, rid, loader)
    ckpt_path = None
    if ckpt_cb is not None:
        callbacks.append(ckpt_cb)
        lit.strict_loading = False  # checkpoints hold trainable tensors only; the base is reloaded
        ckpt_path = resume.resume_path(out, rid)
    callbacks += list(extra_callbacks)
    trainer = L.Trainer(default_root_dir=str(out), logger=loggers or False, callbacks=callbacks,
                        strategy=strategy, enable_checkpointing=ckpt_cb is not None, **tkw)
    return TrainerParts(trainer, memcb, thr, first, ckpt_cb, loader, ckpt_path)


def run_text(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Plan the budget (effective batch → micro-batch × accumulation, precision, memory cap), then
    run; an OOM becomes a retry at half the micro-batch (``micro_batch_size: auto``) or an ``oom``
    record (src/peftbench/budget.py)."""
    from peftbench.budget import check_gradient_checkpointing, plan_budget, run_with_budget
    from peftbench.data.packing import check_packing

    from peftbench.bench.knobs import check_knobs

    check_knobs(cfg)  # tf32 / fused / attn_implementation / compile: refused before any weight
    budget = plan_budget(cfg)  # refusals before any weight or token
    check_gradient_checkpointing(cfg)
    check_packing(cfg)
    return run_with_budget(budget, lambda b: _run_text_once(cfg, out, b))


def _run_text_once(cfg: DictConfig, out: Path, budget) -> dict[str, Any]:
    import lightning as L
    import torch

    from peftbench.data.datamodule import TaskDataModule
    from peftbench.lit import PeftLitModule
    from peftbench.lit.tasks import make_task
    from peftbench.measure import memory as mem
    from peftbench.measure import params as pm
    from peftbench.models import load_model, load_tokenizer

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    plan = make_plan(cfg)  # every refusal happens here, before weights or tokenization
    from peftbench.forgetting import ForgettingMeter, plan_forgetting

    forget_plan = plan_forgetting(cfg)  # checks + reads the general set, still before weights
    timings["plan_s"] = time.perf_counter() - t0
    if cfg.trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator=gpu but no CUDA device is visible", option="trainer.accelerator")
    strategy = make_strategy(cfg, plan.method)
    loggers = make_loggers(cfg, out)  # a tracker that cannot run is refused before weights load

    from peftbench.bench.knobs import apply_backend_knobs, check_knobs, maybe_compile

    knobs = check_knobs(cfg)
    apply_backend_knobs(knobs)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    t = time.perf_counter()
    tok = load_tokenizer(plan.spec)
    model = load_model(plan.spec, plan.task, plan.num_labels, tok, plan.method.load_kwargs(plan.ctx),
                       init_seed=int(cfg.model.get("init_seed", 0)), attn_implementation=knobs["attn_implementation"])
    timings["load_model_s"] = time.perf_counter() - t
    base_names = pm.base_param_names(model)
    forget = ForgettingMeter(forget_plan, tok) if forget_plan is not None else None
    if forget is not None:  # general ability of the base model, before any update
        forget.before(model)
    base_snapshot = pm.snapshot(model) if cfg.measure.changed else None
    base_model = copy.deepcopy(model) if cfg.measure.inference_overhead else None
    torch.manual_seed(int(cfg.seed))
    model = plan.method.apply(model, plan.ctx)
    if cfg.model.get("gradient_checkpointing"):
        from peftbench.budget import enable_gradient_checkpointing

        enable_gradient_checkpointing(model)
    model = maybe_compile(model, knobs)  # perf.compile: in place, parameter names unchanged
    counts = pm.count_params(model, base_names)
    if counts["trainable"] == 0:
        raise ConfigError(f"method '{plan.method.name}' left nothing trainable", option="method")

    dm = TaskDataModule(OmegaConf.to_container(cfg.dataset, resolve=True), cfg.paths.get("data_dir"),
                        batch_size=budget.micro_batch_size, eval_batch_size=int(cfg.data.eval_batch_size),
                        num_workers=int(cfg.data.num_workers), seed=int(cfg.seed),
                        cache_dir=Path(cfg.paths.cache_dir) / "tokenized", examples=plan.examples)
    dm.set_tokenizer(tok)
    t = time.perf_counter()
    dm.setup("fit")
    timings["data_setup_s"] = time.perf_counter() - t

    hook = getattr(plan.method, "on_train_step_end", None)
    lit = PeftLitModule(model, make_task(plan.task, plan.num_labels), effective_optim(cfg),
                        step_hook=hook)
    parts = make_trainer(cfg, lit, dm.train_dataloader(), out, budget, strategy, loggers, t_start=t0)
    trainer, memcb, thr, first, ckpt_cb = parts.trainer, parts.memory, parts.throughput, parts.first_step, parts.checkpoint
    if trainer.world_size != budget.world_size:  # the effective batch was planned for another world size
        raise ConfigError(f"Lightning launched {trainer.world_size} processes, the budget planned {budget.world_size}",
                          option="trainer.devices")
    t = time.perf_counter()
    model.train()  # from_pretrained returns eval mode; dropout must be on while training
    # No validation inside fit: one validate after it gives the numbers (same for every method).
    from peftbench.budget import memory_cap

    with memory_cap(budget.memory_limit_mb):  # PEFTBENCH_MEMORY_LIMIT_MB: a smaller machine, for real
        trainer.fit(lit, train_dataloaders=parts.train_loader, ckpt_path=parts.ckpt_path)
    timings["fit_s"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics: dict[str, float] = {}
    for r in trainer.validate(lit, dataloaders=dm.val_dataloader(), verbose=False):
        metrics.update({k: float(v) for k, v in r.items()})
    if "test" in dm.splits:
        for r in trainer.test(lit, dataloaders=dm.test_dataloader(), verbose=False):
            metrics.update({k: float(v) for k, v in r.items()})
    timings["eval_s"] = time.perf_counter() - t
    timings["first_step_s"] = first.seconds
    model = lit.model

    record: dict[str, Any] = {"metrics": metrics, "timings": timings,
                              "resumed_from_step": ckpt_cb.resumed_from_step if ckpt_cb is not None else None}
    if trainer.global_rank != 0:
        return record
    if forget is not None:  # the same measurement on the fine-tuned model
        try:
            record["forgetting"] = forget.after(model)
        except Exception as e:  # noqa: BLE001 - a failed side measurement must not lose the trained run
            log.error("forgetting measurement failed: %s", e)
            record["forgetting"] = {**forget.block, "error": f"{type(e).__name__}: {e}"}
    saved = plan.method.save(model, out / "adapter")
    counts["stored_bytes"] = pm.stored_bytes(saved)
    counts["delta_rank"] = None
    if base_snapshot is not None:
        final = model
        if plan.method.supports_merge:
            final = plan.method.merge(copy.deepcopy(model))
            try:
                counts["delta_rank"] = pm.delta_rank(pm.lora_delta_weights(model)) or None
            except Exception:  # noqa: BLE001 - only defined for LoRA-style layers
                counts["delta_rank"] = None
        counts["changed"] = pm.changed_params({n: p.detach() for n, p in final.named_parameters()}, base_snapshot)
    speed = thr.summary()
    packed = getattr(dm, "packed_collator", None)  # packed batches carry no attention_mask to count
    if packed is not None and packed.padding_fraction is not None and speed.get("train_tokens_per_s"):
        speed.update(padding_fraction=packed.padding_fraction,
                     useful_tokens_per_s=speed["train_tokens_per_s"] * (1 - packed.padding_fraction))
    if base_model is not None:
        batch = _head_rows(next(iter(dm.val_dataloader())), int(cfg.measure.get("latency_batch_size") or 8))
        speed.update(_latencies(model, base_model, plan.method, batch), latency_batch_rows=_rows(batch))
    memory = memcb.summary()
    memory.update({f"analytic_{k}": v for k, v in mem.analytic_memory(model).items()})
    world = trainer.world_size
    record.update(
        params=counts, memory=memory, speed=speed,
        model={"family": plan.spec.family, "size": plan.spec.size, "checkpoint": plan.spec.source,
               "total": counts["total"] - counts.get("added", 0)},
        method={"name": plan.method.name, "family": plan.method.family, "hparams": plan.method.hparams(),
                "optim": effective_optim(cfg)},
        dataset={**dm.describe(), "truncated": {k: getattr(v, "truncated", None) for k, v in dm.examples.items()}},
        budget=budget.record(int(trainer.global_step)),
        artifacts={"adapter_dir": str(out / "adapter")},
    )
    record["env"] = {"world_size": world, "strategy": str(cfg.strategy.name)}
    if ckpt_cb is not None and not cfg.checkpoint.get("keep", False):
        from peftbench import resume

        resume.remove_checkpoints(out)  # the adapter and results.json are what a finished run keeps
    return record


def _head_rows(batch: Any, k: int) -> Any:
    """The first ``k`` rows of a batch: latency is a per-forward ratio, and timing a full eval
    batch 45 times cost more than a small run's training."""
    import torch

    if isinstance(batch, dict):
        return {n: (v[:k] if torch.is_tensor(v) and v.dim() > 0 else v) for n, v in batch.items()}
    return batch


def _rows(batch: Any) -> int | None:
    import torch

    t = next((v for v in batch.values() if torch.is_tensor(v) and v.dim() > 0), None) if isinstance(batch, dict) else None
    return int(t.shape[0]) if t is not None else None


def _latencies(model, base_model, method, batch) -> dict[str, float]:
    """Adapted vs base (vs merged) forward latency on the same batch, interleaved round by round
    so machine noise hits all of them alike; medians over rounds."""
    import statistics

    from peftbench.measure import throughput as tp

    models = {"adapted": model, "base": base_model}
    if method.supports_merge:
        models["merged"] = method.merge(copy.deepcopy(model))
    lat: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(3):
        for k, m in models.items():
            lat[k].append(tp.inference_latency(m, batch, n=3, warmup=1))
    med = {k: statistics.median(v) for k, v in lat.items()}
    out = {"eval_latency_s": med["adapted"], "base_latency_s": med["base"],
           "inference_overhead": tp.inference_overhead(med["adapted"], med["base"])}
    if "merged" in med:
        out.update(merged_latency_s=med["merged"], merged_inference_overhead=tp.inference_overhead(med["merged"], med["base"]))
    return out
