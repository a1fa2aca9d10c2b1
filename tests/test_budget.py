"""Fair budgets (src/peftbench/config/budget.py): effective batch as the unit, precision and gradient
checkpointing by config, OOM recorded as a result while the sweep goes on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FAST = ["trainer.max_steps=3", "dataset.train_limit=64", "dataset.val_limit=32", "data.batch_size=8",
        "measure.inference_overhead=false"]  # as tests/conftest.py FAST
from peftbench.config.budget import Budget, check_gradient_checkpointing, plan_budget
from peftbench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_micro_batch_and_accumulation_derived_from_effective_batch(compose_run):
    b = plan_budget(compose_run("data.effective_batch_size=32", "data.batch_size=12"))
    assert (b.micro_batch_size, b.accumulate_grad_batches, b.effective_batch_size) == (8, 4, 32)
    b = plan_budget(compose_run("data.effective_batch_size=32", "data.micro_batch_size=16"))
    assert (b.micro_batch_size, b.accumulate_grad_batches) == (16, 2)
    b = plan_budget(compose_run("data.batch_size=4", "trainer.accumulate_grad_batches=3"))  # legacy form
    assert (b.micro_batch_size, b.accumulate_grad_batches, b.effective_batch_size) == (4, 3, 12)


@pytest.mark.parametrize("overrides, option", [
    (["data.effective_batch_size=32", "data.micro_batch_size=12"], "data.micro_batch_size"),
    (["data.effective_batch_size=32", "trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches"),
    (["data.micro_batch_size=auto"], "data.effective_batch_size"),
    (["data.effective_batch_size=0"], "data.effective_batch_size"),
    (["trainer.precision=16-mixed", "trainer.accelerator=cpu"], "trainer.precision"),
    (["trainer.precision=8-true"], "trainer.precision"),
])
def test_unfair_or_unrunnable_budgets_are_refused_by_option(compose_run, overrides, option):
    with pytest.raises(ConfigError) as e:
        plan_budget(compose_run(*overrides))
    assert e.value.option == option


def test_auto_halves_micro_batch_and_doubles_accumulation():
    b = Budget(8, 1, 1, 8, "32-true", auto=True)
    seen = []
    while b is not None:
        seen.append((b.micro_batch_size, b.accumulate_grad_batches))
        b = b.halved()
    assert seen == [(8, 1), (4, 2), (2, 4), (1, 8)]
    assert Budget(12, 1, 1, 12, "32-true", auto=True).halved().micro_batch_size == 6


def test_gradient_checkpointing_refused_for_prefix_methods(compose_run):
    cfg = compose_run("model.gradient_checkpointing=true")
    assert check_gradient_checkpointing(cfg) is True
    cfg.method.name = "prefix_tuning"
    with pytest.raises(ConfigError) as e:
        check_gradient_checkpointing(cfg)
    assert e.value.option == "model.gradient_checkpointing"


def test_equal_effective_batch_across_methods_with_different_micro_batches(compose_run):
    """Two methods, micro-batches 8 and 4: same examples per update, same number of updates."""
    from peftbench.train import train

    common = ["model=bert", "model_size=tiny", "dataset.train_limit=64", "dataset.val_limit=16",
              "trainer.max_steps=-1", "trainer.max_epochs=1", "data.effective_batch_size=16",
              "measure.inference_overhead=false", "measure.changed=false"]
    a = train(compose_run(*common, "method=lora", "data.micro_batch_size=8"))
    b = train(compose_run(*common, "method=bitfit", "data.micro_batch_size=4"))
    assert a["status"] == b["status"] == "ok", (a["error"], b["error"])
    assert (a["budget"]["micro_batch_size"], a["budget"]["accumulate_grad_batches"]) == (8, 2)
    assert (b["budget"]["micro_batch_size"], b["budget"]["accumulate_grad_batches"]) == (4, 4)
    for r in (a, b):
        assert r["budget"]["effective_batch_size"] == 16 and r["budget"]["world_size"] == 1
        assert r["budget"]["optimizer_steps"] == 64 // 16  # counted by Lightning, not derived


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_cpu_precisions_run_and_are_recorded(compose_run, precision):
    from peftbench.train import train

    rec = train(compose_run("model=bert", "model_size=tiny", "method=lora", *FAST, "trainer.max_steps=2",
                            f"trainer.precision={precision}", "model.gradient_checkpointing=true"))
    assert rec["status"] == "ok", rec["error"]
    assert rec["budget"]["precision"] == precision and rec["budget"]["gradient_checkpointing"] is True


def test_oom_is_recorded_and_the_sweep_goes_on(tmp_path):
    """A real memory cap (RLIMIT_AS during fit): job 0 (512 × 512 tokens, explicit micro-batch)
    runs out and is recorded ``oom`` with the memory it reached; job 1 (micro_batch_size: auto,
    same effective batch) retries at smaller micro-batches until it fits, and finishes."""
    env = {**os.environ, "PEFTBENCH_MEMORY_LIMIT_MB": "1500", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "peftbench.train", "-m", "model=bert", "model_size=tiny", "method=lora",
           "logger=none", "trainer.enable_progress_bar=false", "measure.inference_overhead=false",
           "measure.changed=false", "dataset.padding=max_length", "dataset.max_length=512",
           "dataset.train_limit=512", "dataset.val_limit=8", "trainer.max_steps=1", "data.eval_batch_size=8",
           "data.effective_batch_size=512", "data.micro_batch_size=512,auto", f"hydra.sweep.dir={tmp_path}"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = [json.loads(p.read_text()) for p in tmp_path.glob("*/results.json")]  # job folders named by overrides
    oom, ok = sorted(recs, key=lambda r: str(r["config"]["data"]["micro_batch_size"]) != "512")
    assert oom["status"] == "oom", oom["error"]
    assert "memory" in oom["error"] and oom["memory"]["memory_limit_mb"] == 1500
    assert oom["memory"]["peak_vm_mb"] > 0 and oom["budget"]["attempts"][0]["micro_batch_size"] == 512
    assert ok["status"] == "ok", ok["error"]
    b = ok["budget"]
    assert b["micro_batch_auto"] and b["attempts"] and b["attempts"][0]["micro_batch_size"] == 512
    assert b["micro_batch_size"] < 512 and b["micro_batch_size"] * b["accumulate_grad_batches"] == 512
    assert b["optimizer_steps"] == 1
