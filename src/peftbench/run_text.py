"""The standard path: model × method × text dataset → Lightning fit → measured record."""

from __future__ import annotations

import copy
import logging
import time
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


def make_loggers(cfg: DictConfig, out: Path) -> list[Any]:
    from hydra.utils import instantiate

    lg = cfg.get("logger")
    if not lg:
        return []
    return [instantiate(v) for v in lg.values() if v is not None and v.get("_target_")]


def run_text(cfg: DictConfig, out: Path) -> dict[str, Any]:
    import lightning as L
    import torch

    from peftbench.data.datamodule import TaskDataModule
    from peftbench.lit import PeftLitModule
    from peftbench.lit.tasks import make_task
    from peftbench.measure import memory as mem
    from peftbench.measure import params as pm
    from peftbench.measure import throughput as tp
    from peftbench.models import load_model, load_tokenizer

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    plan = make_plan(cfg)  # every refusal happens here, before weights or tokenization
    timings["plan_s"] = time.perf_counter() - t0
    if cfg.trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator=gpu but no CUDA device is visible", option="trainer.accelerator")
    strategy = make_strategy(cfg, plan.method)

    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    t = time.perf_counter()
    tok = load_tokenizer(plan.spec)
    model = load_model(plan.spec, plan.task, plan.num_labels, tok, plan.method.load_kwargs(plan.ctx),
                       init_seed=int(cfg.model.get("init_seed", 0)))
    timings["load_model_s"] = time.perf_counter() - t
    base_names = pm.base_param_names(model)
    base_snapshot = pm.snapshot(model) if cfg.measure.changed else None
    base_model = copy.deepcopy(model) if cfg.measure.inference_overhead else None
    torch.manual_seed(int(cfg.seed))
    model = plan.method.apply(model, plan.ctx)
    counts = pm.count_params(model, base_names)
    if counts["trainable"] == 0:
        raise ConfigError(f"method '{plan.method.name}' left nothing trainable", option="method")

    dm = TaskDataModule(OmegaConf.to_container(cfg.dataset, resolve=True), cfg.paths.get("data_dir"),
                        batch_size=int(cfg.data.batch_size), eval_batch_size=int(cfg.data.eval_batch_size),
                        num_workers=int(cfg.data.num_workers), seed=int(cfg.seed),
                        cache_dir=Path(cfg.paths.cache_dir) / "tokenized", examples=plan.examples)
    dm.set_tokenizer(tok)
    t = time.perf_counter()
    dm.setup("fit")
    timings["data_setup_s"] = time.perf_counter() - t

    hook = getattr(plan.method, "on_train_step_end", None)
    lit = PeftLitModule(model, make_task(plan.task, plan.num_labels), OmegaConf.to_container(cfg.optim, resolve=True),
                        step_hook=hook)
    memcb = mem.MemoryCallback()
    thr = tp.ThroughputCallback(warmup_steps=int(cfg.measure.warmup_steps))
    from peftbench.callbacks import DivergenceCallback, FirstStepTimer

    first = FirstStepTimer(t_start=t0)
    callbacks = [memcb, thr, DivergenceCallback(every_n_steps=int(cfg.measure.finite_check_every)), first]
    trainer = L.Trainer(default_root_dir=str(out), logger=make_loggers(cfg, out) or False, callbacks=callbacks,
                        strategy=strategy, enable_checkpointing=False, **_trainer_kwargs(cfg))
    t = time.perf_counter()
    model.train()  # from_pretrained returns eval mode; dropout must be on while training
    # No validation inside fit: one validate after it gives the numbers (same for every method).
    trainer.fit(lit, train_dataloaders=dm.train_dataloader())
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

    record: dict[str, Any] = {"metrics": metrics, "timings": timings}
    if trainer.global_rank != 0:
        return record
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
    if base_model is not None:
        speed.update(_latencies(model, base_model, plan.method, next(iter(dm.val_dataloader()))))
    memory = memcb.summary()
    memory.update({f"analytic_{k}": v for k, v in mem.analytic_memory(model).items()})
    world = trainer.world_size
    record.update(
        params=counts, memory=memory, speed=speed,
        model={"family": plan.spec.family, "size": plan.spec.size, "checkpoint": plan.spec.source,
               "total": counts["total"] - counts.get("added", 0)},
        method={"name": plan.method.name, "family": plan.method.family, "hparams": plan.method.hparams()},
        dataset=dm.describe(),
        budget={"precision": str(cfg.trainer.get("precision")), "micro_batch_size": int(cfg.data.batch_size),
                "accumulate_grad_batches": int(cfg.trainer.get("accumulate_grad_batches") or 1),
                "world_size": world,
                "effective_batch_size": int(cfg.data.batch_size) * int(cfg.trainer.get("accumulate_grad_batches") or 1) * world,
                "optimizer_steps": int(trainer.global_step)},
        artifacts={"adapter_dir": str(out / "adapter")},
    )
    record["env_extra"] = {"world_size": world}
    return record


def _latencies(model, base_model, method, batch) -> dict[str, float]:
    """Adapted vs base (vs merged) forward latency on the same batch, interleaved round by round
    so machine noise hits all of them alike; medians over rounds."""
    import statistics

    from peftbench.measure import throughput as tp

    models = {"adapted": model, "base": base_model}
    if method.supports_merge:
        models["merged"] = method.merge(copy.deepcopy(model))
    lat: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(5):
        for k, m in models.items():
            lat[k].append(tp.inference_latency(m, batch, n=3, warmup=1))
    med = {k: statistics.median(v) for k, v in lat.items()}
    out = {"eval_latency_s": med["adapted"], "base_latency_s": med["base"],
           "inference_overhead": tp.inference_overhead(med["adapted"], med["base"])}
    if "merged" in med:
        out.update(merged_latency_s=med["merged"], merged_inference_overhead=tp.inference_overhead(med["merged"], med["base"]))
    return out
