"""Framework overhead: peftbench's Lightning path vs a hand-written loop vs Hugging Face ``Trainer``.

Three runners train the *same* model (one from-config BERT, adapted by the same peftbench Method
object), on the *same* tensors (a seeded synthetic batch set), with the same optimizer, schedule,
batch, precision and number of steps:

  (a) a hand-written PyTorch loop — the floor;
  (b) peftbench's path: PeftLitModule + ``L.Trainer`` with the callbacks, loggers, progress
      output and checkpoint callback that ``run.trainer.make_trainer`` gives every run;
  (c) ``transformers.Trainer`` — what a researcher would use instead.

Throughput: one process per method builds the model once and runs short segments of ``steps``
optimizer steps, runner after runner, in rounds (a b c, then b c a, then c a b, …): neighbouring
segments see the same machine, so a paired per-round ratio cancels the drift of a shared VM (more
between processes a minute apart than between neighbouring segments), and the rotation cancels order
effects. Each round's ratios b/a and b/c are paired; the report gives their median and quartiles.
Timestamps are taken at the end of each step, so data loading and every per-step hook of the
framework are inside the measured span (the first ``WARMUP`` steps of each segment — optimizer
state allocation — are not). Peak memory: every runner in its own fresh process (``ru_maxrss`` of
that process), so one runner's peak cannot contaminate another's.

This module measures; ``peftbench.cli.bench_report`` pairs the measurements and writes overhead.md.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from peftbench.cli.bench_report import RUNNERS, markdown, summarize, targets
from peftbench.run.allocator import MODES as ALLOCATORS
from peftbench.run.allocator import keep_freed_memory  # ctypes + platform only
from peftbench.run.record import package_versions

# Compute dominates a step on CPU (16 × 128 tokens through 2 blocks of width 128) while a round
# stays short on a shared 2-core machine; the vocabulary embedding alone is 3.9 M parameters.
BENCH_ARCH = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512}
SEQ_LEN = 128
BATCH = 16
WARMUP = 2


# ---- shared set-up (child process) -------------------------------------------------------------
def bench_overrides(method: str, steps: int, batch: int = BATCH, allocator: str = "keep") -> list[str]:
    """Hydra overrides for the bench model and run (data files are only read for labels/limits)."""
    arch = [f"model.sizes.tiny.arch.{k}={v}" for k, v in BENCH_ARCH.items()]
    return ["model=bert", "model_size=tiny", *arch, f"method={method}", "dataset=sst2", f"data.batch_size={batch}",
            f"trainer.max_steps={steps}", "dataset.train_limit=64", "dataset.val_limit=32",
            "measure.inference_overhead=false", "measure.changed=false",
            f"perf.keep_freed_memory={str(allocator == 'keep').lower()}"]


def synthetic_rows(n: int, vocab: int, seq_len: int = SEQ_LEN, num_labels: int = 2, seed: int = 0) -> list[dict]:
    """The fixed example set: identical tensors in every runner and every process (seeded)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (n, seq_len), generator=g)
    labels = torch.randint(0, num_labels, (n,), generator=g)
    mask = torch.ones(seq_len, dtype=torch.long)
    return [{"input_ids": ids[i], "attention_mask": mask, "labels": labels[i]} for i in range(n)]


@dataclass
class Setup:
    cfg: Any
    plan: Any
    model: Any
    rows: list
    batch: int
    steps: int
    out: Path
    rss_before_mb: float = 0.0
    extra: dict = field(default_factory=dict)


def build_setup(method: str, steps: int, out: Path, batch: int = BATCH, allocator: str = "keep") -> Setup:
    """The model exactly as every run builds it: make_plan, then the pipeline's load-and-adapt stage."""
    from peftbench.config.compose import compose
    from peftbench.config.plan import make_plan
    from peftbench.measure.memory import current_rss_mb
    from peftbench.run.pipeline import load_and_adapt

    cfg = compose(bench_overrides(method, steps, batch, allocator), output_dir=str(out))
    plan = make_plan(cfg, out)
    adapted = load_and_adapt(plan, {})
    adapted.model.train()
    rows = synthetic_rows(steps * batch, len(adapted.tokenizer), num_labels=plan.num_labels)
    return Setup(cfg, plan, adapted.model, rows, batch, steps, out, rss_before_mb=current_rss_mb())


