"""``execute(plan)``: the one pipeline every run goes through, as named stages —
load and adapt → data module → fit and evaluate → measure → record.

The plan (config/plan.py) has already refused everything that can be refused without weights;
the OOM retry (run/budget.py) wraps one attempt and changes only the plan's micro-batch, so the
data is read once and the plan never recomputed.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from peftbench.config.plan import Plan
from peftbench.errors import ConfigError
from peftbench.models import fingerprint
from peftbench.run.budget import run_with_budget
from peftbench.run.failures import Diverged

log = logging.getLogger("peftbench")


@dataclass
class Adapted:
    """The model after the method was applied, with what the measurements need of the base."""

    model: Any
    tokenizer: Any
    counts: dict[str, Any]
    base_snapshot: Any = None   # base weights, for `changed` and ΔW
    base_model: Any = None      # an untouched copy, for the inference-overhead timing
    forgetting: Any = None      # a ForgettingMeter that has measured the base
    weights: str | None = None  # the base weights' digest, taken when they were loaded (model.weights)


@dataclass
class Fitted:
    trainer: Any
    lit: Any
    parts: Any
    metrics: dict[str, float] = field(default_factory=dict)


def execute(plan: Plan, t_start: float | None = None) -> dict[str, Any]:
    """Run the plan; returns the record sections (``status: oom`` after the last OOM retry)."""
    t0 = time.perf_counter() if t_start is None else t_start
    return run_with_budget(plan.budget, lambda budget: attempt(plan.with_budget(budget), t0))


def attempt(plan: Plan, t_start: float) -> dict[str, Any]:
    timings: dict[str, float] = {}
    runtime = prepare(plan)
    adapted = load_and_adapt(plan, timings)
    dm = data_module(plan, adapted.tokenizer, timings)
    fitted = fit_and_evaluate(plan, adapted, dm, runtime, t_start, timings)
    part: dict[str, Any] = {"metrics": fitted.metrics, "timings": timings,
                            "resumed_from_step": getattr(fitted.parts.checkpoint, "resumed_from_step", None)}
    if fitted.trainer.global_rank != 0:
        return part
    part.update(measure(plan, adapted, dm, fitted))
    return record(plan, adapted, dm, fitted, part)


def prepare(plan: Plan) -> tuple[Any, list[Any], list[Any]]:
    """Process-wide settings and the objects refused before weights: strategy, trackers, the
    user's extra callbacks (conf/callbacks)."""
    import lightning as L

    from peftbench.config.knobs import apply_backend_knobs
    from peftbench.run.strategy import make_strategy
    from peftbench.run.trainer import instantiate_group, make_loggers

    strategy = make_strategy(plan.strategy, plan.method)
    loggers = make_loggers(plan.cfg)
    callbacks = instantiate_group(plan.cfg.get("callbacks"), "callbacks")
    apply_backend_knobs(plan.knobs)
    L.seed_everything(plan.seed, workers=True, verbose=False)
    return strategy, loggers, callbacks


def load_and_adapt(plan: Plan, timings: dict[str, float]) -> Adapted:
    """Load the base, measure what needs the base, apply the method, count parameters."""
    import torch

    from peftbench.config.knobs import maybe_compile
    from peftbench.measure import params as pm
    from peftbench.measure.forgetting import ForgettingMeter
    from peftbench.models import load_model, load_tokenizer
    from peftbench.run.budget import enable_gradient_checkpointing

    cfg, t = plan.cfg, time.perf_counter()
    tok = load_tokenizer(plan.spec)
    model = load_model(plan.spec, plan.task, plan.num_labels, tok, plan.method.load_kwargs(plan.ctx),
                       init_seed=int(cfg.model.get("init_seed", 0)), attn_implementation=plan.knobs["attn_implementation"],
                       head_seed=plan.seed)  # the head: from the run seed alone, the same for every method
    timings["load_model_s"] = time.perf_counter() - t
    weights = fingerprint.weights_digest(plan.spec, model)  # now: the folder may be replaced while it trains
    base_names = pm.base_param_names(model)
    forget = ForgettingMeter(plan.forgetting, tok) if plan.forgetting is not None else None
    if forget is not None:  # general ability of the base model, before any update
        forget.before(model)
    snap = pm.snapshot(model) if cfg.measure.changed else None
    base_model = copy.deepcopy(model) if cfg.measure.inference_overhead else None
    torch.manual_seed(plan.seed)
    model = plan.method.apply(model, plan.ctx)
    if plan.budget.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model = maybe_compile(model, plan.knobs)  # perf.compile: in place, parameter names unchanged
    counts = pm.count_params(model, base_names)
    if counts["trainable"] == 0:
        raise ConfigError(f"method '{plan.method.name}' left nothing trainable", option="method")
    return Adapted(model, tok, counts, snap, base_model, forget, weights)


