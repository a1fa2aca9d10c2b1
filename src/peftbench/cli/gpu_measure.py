"""The measuring half of ``peftbench gpu-check``: one case at a time, inside a group's child process.

Every case builds its model the way a run does — ``compose`` → ``make_plan`` (every refusal of a
real run, e.g. QLoRA without bitsandbytes) → the family's architecture built from config (random
init: speed and memory do not depend on the weights, and 1B-parameter checkpoints cannot travel to
an offline machine) → ``method.apply`` → gradient checkpointing → ``torch.compile`` — and trains it
on synthetic token batches (no dataset, no tokenizer: the device lacks ``datasets``).

Timing: one ``cuda.synchronize`` per step boundary; the first ``warmup`` steps (allocator growth,
autotuning, compilation) are left out. Memory: CUDA peaks from a reset taken before the model is
built, so they include weights, gradients, optimizer state and activations.
"""

from __future__ import annotations

import gc
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

GIB = 1024**3
FSDP_PROCS_TIMEOUT_S = 240  # the 2-process case: spawn (imports), build, steps; a stalled NCCL is cut here


@dataclass(frozen=True)
class Scale:
    """Model size, batch shape and step counts: the real check, or the CPU dry run's tiny ones."""

    size: str = "1b"          # conf/model/llama.yaml: Llama-3.2-1B's shape, built from config
    seq: int = 1024
    batch: int = 8
    warmup: int = 3
    steps: int = 10           # measured steps after warm-up
    rounds: int = 3           # overhead: a b c rounds per method
    segment: int = 8          # overhead: steps per runner segment
    cuda: bool = True
    extra: tuple[str, ...] = ()  # overrides of this scale (the dry run's small vocabulary)

    @property
    def precision(self) -> str:
        return "bf16-mixed" if self.cuda else "32-true"


REAL = Scale()
DRY = Scale(size="tiny", seq=32, batch=2, warmup=1, steps=2, rounds=1, segment=3, cuda=False,
            extra=("++model.sizes.tiny.arch.vocab_size=512",))


@dataclass(frozen=True)
class Case:
    """One measurement: ``kind`` picks the runner (loop | fsdp_lightning | fsdp_torch | overhead)."""

    name: str
    group: str
    method: str
    kind: str = "loop"
    overrides: tuple[str, ...] = ()
    procs: int = 1                # fsdp_torch: processes (all on the one device)
    use_orig_params: bool = True  # fsdp: False puts frozen and trainable weights in one FlatParameter
    note: str = ""
    expect_error: str = ""  # an error containing this is the case's expected outcome (a known refusal)
    dry: bool = True  # False: the dry run skips it (the same code path as another dry-run case)
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def overrides(case: Case, scale: Scale) -> list[str]:
    """Hydra overrides of a case: the llama family at ``scale.size``, a causal-LM dataset config (its
    lengths and checks; no file is read), no tracker, no checkpoint, no extra measurements."""
    dev = ["trainer=gpu", "optim.fused=true"] if scale.cuda else ["trainer.accelerator=cpu", "trainer.precision=32-true"]
    return ["model=llama", f"model_size={scale.size}", f"method={case.method}", "dataset=tinyshakespeare",
            f"dataset.max_length={scale.seq}", f"dataset.block_size={scale.seq}", f"data.batch_size={scale.batch}",
            f"trainer.max_steps={scale.warmup + scale.steps}", "logger=none", "trainer.enable_progress_bar=false",
            "checkpoint.enabled=false", "measure.changed=false", "measure.inference_overhead=false",
            "forgetting.enabled=false", f"measure.warmup_steps={scale.warmup}", *dev, *scale.extra, *case.overrides]


def plan_case(case: Case, scale: Scale, out: Path) -> Any:
    """The run's own plan (``make_plan`` without reading data): every pre-load refusal applies."""
    from peftbench.config.compose import compose
    from peftbench.config.plan import make_plan

    return make_plan(compose(overrides(case, scale), output_dir=str(out)), out, load_data=False)


def _device(scale: Scale) -> Any:
    import torch

    return torch.device("cuda", 0) if scale.cuda else torch.device("cpu")