def _loader(s: Setup):
    import torch

    return torch.utils.data.DataLoader(s.rows, batch_size=s.batch, shuffle=False, num_workers=0)


# ---- the three runners ------------------------------------------------------------------------
def run_a(s: Setup) -> list[float]:
    """(a) The floor: forward, backward, AdamW, schedule, zero_grad; nothing else."""
    import torch

    from peftbench.lit.optim import lr_factor

    o = s.plan.optim
    params = [p for p in s.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=o["lr"], weight_decay=o.get("weight_decay", 0.0),
                            betas=tuple(o.get("betas", (0.9, 0.999))), eps=o.get("eps", 1e-8))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor("linear", s.steps, o.get("warmup_ratio", 0.0)))
    hook = s.plan.method.on_train_step_end
    stamps: list[float] = []
    for i, batch in enumerate(_loader(s)):
        loss = s.model(**batch).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        hook(s.model, i + 1)
        stamps.append(time.perf_counter())
    return stamps


def lightning_path(s: Setup, extra_callbacks: tuple = ()) -> tuple[Any, Any]:
    """(b)'s LightningModule and ``run.trainer.make_trainer`` parts — the very Trainer every run gets."""
    from peftbench.lit import PeftLitModule
    from peftbench.lit.tasks import make_task
    from peftbench.run.pipeline import prepare
    from peftbench.run.trainer import make_trainer

    plan = replace(s.plan, out=s.out)  # each segment its own folder: (b) must not resume a checkpoint
    lit = PeftLitModule(s.model, make_task(plan.task, plan.num_labels), plan.optim, step_hook=plan.method.on_train_step_end)
    strategy, loggers, callbacks = prepare(plan)
    parts = make_trainer(plan, lit, _loader(s), strategy, loggers, t_start=time.perf_counter(),
                         extra_callbacks=(*callbacks, *extra_callbacks))
    return lit, parts


def run_b(s: Setup) -> list[float]:
    """(b) peftbench: ``lightning_path``, fitted."""
    import lightning as L

    stamps: list[float] = []

    class _Stamp(L.Callback):  # last callback: the stamp follows every hook of the step
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            stamps.append(time.perf_counter())

    lit, parts = lightning_path(s, (_Stamp(),))
    parts.trainer.fit(lit, train_dataloaders=parts.train_loader, ckpt_path=parts.ckpt_path)
    return stamps