def data_module(plan: Plan, tokenizer: Any, timings: dict[str, float]) -> Any:
    """The DataModule over the plan's examples (read once by make_plan), tokenized (cached)."""
    from peftbench.data.datamodule import TaskDataModule

    cfg = plan.cfg
    dm = TaskDataModule(plan.dataset, plan.data_dir, batch_size=plan.budget.micro_batch_size,
                        eval_batch_size=int(cfg.data.eval_batch_size), num_workers=int(cfg.data.num_workers),
                        seed=plan.seed, cache_dir=plan.cache_dir, examples=plan.examples)
    dm.set_tokenizer(tokenizer)
    t = time.perf_counter()
    dm.setup("fit")
    timings["data_setup_s"] = time.perf_counter() - t
    return dm


def fit_and_evaluate(plan: Plan, adapted: Adapted, dm: Any, runtime: tuple[Any, list[Any], list[Any]],
                     t_start: float, timings: dict[str, float]) -> Fitted:
    """One fit, then one validate (and test) after it: the same evaluation for every method."""
    from peftbench.lit import PeftLitModule
    from peftbench.lit.tasks import make_task
    from peftbench.run.budget import memory_cap
    from peftbench.run.trainer import make_trainer

    task = make_task(plan.task, plan.num_labels, plan.dataset, adapted.tokenizer, plan.examples)  # the dataset may ask for generation
    lit = PeftLitModule(adapted.model, task, plan.optim,
                        step_hook=plan.method.on_train_step_end)
    strategy, loggers, callbacks = runtime
    parts = make_trainer(plan, lit, dm.train_dataloader(), strategy, loggers, t_start=t_start,
                         extra_callbacks=tuple(callbacks), curve_loader=curve_loader(plan, dm))
    trainer = parts.trainer
    if trainer.world_size != plan.budget.world_size:  # the effective batch was planned for another world size
        raise ConfigError(f"Lightning launched {trainer.world_size} processes, the budget planned "
                          f"{plan.budget.world_size}", option="trainer.devices")
    t = time.perf_counter()
    metrics = evaluate(trainer, lit, dm, suffix="_before") if plan.cfg.measure.get("before") else {}
    timings["eval_before_s"] = time.perf_counter() - t
    t = time.perf_counter()
    adapted.model.train()  # from_pretrained returns eval mode; dropout must be on while training
    with memory_cap(plan.budget.memory_limit_mb):  # PEFTBENCH_MEMORY_LIMIT_MB: a smaller machine, for real
        trainer.fit(lit, train_dataloaders=parts.train_loader, val_dataloaders=parts.val_loader, ckpt_path=parts.ckpt_path)
    timings["fit_s"] = time.perf_counter() - t
    close_curve(trainer, lit, parts)  # not in fit_s: only budgets the curve interval does not divide pay it
    t = time.perf_counter()
    metrics.update(evaluate(trainer, lit, dm, row_ids=True))
    timings["eval_s"] = time.perf_counter() - t
    bad = sorted(k for k, v in metrics.items() if k.endswith("/loss") and not math.isfinite(v))
    if bad:  # the weights themselves went non-finite: not a result, whatever the other metrics say
        raise Diverged(f"{bad[0]} is {metrics[bad[0]]} after training")
    timings["first_step_s"] = parts.first_step.seconds
    adapted.model = lit.model
    return Fitted(trainer, lit, parts, metrics)


