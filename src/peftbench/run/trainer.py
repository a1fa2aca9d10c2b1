"""The Lightning Trainer every run gets: callbacks, trackers, progress output, checkpoint/resume,
precision and accumulation from the plan's budget. ``peftbench bench`` times this same function."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench.config.plan import Plan
from peftbench.errors import ConfigError, PeftbenchError


def _trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    return {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if v is not None}


def instantiate_group(group: Any, name: str) -> list[Any]:
    """Every ``_target_`` entry of a config group (``logger``, ``callbacks``). An object's own
    refusal (e.g. swanlab missing) stays that refusal; a target that cannot be built is refused
    naming its entry — before any weight is loaded."""
    if not group:
        return []
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    out = []
    for key, v in group.items():
        if v is None or not v.get("_target_"):
            continue
        try:
            out.append(instantiate(v))
        except InstantiationException as e:
            if isinstance(e.__cause__, PeftbenchError):
                raise e.__cause__ from None
            raise ConfigError(f"cannot build {v.get('_target_')}: {str(e.__cause__ or e).splitlines()[0]}",
                              option=f"{name}.{key}") from e
    return out


def make_loggers(cfg: DictConfig) -> list[Any]:
    """The configured trackers; one that cannot run is refused here, before weights load."""
    loggers = instantiate_group(cfg.get("logger"), "logger")
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
    curves: Any = None       # ConvergenceCurves when measure.curve_points > 0
    val_loader: Any = None   # the capped subset fit() validates the curve on (None: no validation in fit)


def planned_steps(cfg: DictConfig, train_loader: Any, accumulate: int, world_size: int) -> int:
    """Optimizer steps the run will take: ``max_steps``, else epochs × this rank's batches."""
    max_steps = int(cfg.trainer.get("max_steps") or -1)
    if max_steps > 0:
        return max_steps
    per_rank = -(-len(train_loader) // max(1, world_size))
    return max(1, int(cfg.trainer.get("max_epochs") or 1) * -(-per_rank // max(1, accumulate)))


def curve_settings(plan: Plan, lit: Any, train_loader: Any, curve_loader: Any) -> tuple[Any, dict[str, Any]]:
    """The curve callback and the Trainer options that make Lightning validate the capped subset
    every ceil(steps / curve_points) optimizer steps (at most curve_points times, the last at the end
    when they divide evenly); no sanity check, no per-epoch validation."""
    from peftbench.run.callbacks import ConvergenceCurves

    budget = plan.budget
    total = planned_steps(plan.cfg, train_loader, budget.accumulate_grad_batches, budget.world_size)
    every = -(-total // int(plan.cfg.measure.curve_points))
    cb = ConvergenceCurves(f"val/{lit.task.headline}", len(curve_loader.dataset))
    return cb, {"val_check_interval": every * budget.accumulate_grad_batches, "check_val_every_n_epoch": None,
                "num_sanity_val_steps": 0}


def make_trainer(plan: Plan, lit: Any, train_loader: Any, strategy: Any, loggers: list[Any], t_start: float,
                 extra_callbacks: tuple = (), curve_loader: Any = None) -> TrainerParts:
    """The Lightning Trainer of every run (callbacks, progress output, checkpoint/resume, precision,
    accumulation from the plan's budget); ``peftbench bench`` times this same function as its path (b).
    ``curve_loader``: the capped validation subset the convergence curve is measured on."""
    import lightning as L

    from peftbench.measure import memory as mem
    from peftbench.measure import throughput as tp
    from peftbench.run import resume
    from peftbench.run.callbacks import DivergenceCallback, FirstStepTimer, KeepFreedMemory, ShardBatches
    from peftbench.run.progress import progress_callbacks

    cfg, out, budget = plan.cfg, plan.out, plan.budget

    memcb = mem.MemoryCallback()
    thr = tp.ThroughputCallback(warmup_steps=int(cfg.measure.warmup_steps))
    first = FirstStepTimer(t_start=t_start)
    callbacks = [memcb, thr, DivergenceCallback(every_n_steps=int(cfg.measure.finite_check_every)), first]
    if OmegaConf.select(cfg, "perf.keep_freed_memory", default=False):
        callbacks.insert(0, KeepFreedMemory())  # first: set before the memory callback resets its peak
    tkw = _trainer_kwargs(cfg)
    tkw.update(precision=budget.precision, accumulate_grad_batches=budget.accumulate_grad_batches)
    # rich bar on a terminal, plain periodic lines in CI / SLURM logs (see peftbench.run.progress)
    bars, tkw["enable_progress_bar"] = progress_callbacks(bool(tkw.get("enable_progress_bar", True)),
                                                          int(tkw.get("log_every_n_steps") or 25))
    callbacks += bars
    # resumable: trainable-state checkpoints + a sampler whose epoch order is (seed, epoch) only
    loader = resume.resumable_loader(train_loader, plan.seed)
    ckpt_cb = resume.make_checkpoint_callback(OmegaConf.to_container(cfg.get("checkpoint") or {}, resolve=True),
                                              out, plan.run_id, loader)
    if budget.world_size > 1 and hasattr(loader.batch_sampler, "set_shard"):  # Lightning cannot shard it
        callbacks.append(ShardBatches(loader.batch_sampler))
        tkw["use_distributed_sampler"] = False
    ckpt_path = None
    if ckpt_cb is not None:
        callbacks.append(ckpt_cb)
        lit.strict_loading = False  # checkpoints hold trainable tensors only; the base is reloaded
        ckpt_path = resume.resume_path(out, plan.run_id)
    curves = None
    if curve_loader is not None:
        curves, curve_kw = curve_settings(plan, lit, train_loader, curve_loader)
        callbacks.append(curves)
        tkw.update(curve_kw)
    callbacks += list(extra_callbacks)  # the user's (conf/callbacks, from pipeline.prepare), the bench's
    trainer = L.Trainer(default_root_dir=str(out), logger=loggers or False, callbacks=callbacks,
                        strategy=strategy, enable_checkpointing=ckpt_cb is not None, **tkw)
    return TrainerParts(trainer, memcb, thr, first, ckpt_cb, loader, ckpt_path, curves, curve_loader)