def build_base(plan: Any, device: Any) -> Any:
    """The family's architecture from config, random init, on ``device``. A method that loads its base
    its own way (QLoRA's 4-bit) gets it through ``from_pretrained`` of a saved bf16 copy, as a run does."""
    import torch
    import transformers

    from peftbench.models.loading import hf_config

    cfg = hf_config(plan.spec, plan.task, plan.num_labels, pad_token_id=0)
    attn = plan.knobs.get("attn_implementation")
    kw = plan.method.load_kwargs(plan.ctx)
    torch.manual_seed(0)
    if not kw:
        with torch.device(device):
            return transformers.AutoModelForCausalLM.from_config(cfg, **({"attn_implementation": attn} if attn else {}))
    with tempfile.TemporaryDirectory(prefix="pb-gpu-base-") as tmp:
        with torch.device(device):
            m = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
        m.save_pretrained(tmp, safe_serialization=True)
        del m
        extra = {"device_map": {"": device.index or 0}} if device.type == "cuda" else {}
        return transformers.AutoModelForCausalLM.from_pretrained(tmp, **kw, **extra,
                                                                 **({"attn_implementation": attn} if attn else {}))


def adapt(plan: Any, device: Any) -> tuple[Any, dict[str, Any]]:
    """``run.pipeline.load_and_adapt`` minus tokenizer and snapshots: apply, checkpointing, compile, counts."""
    import torch

    from peftbench.config.knobs import apply_backend_knobs, maybe_compile
    from peftbench.errors import ConfigError
    from peftbench.measure import params as pm
    from peftbench.measure.flops import matmul_params
    from peftbench.run.budget import enable_gradient_checkpointing

    apply_backend_knobs(plan.knobs)
    model = build_base(plan, device)
    base_names = pm.base_param_names(model)
    torch.manual_seed(plan.seed)
    model = plan.method.apply(model, plan.ctx)
    if not any(pm.is_quantized_4bit(p) for p in model.parameters()):
        model.to(device)  # adapters a method created on the CPU
    if plan.budget.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    counts = pm.count_params(model, base_names)
    if counts["trainable"] == 0:
        raise ConfigError(f"method '{plan.method.name}' left nothing trainable", option="method")
    counts["matmul"] = matmul_params(model)
    if plan.knobs.get("compile") and device.type == "cpu":
        model.compile(backend="eager")  # the dry run: dynamo's capture without inductor's minutes of C++ builds
    else:
        model = maybe_compile(model, plan.knobs)
    model.train()
    return model, counts


def token_batches(vocab: int, scale: Scale, n: int, device: Any = None, seed: int = 0) -> list[dict[str, Any]]:
    """Fixed random token batches (labels = inputs: the causal-LM loss shifts them)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (scale.batch, scale.seq), generator=g)
        b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
        out.append({k: v.to(device) for k, v in b.items()} if device is not None else b)
    return out


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_steps(model: Any, plan: Any, batches: list[dict[str, Any]], n: int, device: Any) -> list[float]:
    """The hand-written loop: autocast bf16 on CUDA (bf16-mixed: fp32 weights), the run's optimizer
    (``lit.optim.make_optimizer``), one stamp per finished step. Raises on a non-finite loss."""
    import torch

    from peftbench.lit.optim import make_optimizer

    opt = make_optimizer(model.parameters(), plan.optim)
    bf16 = device.type == "cuda"
    stamps = [time.perf_counter()]
    for i in range(n):
        batch = batches[i % len(batches)]
        if batch["input_ids"].device != device:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        stamps.append(time.perf_counter())
    if not torch.isfinite(loss.detach()).item():
        raise FloatingPointError(f"loss is {loss.item()} after {n} steps")
    return stamps


def speed(stamps: list[float], warmup: int, tokens_per_step: int) -> dict[str, float]:
    """Median step time and tokens/s over the steps after ``warmup`` (stamps[0] is the start)."""
    steps = [b - a for a, b in itertools.pairwise(stamps)][warmup:]
    if not steps:
        raise RuntimeError("no step after warm-up to time")
    span = stamps[-1] - stamps[warmup]
    return {"step_time_s": statistics.median(steps), "tokens_per_s": tokens_per_step * len(steps) / span,
            "steps_measured": len(steps)}


def reset_cuda(device: Any) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peaks(device: Any) -> dict[str, float | None]:
    import torch

    if device.type != "cuda":
        return {"peak_allocated_gib": None, "peak_reserved_gib": None}
    return {"peak_allocated_gib": torch.cuda.max_memory_allocated(device) / GIB,
            "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GIB}


def model_allocated_gib(device: Any) -> float | None:
    """CUDA memory held once the model is built and adapted (weights, adapters, batches not yet)."""
    import torch

    return torch.cuda.memory_allocated(device) / GIB if device.type == "cuda" else None


def flops_fields(counts: dict[str, Any], plan: Any, scale: Scale, tokens_per_s: float | None, device: Any) -> dict[str, Any]:
    """FLOPs per token (trainable-aware, with attention) and MFU against the device's bf16 peak."""
    import torch

    from peftbench.measure.flops import flops_per_token, mfu, peak_bf16_flops

    mm = counts["matmul"]
    per_token = flops_per_token(mm["all"], mm["trainable"], plan.ctx.num_layers, plan.ctx.hidden_size, scale.seq)
    peak = peak_bf16_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    return {"flops_per_token": per_token, "peak_flops": peak, "mfu": mfu(tokens_per_s, per_token, peak),
            "matmul_params": mm["all"], "matmul_trainable": mm["trainable"]}


