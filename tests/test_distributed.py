"""Real 2-process DDP on CPU (gloo) through `peftbench-train`, single runs and a local multirun.

Lightning starts rank 1 by re-running the script; train.py makes that re-run use this job's own
overrides, so a `-m` sweep of DDP jobs neither restarts the sweep in rank 1 nor hangs on job 2
(the DESIGN pitfall "Hydra multirun + Lightning DDP").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed

BIN = Path(sys.executable).parent
TRAIN = str(BIN / "peftbench-train")
BS = 8
VAL = 31  # odd: a padded DistributedSampler would score one row twice
DDP = ["model=bert", "model_size=tiny", "dataset=sst2", "strategy=ddp", "trainer.devices=2",
       "trainer.accelerator=cpu", "trainer.max_steps=6", "dataset.train_limit=96", f"dataset.val_limit={VAL}",
       f"data.batch_size={BS}", "measure.inference_overhead=false", "logger=none",
       "trainer.enable_progress_bar=false", "measure.curve_points=3", "measure.curve_max_examples=9"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    p = subprocess.run([TRAIN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"rc={p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return p


def _check_eval_records(rec: dict) -> None:
    """Every validation row scored exactly once over both ranks, in the predictions file and in
    the metric; the curve measured at the 3 requested steps."""
    import gzip

    out = Path(rec["config"]["paths"]["output_dir"])
    p = json.loads(gzip.decompress((out / rec["eval"]["val"]["predictions"]).read_bytes()))
    assert p["ids"] == list(range(VAL)) and rec["eval"]["val"]["n"] == VAL
    acc = sum(a == b for a, b in zip(p["label"], p["pred"])) / VAL
    assert abs(acc - rec["metrics"]["val/acc"]) < 1e-6, (acc, rec["metrics"]["val/acc"])
    assert [s for s, _ in rec["curves"]["val"]["points"]] == [2, 4, 6] and rec["curves"]["val"]["subset"] == 9
    assert [s for s, _ in rec["curves"]["train_loss"]] == list(range(1, 7))


def _check(rec: dict, method: str) -> None:
    assert rec["status"] == "ok", rec.get("error")
    assert rec["method"]["name"] == method
    assert rec["env"]["world_size"] == 2 and rec["budget"]["world_size"] == 2
    assert rec["budget"]["effective_batch_size"] == 2 * BS
    assert rec["metrics"].get("val/acc") is not None and rec["metrics"].get("val/loss") is not None
    s = rec["speed"]
    assert s["steps_measured"] >= 1 and s["train_samples_per_s"] > 0
    # global throughput: both ranks' samples of the timed steps over the slower rank's time
    # (exact, unlike a ratio to the median step time, which other load on the cores can skew)
    assert s["train_samples_per_s"] * s["train_time_s"] == pytest.approx(2 * BS * s["steps_measured"])
    _check_eval_records(rec)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("method,extra", [("lora", []),
                                          ("adapter_drop", ["method.drop_at=train"])],
                         ids=["lora", "adapter_drop_find_unused"])
def test_ddp_two_processes(tmp_path, method, extra):
    """adapter_drop skips some adapters in a training step: it needs find_unused_parameters
    (chosen per method), or DDP fails with "Expected to have finished reduction"."""
    out = tmp_path / "run"
    _run([*DDP, f"method={method}", *extra, f"hydra.run.dir={out}"], cwd=tmp_path)
    files = list(tmp_path.rglob("results.json"))
    assert files == [out / "results.json"], files  # written once, by rank 0, in the job dir
    rec = json.loads(files[0].read_text())
    _check(rec, method)


@pytest.mark.timeout(900)
def test_ddp_length_grouped_epoch_is_split_over_ranks(tmp_path):
    """Length-grouped batches under DDP: Lightning cannot inject a DistributedSampler into a batch
    sampler, so it splits each epoch over the ranks itself; one epoch of 96 rows is then 6 steps
    of 2 × 8 (12 if every rank ran the whole epoch)."""
    out = tmp_path / "run"
    args = [a for a in DDP if not a.startswith("trainer.max_steps")]
    _run([*args, "method=lora", "dataset.group_by_length=true", "trainer.max_epochs=1", f"hydra.run.dir={out}"],
         cwd=tmp_path)
    rec = json.loads((out / "results.json").read_text())
    assert rec["budget"]["optimizer_steps"] == 6
    _check(rec, "lora")


@pytest.mark.timeout(900)
def test_local_multirun_of_ddp_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    _run(["-m", *DDP, "method=lora,bitfit", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    files = sorted(tmp_path.rglob("results.json"))
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert files == [j / "results.json" for j in jobs] and len(jobs) == 2, files  # one folder per job
    recs = {json.loads(f.read_text())["method"]["name"]: json.loads(f.read_text()) for f in files}
    for method in ("lora", "bitfit"):
        _check(recs[method], method)
    # job folders are named by the job's overrides (a hash when too long), never by position:
    # no stray output dirs from the relaunched ranks either
    assert not any(j.name.isdigit() for j in jobs)
    assert not (tmp_path / "outputs").exists()