def run_c(s: Setup) -> list[float]:
    """(c) transformers.Trainer with the same optimizer, schedule and batch; no eval, no saving, and no
    gradient clipping (its default max_grad_norm=1.0 would add a norm over all gradients that (a)
    and (b) do not compute)."""
    import transformers

    o = s.plan.optim
    stamps: list[float] = []

    class _Stamp(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    args = transformers.TrainingArguments(
        output_dir=str(s.out / "hf"), max_steps=s.steps, per_device_train_batch_size=s.batch,
        learning_rate=o["lr"], weight_decay=o.get("weight_decay", 0.0), adam_beta1=o["betas"][0],
        adam_beta2=o["betas"][1], adam_epsilon=o.get("eps", 1e-8), lr_scheduler_type="linear",
        warmup_steps=int(o.get("warmup_ratio", 0.0) * s.steps), optim="adamw_torch", logging_steps=25,
        max_grad_norm=0.0,
        save_strategy="no", report_to="none", use_cpu=True, dataloader_num_workers=0,
        remove_unused_columns=False, disable_tqdm=True, seed=int(s.cfg.seed))
    trainer = transformers.Trainer(model=s.model, args=args, train_dataset=s.rows, callbacks=[_Stamp()])
    trainer.train()
    return stamps


RUN = {"a": run_a, "b": run_b, "c": run_c}


def _steps_per_s(stamps: list[float], steps: int, t0: float) -> float:
    if len(stamps) != steps:
        raise RuntimeError(f"ran {len(stamps)} steps, expected {steps}")
    w = min(WARMUP, steps - 1)
    return (steps - w) / (stamps[-1] - stamps[w - 1] if w > 0 else stamps[-1] - t0)


def worker(runner: str, method: str, steps: int, out: Path, batch: int = BATCH,
           allocator: str = "keep") -> dict[str, Any]:
    """One runner in a fresh process: its peak RSS (and, noisier, its steps/s after warm-up). Each
    runner as a user would run it: (b) with peftbench's allocator setting, (a) and (c) glibc's."""
    t0 = time.perf_counter()
    s = build_setup(method, steps, out, batch, allocator)
    setup_s = time.perf_counter() - t0
    rate = _steps_per_s(RUN[runner](s), steps, t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"kind": "memory", "runner": runner, "method": method, "steps": steps, "steps_per_s": rate,
            "peak_rss_mb": peak, "rss_before_train_mb": s.rss_before_mb, "setup_s": setup_s}


def segments_worker(method: str, steps: int, rounds: int, out: Path, batch: int = BATCH,
                    allocator: str = "keep") -> dict[str, Any]:
    """All three runners in one process on one model: ``rounds`` rounds of a ``steps``-step segment
    each, the order rotated every round (a b c, b c a, c a b, …).

    The malloc setting is process-wide, so all three share it: ``keep`` applies peftbench's
    ``perf.keep_freed_memory`` before the first segment (the ratio is then the frameworks' own
    per-step cost), ``default`` leaves glibc's dynamic thresholds for all three (and turns the
    setting off in (b)), which shows what the allocator alone costs each path."""
    if allocator == "keep":
        keep_freed_memory()
    s = build_setup(method, steps, out / "setup", batch, allocator)
    segs = []
    for rnd in range(rounds):
        for k in range(len(RUNNERS)):
            runner = RUNNERS[(rnd + k) % len(RUNNERS)]
            seg = replace(s, out=out / f"{rnd}{runner}")  # fresh dirs: (b) must not resume a checkpoint
            seg.model.train()  # a runner may leave it in eval mode
            t0 = time.perf_counter()
            segs.append({"kind": "segment", "round": rnd, "runner": runner, "method": method, "steps": steps,
                         "steps_per_s": _steps_per_s(RUN[runner](seg), steps, t0)})
    return {"segments": segs}


# ---- data set-up: cached tokenization -----------------------------------------------------------
def data_setup_worker(cache: Path) -> dict[str, Any]:
    """TaskDataModule.setup on the full SST-2 train/validation splits with this cache dir.

    ``import datasets`` (~0.6 s here, pandas included) is timed apart: every process pays it once,
    cached or not, and a local Hydra multirun runs its jobs in one process, paying it once per sweep.
    """
    from peftbench.config.compose import compose
    from peftbench.config.plan import make_plan
    from peftbench.data.datamodule import TaskDataModule
    from peftbench.models import load_tokenizer

    cfg = compose(["model=bert", "model_size=tiny", "method=lora", "dataset=sst2"], output_dir=str(cache))
    plan = make_plan(cfg)
    dm = TaskDataModule(plan.dataset, plan.data_dir, batch_size=16, cache_dir=cache, examples=plan.examples)
    dm.set_tokenizer(load_tokenizer(plan.spec))
    t = time.perf_counter()
    import datasets  # noqa: F401

    import_s = time.perf_counter() - t
    t = time.perf_counter()
    dm.setup("fit")
    return {"setup_s": time.perf_counter() - t, "import_datasets_s": import_s,
            "rows": {k: len(v) for k, v in dm.splits.items()}}


# ---- parent: run the children in turn (their results are paired and rendered in bench_report) ------
def _child(args: list[str], timeout: float = 1800, threads: int = 0) -> dict[str, Any]:
    env = dict(os.environ)
    if threads > 0:  # the OpenMP/MKL pools are sized at start-up: set them before the child imports torch
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory(prefix="pb-bench-") as tmp:
        res = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "peftbench.cli.bench", *args, "--tmp", tmp, "--result", str(res)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if p.returncode != 0 or not res.exists():
            tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
            return {"error": " | ".join(tail) or f"exit {p.returncode}"}
        return json.loads(res.read_text())


def _cli_path() -> list[str]:
    exe = shutil.which("peftbench") or str(Path(sys.executable).with_name("peftbench"))
    return [exe] if Path(exe).exists() else [sys.executable, "-m", "peftbench.cli.main"]


def startup_seconds(sub: str, repeats: int = 5) -> float:
    """Min wall time of ``peftbench <sub> --help`` over ``repeats`` fresh processes."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([*_cli_path(), sub, "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return min(times)


def first_step_seconds(steps: int = 3) -> dict[str, Any]:
    """A real ``peftbench-train`` run of the bench model: results.json timings (first_step_s …)."""
    with tempfile.TemporaryDirectory(prefix="pb-bench-train-") as tmp:
        exe = shutil.which("peftbench-train") or str(Path(sys.executable).with_name("peftbench-train"))
        cmd = [exe, *bench_overrides("lora", steps, 8), f"hydra.run.dir={tmp}", "logger=csv"]
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        f = Path(tmp) / "results.json"
        if p.returncode != 0 or not f.exists():
            return {"error": (p.stderr or p.stdout).strip().splitlines()[-1:] or ["?"]}
        rec = json.loads(f.read_text())
        return {**{k: v for k, v in rec.get("timings", {}).items() if isinstance(v, (int, float))},
                "process_wall_s": wall}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    vers = package_versions("torch", "lightning", "transformers", "peft", "bitsandbytes", "datasets")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "versions": vers,
            "loadavg": [round(x, 2) for x in load] if load else None}


def _check_bench_args(methods: list[str], steps: int, rounds: int, memory_rounds: int, threads: int,
                      allocator: str) -> None:
    from peftbench.errors import ConfigError
    from peftbench.methods.registry import available_methods

    unknown = [m for m in methods if m not in available_methods()]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; known: {available_methods()}", option="--methods")
    if steps < 2 or rounds < 1 or memory_rounds < 1:
        raise ConfigError("need --steps ≥ 2, --rounds ≥ 1 and --memory-rounds ≥ 1", option="--steps")
    if threads < 0:
        raise ConfigError("--threads must be ≥ 0 (0 = torch's default)", option="--threads")
    if allocator not in ALLOCATORS:
        raise ConfigError(f"--allocator must be one of {list(ALLOCATORS)}", option="--allocator")


def _segments(method: str, base: list[str], rounds: int, threads: int, log) -> list[dict[str, Any]]:
    """Throughput: one child runs ``rounds`` rotated a b c rounds on one model."""
    r = _child(["--segments", "--rounds", str(rounds), *base], timeout=1800 * rounds, threads=threads)
    segs = r.get("segments") or [{"kind": "segment", "method": method, "error": r.get("error", "no segments")}]
    for x in RUNNERS:
        rates = [f"{g['steps_per_s']:.2f}" for g in segs if g.get("runner") == x]
        log(f"{method:<14} {x} steps/s by round: " + (" ".join(rates) or f"error {segs[0].get('error')}"))
    return segs


def _peak_memory(method: str, base: list[str], memory_rounds: int, threads: int, log) -> list[dict[str, Any]]:
    """Peak memory: every runner in its own fresh child, ``memory_rounds`` times."""
    results = []
    for rnd in range(memory_rounds):
        for x in RUNNERS:
            r = _child(["--worker", x, *base], threads=threads)
            r.update(kind="memory", round=rnd, runner=x, method=method)
            log(f"{method:<14} {x} fresh process {rnd + 1}/{memory_rounds}: " +
                (f"peak {r['peak_rss_mb']:.0f} MiB" if "error" not in r else f"error {r['error']}"))
            results.append(r)
    return results


def data_setup_lines(threads: int) -> dict[str, str]:
    """Two fresh processes set up SST-2 on one cache: the second must read what the first wrote."""
    with tempfile.TemporaryDirectory(prefix="pb-bench-cache-") as cache:
        d1 = _child(["--data-setup", "--cache", cache], threads=threads)
        d2 = _child(["--data-setup", "--cache", cache], threads=threads)
    if "error" in d1 or "error" in d2:
        return {"data setup": f"error: {d1.get('error') or d2.get('error')}"}
    i1, i2 = d1["import_datasets_s"], d2["import_datasets_s"]
    return {
        "data setup (SST-2 train + validation, fresh process each) run 1 / run 2 s":
            f"{d1['setup_s']:.2f} / {d2['setup_s']:.3f} → ratio {d2['setup_s'] / d1['setup_s']:.3f} (target ≤ 0.1)",
        "`import datasets` before it (once per process, cached or not) run 1 / run 2 s":
            f"{i1:.2f} / {i2:.2f}; counting it in both: ratio {(d2['setup_s'] + i2) / (d1['setup_s'] + i1):.3f}",
    }


def startup_and_data(threads: int) -> dict[str, Any]:
    """The report's "Start-up and data" section: cached data set-up, CLI start-up, a real run's timings."""
    extra: dict[str, Any] = data_setup_lines(threads)
    for sub in ("report", "params"):
        s = startup_seconds(sub)
        extra[f"`peftbench {sub} --help` (min of 5) s"] = f"{s:.3f} (target < 1)"
    extra["peftbench-train (bench model, lora, 3 steps) timings s"] = first_step_seconds()
    return extra


def run_bench(methods: list[str], steps: int = 20, rounds: int = 8, out: Path | None = None,
              batch: int = BATCH, extras: bool = True, command: str | None = None,
              log=print, threads: int = 1, memory_rounds: int = 1, allocator: str = "keep") -> dict[str, Any]:
    """Per method: ``rounds`` in-process a b c rounds (throughput) and ``memory_rounds`` fresh-process
    runs per runner (peak memory); writes ``overhead.md`` + ``overhead.json`` under ``out``.

    ``threads``: intra-op threads of every child (0 = torch's default). One by default: with as many
    threads as cores, any other process on the machine stalls every OpenMP barrier, and the per-round
    spread on a 2-core VM was ±15–25 % (one thread: a few %), too wide to decide a 3 % target."""
    _check_bench_args(methods, steps, rounds, memory_rounds, threads, allocator)
    meta: dict[str, Any] = {"command": command or "peftbench bench", "machine": machine(), "steps": steps,
                            "rounds": rounds, "memory_rounds": memory_rounds, "batch": batch, "threads": threads,
                            "allocator": allocator}
    results: list[dict[str, Any]] = []
    for m in methods:
        base = ["--method", m, "--steps", str(steps), "--batch", str(batch), "--threads", str(threads),
                "--allocator", allocator]
        results += _segments(m, base, rounds, threads, log)
        results += _peak_memory(m, base, memory_rounds, threads, log)
    rows = summarize(results, methods)
    meta["targets"] = targets(rows)
    meta["extra"] = startup_and_data(threads) if extras else {}
    text = markdown(rows, meta, arch=BENCH_ARCH, seq_len=SEQ_LEN, warmup=WARMUP)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "overhead.md").write_text(text)
        (out / "overhead.json").write_text(json.dumps({"meta": meta, "rows": rows, "results": results}, indent=2))
    return {"rows": rows, "markdown": text, "meta": meta, "results": results}


def _main(argv: list[str] | None = None) -> None:
    """Child-process entry: ``--worker RUNNER --method M``, ``--segments --method M --rounds N`` or
    ``--data-setup --cache DIR``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m peftbench.cli.bench")
    p.add_argument("--worker", choices=RUNNERS)
    p.add_argument("--method")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--segments", action="store_true")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--data-setup", action="store_true")
    p.add_argument("--cache")
    p.add_argument("--allocator", choices=ALLOCATORS, default="keep")
    p.add_argument("--tmp", required=True)
    p.add_argument("--result", required=True)
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.threads > 0:
        import torch

        torch.set_num_threads(a.threads)
    if a.data_setup:
        res = data_setup_worker(Path(a.cache))
    elif a.segments:
        res = segments_worker(a.method, a.steps, a.rounds, Path(a.tmp), a.batch, a.allocator)
    else:
        res = worker(a.worker, a.method, a.steps, Path(a.tmp), a.batch, a.allocator)
    Path(a.result).write_text(json.dumps(res))


if __name__ == "__main__":
    _main()