def measure_loop(case: Case, scale: Scale, out: Path) -> dict[str, Any]:
    """Step time, tokens/s, MFU and CUDA peaks of the hand-written loop on one adapted model."""
    plan = plan_case(case, scale, out)
    device = _device(scale)
    reset_cuda(device)
    t0 = time.perf_counter()
    model, counts = adapt(plan, device)
    build_s = time.perf_counter() - t0
    model_gib = model_allocated_gib(device)
    batches = token_batches(plan.ctx.hf_config.vocab_size, scale, 2, device)
    stamps = train_steps(model, plan, batches, scale.warmup + scale.steps, device)
    sp = speed(stamps, scale.warmup, scale.batch * scale.seq)
    peaks = cuda_peaks(device)
    extra = peaks["peak_allocated_gib"] - model_gib if model_gib is not None else None
    row = {**sp, **peaks, "model_allocated_gib": model_gib, "peak_above_model_gib": extra,
           **flops_fields(counts, plan, scale, sp["tokens_per_s"], device),
           "params": {k: v for k, v in counts.items() if k != "matmul"}, "build_s": build_s,
           "first_steps_s": stamps[scale.warmup] - stamps[0], "optimizer": plan.optim.get("name"),
           "precision": scale.precision}
    del model
    return row


# ---- FSDP ----------------------------------------------------------------------------------------
def _rows(batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Batches split into examples, for a DataLoader (Lightning and HF Trainer collate them back)."""
    return [{k: v[i] for k, v in b.items()} for b in batches for i in range(b["input_ids"].shape[0])]


def lightning_fit(plan: Any, model: Any, rows: list[dict[str, Any]], out: Path) -> list[float]:
    """peftbench's own path (``cli.bench.lightning_path``: PeftLitModule + ``run.trainer.make_trainer``
    with the plan's strategy and precision), fitted; one stamp per step, after every other hook."""
    import lightning as L

    from peftbench.cli.bench import Setup, lightning_path

    stamps: list[float] = [time.perf_counter()]

    class _Stamp(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sync(trainer.strategy.root_device)
            stamps.append(time.perf_counter())

    steps = int(plan.cfg.trainer.max_steps)
    s = Setup(plan.cfg, plan, model, rows, int(plan.cfg.data.batch_size), steps, out)
    lit, parts = lightning_path(s, (_Stamp(),))
    parts.trainer.fit(lit, train_dataloaders=parts.train_loader, ckpt_path=parts.ckpt_path)
    return stamps


def measure_fsdp_lightning(case: Case, scale: Scale, out: Path) -> dict[str, Any]:
    """A 1-device FSDP run through peftbench's strategy (``strategy=fsdp``: block wrap, orig params)."""
    plan = plan_case(case, scale, out)  # on CPU: make_plan refuses FSDP (Lightning's needs CUDA)
    device = _device(scale)
    reset_cuda(device)
    model, counts = adapt(plan, device)
    rows = _rows(token_batches(plan.ctx.hf_config.vocab_size, scale, 2))
    stamps = lightning_fit(plan, model, rows, out / "fit")
    sp = speed(stamps, scale.warmup, scale.batch * scale.seq)
    return {**sp, **cuda_peaks(device), **flops_fields(counts, plan, scale, sp["tokens_per_s"], device),
            "params": {k: v for k, v in counts.items() if k != "matmul"}, "strategy": plan.strategy}


def _fsdp_train(case: Case, scale: Scale, out: Path, device: Any, world: int) -> dict[str, Any]:
    import torch
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import MixedPrecision

    from peftbench.run.strategy import BlockWrapPolicy

    plan = plan_case(replace(case, overrides=()), scale, out)
    reset_cuda(device)
    model, counts = adapt(plan, device)
    mp = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.bfloat16) \
        if device.type == "cuda" else None
    model = FSDP(model, auto_wrap_policy=BlockWrapPolicy(), use_orig_params=case.use_orig_params, mixed_precision=mp,
                 device_id=device)  # device_id=cpu: FSDP's CPU mode (gloo), the dry run
    batches = token_batches(plan.ctx.hf_config.vocab_size, scale, 2, device, seed=torch.distributed.get_rank())
    stamps = train_steps(model, plan, batches, scale.warmup + scale.steps, device)
    sp = speed(stamps, scale.warmup, scale.batch * scale.seq * world)  # every rank trains its own batch
    return {**sp, **cuda_peaks(device), **flops_fields(counts, plan, scale, sp["tokens_per_s"], device),
            "params": {k: v for k, v in counts.items() if k != "matmul"}, "world_size": world,
            "use_orig_params": case.use_orig_params, "backend": torch.distributed.get_backend()}


def fsdp_worker(rank: int, world: int, case: Case, scale: Scale, out: str, port: int, result: str) -> None:
    """One rank of a torch-FSDP run; every rank on the same device (NCCL may refuse that: recorded)."""
    import json
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      TORCH_NCCL_ASYNC_ERROR_HANDLING="1")
    device = _device(scale)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():  # an earlier Lightning FSDP case in this process left its group
        dist.destroy_process_group()
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    try:
        row = _fsdp_train(case, scale, Path(out) / f"rank{rank}", device, world)
        if device.type == "cuda":  # every rank's peak: they share the device
            peaks = [None] * world
            dist.all_gather_object(peaks, row["peak_allocated_gib"])
            row["peak_allocated_gib_per_rank"] = peaks
        if rank == 0:
            Path(result).write_text(json.dumps(row))
    finally:
        dist.destroy_process_group()