def curve_loader(plan: Plan, dm: Any) -> Any:
    """``measure.curve_points`` > 0: the first ``curve_max_examples`` validation rows, with their own
    RNG (iterating a loader without one draws from the global RNG, which would change training)."""
    import torch

    from peftbench.run.predictions import eval_loader

    m = plan.cfg.measure
    if not int(m.get("curve_points") or 0):
        return None
    return eval_loader(dm.val_dataloader(), limit=int(m.curve_max_examples), row_ids=False, generator=torch.Generator(),
                       by_length=dm.groups_by_length)


def close_curve(trainer: Any, lit: Any, parts: Any) -> None:
    """The convergence curve ends where training ended: when the steps are no multiple of its
    interval (150 steps, 4 points: 38, 76, 114), Lightning's last validation came before the final
    step, and a "last quarter" read off it would not be the end of training. Score the curve's
    subset once more with the final weights."""
    cv = parts.curves
    if cv is None or parts.val_loader is None or (cv.points and cv.points[-1][0] >= trainer.global_step):
        return
    for r in trainer.validate(lit, dataloaders=parts.val_loader, verbose=False):
        if cv.metric in r:
            cv.points.append([int(trainer.global_step), float(r[cv.metric])])


def evaluate(trainer: Any, lit: Any, dm: Any, suffix: str = "", row_ids: bool = False) -> dict[str, float]:
    """Validation (and test) metrics; ``measure.before`` scores the untrained model the same way
    before fit (keys ``val/acc_before`` …): the baseline of the run's own starting point. With
    ``row_ids``, the module keeps every example's record (``lit.examples``)."""
    from peftbench.run.predictions import eval_loader, eval_shard

    metrics: dict[str, float] = {}
    shard = eval_shard(trainer)  # split over the ranks; under DDP each example scored once, in the metrics too
    kw = dict(row_ids=row_ids, shard=shard, by_length=dm.groups_by_length)
    for r in trainer.validate(lit, dataloaders=eval_loader(dm.val_dataloader(), **kw), verbose=False):
        metrics.update({f"{k}{suffix}": float(v) for k, v in r.items()})
    if "test" in dm.splits:
        for r in trainer.test(lit, dataloaders=eval_loader(dm.test_dataloader(), **kw), verbose=False):
            metrics.update({f"{k}{suffix}": float(v) for k, v in r.items()})
    return metrics


def measure(plan: Plan, adapted: Adapted, dm: Any, fitted: Fitted) -> dict[str, Any]:
    """Forgetting, typed counts (stored bytes, changed, ΔW rank), speed, memory — rank 0 only."""
    from peftbench.measure import memory as mem
    from peftbench.measure import params as pm
    from peftbench.measure import throughput as tp

    cfg, model, out = plan.cfg, adapted.model, {}
    if adapted.forgetting is not None:  # the same measurement on the fine-tuned model
        try:
            out["forgetting"] = adapted.forgetting.after(model)
        except Exception as e:  # noqa: BLE001 - a failed side measurement must not lose the trained run
            log.error("forgetting measurement failed: %s", e)
            out["forgetting"] = {**adapted.forgetting.block, "error": f"{type(e).__name__}: {e}"}
    counts = dict(adapted.counts)
    counts["stored_bytes"] = pm.stored_bytes(plan.method.save(model, plan.out / "adapter"))
    counts["delta_rank"] = None
    needs_merged = adapted.base_snapshot is not None or adapted.base_model is not None
    merged = plan.method.merge(copy.deepcopy(model)) if plan.method.supports_merge and needs_merged else None
    if adapted.base_snapshot is not None:
        final = pm.snapshot(merged if merged is not None else model, copy=False)  # 4-bit dequantized
        counts["changed"] = pm.changed_params(final, adapted.base_snapshot)
        if merged is not None:  # ΔW = merged − base, for any mergeable method
            counts["delta_rank"] = pm.merged_delta_rank(final, adapted.base_snapshot,
                                                        exclude=pm.trainable_names(model)) or None
    speed = fitted.parts.throughput.summary()
    packed = getattr(dm, "packed_collator", None)  # packed batches carry no attention_mask to count
    if packed is not None and packed.padding_fraction is not None and speed.get("train_tokens_per_s"):
        speed.update(padding_fraction=packed.padding_fraction,
                     useful_tokens_per_s=speed["train_tokens_per_s"] * (1 - packed.padding_fraction))
    if adapted.base_model is not None:
        batch = tp.head_rows(next(iter(dm.val_dataloader())), int(cfg.measure.get("latency_batch_size") or 8))
        models = {"adapted": model, "base": adapted.base_model, **({"merged": merged} if merged is not None else {})}
        speed.update(tp.compare_latencies(models, batch), latency_batch_rows=tp.batch_rows(batch))
    memory = fitted.parts.memory.summary()
    memory.update({f"analytic_{k}": v for k, v in mem.analytic_memory(model).items()})
    return {**out, "params": counts, "speed": speed, "memory": memory}


