"""Resumable, idempotent sweeps, through the real `peftbench-train` entry point.

- kill -9 a run after it wrote a checkpoint, relaunch the same command: it resumes from that
  checkpoint and ends with the same metrics and adapter tensors as an uninterrupted run (CPU);
- relaunching a finished multirun skips every finished job (files untouched);
- a job that diverges (NaN loss) or raises is recorded as such and the multirun goes on.
Checkpoints hold trainable tensors only (the frozen base is reloaded from its source).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
TRAIN = str(BIN / "peftbench-train")

# 64 examples / batch 8 = 8 batches per epoch; the kill lands mid-epoch after an epoch boundary
# (the hard case: sampler position + epoch + RNG state). 60 steps leave time to kill it.
STEPS = 60
COMMON = ["model=bert", "model_size=tiny", "method=lora", "dataset=sst2", f"trainer.max_steps={STEPS}", "trainer.max_epochs=-1",
          "dataset.train_limit=64", "dataset.val_limit=32", "data.batch_size=8",
          "measure.inference_overhead=false", "checkpoint.every_n_steps=3", "logger=none",
          "trainer.enable_progress_bar=false"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


def _run(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    p = subprocess.run([TRAIN, *args], env=_env(), capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"rc={p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return p


def _adapter_tensors(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted((run_dir / "adapter").glob("*.safetensors"))
    assert files, f"no adapter safetensors in {run_dir / 'adapter'}"
    out = {}
    for f in files:
        out.update({f"{f.name}:{k}": v for k, v in load_file(str(f)).items()})
    return out


def _ckpt_step(path: Path) -> int | None:
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # noqa: BLE001 - being replaced right now: look again
        return None


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("grouped", [False, True], ids=["shuffled", "length_grouped"])
def test_kill_and_resume_equals_uninterrupted(tmp_path, grouped):
    """Both training samplers: plain shuffling and length-grouped batches (its own batch sampler)."""
    import torch

    common = [*COMMON, f"dataset.group_by_length={str(grouped).lower()}"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    _run([*common, f"hydra.run.dir={full}"])
    ref = json.loads((full / "results.json").read_text())
    assert ref["status"] == "ok" and ref["resumed_from_step"] is None, ref.get("error")
    assert not (full / "checkpoints").exists()  # removed once the run finished (checkpoint.keep=false)

    proc = subprocess.Popen([TRAIN, *common, f"hydra.run.dir={killed}", "checkpoint.keep=true"], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    ckpt, step, deadline = killed / "checkpoints" / "last.ckpt", None, time.time() + 900
    try:
        while time.time() < deadline and proc.poll() is None:
            if ckpt.exists() and (step := _ckpt_step(ckpt)) is not None and step >= 9:
                break  # step 9 = epoch 1, batch 1 of 8: mid-epoch, after an epoch boundary
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed (make it longer)"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    step = _ckpt_step(ckpt)  # the checkpoint that is there now (a later one may have landed)
    assert step is not None and 9 <= step < STEPS
    assert not (killed / "results.json").exists()
    # trainable state only: far smaller than the frozen tiny base, and no frozen weight inside
    sd = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert sd and all("lora_" in k or "classifier" in k or "score" in k for k in sd if not k.endswith("position_ids")), \
        sorted(sd)[:20]

    p = _run([*common, f"hydra.run.dir={killed}", "checkpoint.keep=true"])
    rec = json.loads((killed / "results.json").read_text())
    assert rec["status"] == "ok", rec.get("error")
    assert rec["resumed_from_step"] == step, (rec["resumed_from_step"], step, p.stderr[-2000:])
    assert rec["budget"]["optimizer_steps"] == STEPS
    # (run ids differ: checkpoint.keep=true is part of the killed run's config)
    assert rec["metrics"] == ref["metrics"]
    a, b = _adapter_tensors(full), _adapter_tensors(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_relaunched_multirun_skips_finished_and_records_failures(tmp_path):
    sweep = tmp_path / "sweep"
    fast = ["model=bert", "model_size=tiny", "dataset=sst2", "trainer.max_steps=3", "dataset.train_limit=32",
            "dataset.val_limit=16", "data.batch_size=8", "measure.inference_overhead=false", "logger=none",
            "trainer.enable_progress_bar=false", "measure.finite_check_every=1", f"hydra.sweep.dir={sweep}"]
    # job 0 diverges (lr 1e30 → inf/NaN loss), job 1 is refused (unknown optimizer), job 2 is fine:
    # a multirun records each outcome and goes on.
    _run(["-m", *fast, "method=lora", "optim.lr=1e30,5e-4", "optim.name=adamw,bogus"])
    recs = {tuple(json.loads(p.read_text())["config"]["optim"][k] for k in ("lr", "name")): json.loads(p.read_text())
            for p in sweep.glob("*/results.json")}
    assert len(recs) == 4, sorted(recs)
    assert recs[(1e30, "adamw")]["status"] == "diverged", recs[(1e30, "adamw")]["error"]
    assert "loss became" in recs[(1e30, "adamw")]["error"]
    for key in ((1e30, "bogus"), (5e-4, "bogus")):  # refused at plan time, naming the option
        assert recs[key]["status"] == "refused" and "[optim.name]" in recs[key]["error"], recs[key]["error"]
    assert recs[(5e-4, "adamw")]["status"] == "ok", recs[(5e-4, "adamw")]["error"]

    # relaunch a sweep over two methods: the second launch re-runs nothing that finished
    sweep2 = tmp_path / "sweep2"
    args = ["-m", *fast[:-1], f"hydra.sweep.dir={sweep2}", "method=lora,bitfit"]
    _run(args)
    files = sorted(sweep2.glob("*/results.json"))
    assert len(files) == 2
    before = {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files}
    adapters = {f: (f.parent / "adapter").stat().st_mtime_ns for f in files}
    p = _run(args)
    assert p.stderr.count("skipping") + p.stdout.count("skipping") >= 2, p.stderr[-3000:]
    assert {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files} == before
    assert {f: (f.parent / "adapter").stat().st_mtime_ns for f in files} == adapters