def measure_fsdp_torch(case: Case, scale: Scale, out: Path) -> dict[str, Any]:
    """torch FSDP (``FullyShardedDataParallel``, peftbench's block wrap policy) in ``case.procs``
    processes on the one device: gloo on CPU (the dry run), NCCL on CUDA."""
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = out / "fsdp-result.json"
    out.mkdir(parents=True, exist_ok=True)
    if case.procs == 1:  # a one-rank process group in this very process: no start-up cost
        fsdp_worker(0, 1, case, scale, str(out), port, str(result))
    else:  # spawn, never fork: a fork after this process ran threads (OpenMP, compile workers) can hang
        ctx = mp.spawn(fsdp_worker, args=(case.procs, case, scale, str(out), port, str(result)), nprocs=case.procs,
                       join=False)
        t_end = time.time() + FSDP_PROCS_TIMEOUT_S
        while not ctx.join(timeout=5):  # raises the first rank's error
            if time.time() > t_end:
                for p in ctx.processes:
                    p.kill()
                raise TimeoutError(f"{case.procs} processes on one device did not finish in "
                                   f"{FSDP_PROCS_TIMEOUT_S} s (a stalled collective?)")
    return json.loads(result.read_text())


# ---- framework overhead on the device: (a) hand loop, (b) peftbench/Lightning, (c) HF Trainer --------
def run_a(plan: Any, model: Any, rows: list[dict[str, Any]], out: Path) -> list[float]:
    """(a) the hand-written loop, fed by the same CPU DataLoader as (b) and (c) (host→device copies included)."""
    import torch

    loader = torch.utils.data.DataLoader(rows, batch_size=int(plan.cfg.data.batch_size), shuffle=False)
    device = next(model.parameters()).device
    return train_steps(model, plan, list(loader), int(plan.cfg.trainer.max_steps), device)