def record(plan: Plan, adapted: Adapted, dm: Any, fitted: Fitted, part: dict[str, Any]) -> dict[str, Any]:
    """The record sections that describe the run (model, method, data, budget, artifacts)."""
    counts = part["params"]
    part.update(
        model={"family": plan.spec.family, "size": plan.spec.size, "checkpoint": plan.spec.source,
               "total": counts["total"] - counts.get("added", 0),
               "weights": adapted.weights},
        method={"name": plan.method.name, "family": plan.method.family, "hparams": plan.method.hparams(),
                "optim": plan.optim},
        dataset={**dm.describe(), "truncated": {k: getattr(v, "truncated", None) for k, v in dm.examples.items()}},
        budget=plan.budget.record(int(fitted.trainer.global_step)),
        artifacts={"adapter_dir": str(plan.out / "adapter")},
        env={"world_size": fitted.trainer.world_size, "strategy": str(plan.strategy.get("name", "single"))},
    )
    part.update(eval_records(plan, fitted))
    aliases = plan.cfg.get("metric_aliases") or {}  # a study's names for standard metrics
    part["metrics"].update({alias: part["metrics"][src] for alias, src in aliases.items() if src in part["metrics"]})
    if plan.cfg.get("save_model"):
        saved = save_model(plan, adapted)
        part["artifacts"].update(model_dir=str(saved), model_weights=fingerprint.saved_digest(saved))
    return part  # checkpoints are removed by run.record.finish, once results.json is on disk


def eval_records(plan: Plan, fitted: Fitted) -> dict[str, Any]:
    """The record's ``eval`` (per split: n, majority baseline, headline metric, predictions file,
    written here) and ``curves`` sections, where the run measured them."""
    from peftbench.run.predictions import write_predictions

    out: dict[str, Any] = {}
    lit = fitted.lit
    if lit.examples:  # measure.predictions=false: the section without the per-example files
        out["eval"] = write_predictions(plan.out, lit.examples, lit.task.headline,
                                        files=bool(plan.cfg.measure.get("predictions", True)))
    if fitted.parts.curves is not None:
        out["curves"] = fitted.parts.curves.curves()
    return out


def save_model(plan: Plan, adapted: Adapted) -> Any:
    """The trained model as a plain Hugging Face checkpoint (merged where the method merges) plus
    its tokenizer, into ``<output_dir>/model`` or the folder ``save_model`` names: what a later run
    loads as its base (config/stages.py; the gpt2_local ladder). Replaced whole, never half."""
    import os
    import shutil
    from pathlib import Path

    from peftbench.config.stages import MODEL_DIR

    target = plan.cfg.save_model
    out = Path(target) if isinstance(target, str) else Path(plan.out) / MODEL_DIR
    model = plan.method.merge(copy.deepcopy(adapted.model)) if plan.method.supports_merge else adapted.model
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    if adapted.tokenizer is not None:
        adapted.tokenizer.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return out