def run_c(plan: Any, model: Any, rows: list[dict[str, Any]], out: Path) -> list[float]:
    """(c) transformers.Trainer: same optimizer (fused where the run's is), schedule, batch, precision;
    no clipping, eval or saving (as in ``peftbench bench``)."""
    import transformers

    o, cuda = plan.optim, next(model.parameters()).device.type == "cuda"
    stamps: list[float] = [time.perf_counter()]

    class _Stamp(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            sync(next(model.parameters()).device)
            stamps.append(time.perf_counter())

    steps = int(plan.cfg.trainer.max_steps)
    args = transformers.TrainingArguments(
        output_dir=str(out / "hf"), max_steps=steps, per_device_train_batch_size=int(plan.cfg.data.batch_size),
        learning_rate=o["lr"], weight_decay=o.get("weight_decay", 0.0), lr_scheduler_type="linear",
        warmup_steps=int(o.get("warmup_ratio", 0.0) * steps), max_grad_norm=0.0, bf16=cuda, use_cpu=not cuda,
        optim="adamw_torch_fused" if o.get("fused") else "adamw_torch", save_strategy="no", report_to="none",
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True, logging_steps=1000, seed=plan.seed)
    transformers.Trainer(model=model, args=args, train_dataset=rows, callbacks=[_Stamp()]).train()
    return stamps


def run_b(plan: Any, model: Any, rows: list[dict[str, Any]], out: Path) -> list[float]:
    return lightning_fit(plan, model, rows, out)


RUNNERS: dict[str, Callable[[Any, Any, list[dict[str, Any]], Path], list[float]]] = {"a": run_a, "b": run_b, "c": run_c}


def measure_overhead(case: Case, scale: Scale, out: Path) -> dict[str, Any]:
    """``scale.rounds`` rounds of (a, b, c) segments of ``scale.segment`` steps on one model, the
    order rotated each round, as ``peftbench bench`` does on CPU; paired per-round ratios."""
    from peftbench.cli.bench_report import summarize

    seg = replace(scale, warmup=min(2, scale.segment - 1), steps=scale.segment - min(2, scale.segment - 1))
    plan = plan_case(case, seg, out)
    device = _device(scale)
    model, _ = adapt(plan, device)
    rows = _rows(token_batches(plan.ctx.hf_config.vocab_size, scale, scale.segment))
    segments = []
    for rnd in range(scale.rounds):
        for k in range(3):
            runner = "abc"[(rnd + k) % 3]
            model.train()
            reset_cuda(device)  # the previous runner's optimizer state goes before this one allocates its own
            stamps = RUNNERS[runner](plan, model, rows, out / f"{rnd}{runner}")
            segments.append({"kind": "segment", "round": rnd, "runner": runner, "method": case.method,
                             "steps": scale.segment, **speed(stamps, seg.warmup, scale.batch * scale.seq)})
            segments[-1]["steps_per_s"] = segments[-1]["tokens_per_s"] / (scale.batch * scale.seq)
    return {"overhead": summarize(segments, [case.method])[0], "segments": segments}


MEASURE: dict[str, Callable[[Case, Scale, Path], dict[str, Any]]] = {
    "loop": measure_loop, "fsdp_lightning": measure_fsdp_lightning, "fsdp_torch": measure_fsdp_torch,
    "overhead": measure_overhead}


def run_case(case: Case, scale: Scale, out: Path) -> dict[str, Any]:
    """One case → one row: its figures, or ``status: error`` with the error (the check goes on)."""
    import traceback

    t0 = time.perf_counter()
    row: dict[str, Any] = {"case": case.name, "group": case.group, "method": case.method, "kind": case.kind,
                           "overrides": list(case.overrides), "note": case.note, **case.options}
    try:
        row.update(MEASURE[case.kind](case, scale, out / case.name), status="ok")
    except Exception as e:  # noqa: BLE001 - a failing measurement is a result; the check goes on
        msg = str(e).strip()
        if len(msg) > 600:  # a child's traceback (torch.multiprocessing): its last line names the error
            msg = msg.splitlines()[-1][:600]
        expected = bool(case.expect_error) and case.expect_error in msg
        row.update(status="expected_error" if expected else "error", error=f"{type(e).__name__}: {msg}",
                   traceback=traceback.format_exc()[-2000:])
    finally:
        _cleanup(scale)
    row["wall_s"] = round(time.perf_counter() - t0, 2)
    return row


def _cleanup(scale: Scale) -> None:
    gc.collect()
    try:
        import torch

        torch._dynamo.reset()  # a compiled case must not leave its graphs to the next
        if scale.cuda:
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001, S110 - best effort: the next case resets again
        pass
