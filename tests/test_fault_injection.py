"""A sweep never lies and never loses: six tiny runs killed at seeded random moments — SIGKILL ten
times, SIGTERM three times — and relaunched after each. After every kill: no finished run was
lost, re-run or altered (its results.json byte for byte); in the end every run is `ok` exactly
once and the report lists all six."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
TRAIN = str(BIN / "peftbench-train")
RUNS = [("lora", 1), ("lora", 2), ("bitfit", 1), ("bitfit", 2), ("ia3", 1), ("ia3", 2)]
SWEEP = ["-m", "model=bert", "model_size=tiny", "dataset=sst2", "method=lora,bitfit,ia3", "seed=1,2",
         "trainer.max_steps=24", "trainer.max_epochs=-1", "dataset.train_limit=64", "dataset.val_limit=16",
         "data.batch_size=8", "measure.inference_overhead=false", "checkpoint.every_n_steps=4", "logger=none",
         "trainer.enable_progress_bar=false"]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def _finished(sweep: Path) -> dict[tuple[str, int], str]:
    """(method, seed) → sha256 of its results.json, for the runs that say ok."""
    out: dict[tuple[str, int], str] = {}
    for f in sweep.glob("*/results.json"):
        data = f.read_bytes()
        rec = json.loads(data)
        if rec["status"] == "ok":
            key = (rec["method"]["name"], rec["seed"])
            assert key not in out, f"{key} finished twice"
            out[key] = hashlib.sha256(data).hexdigest()
    return out


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_kills_at_random_moments_lose_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    rng = random.Random(19)
    signals = [signal.SIGKILL] * 10 + [signal.SIGTERM] * 3
    rng.shuffle(signals)
    finished: dict[tuple[str, int], str] = {}
    for sig in signals:
        p = subprocess.Popen([TRAIN, *SWEEP, f"hydra.sweep.dir={sweep}"], env=_env(), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(3, 30))
        if p.poll() is None:
            os.killpg(p.pid, sig)
        rc = p.wait(timeout=300)
        if sig == signal.SIGTERM and rc not in (0, -signal.SIGTERM):
            assert rc == 143, rc  # a run caught in training records `interrupted` and says so
        now = _finished(sweep)
        for key, digest in finished.items():  # nothing finished is lost, re-run or altered
            assert now.get(key) == digest, (key, sig)
        finished = now
        for f in sweep.glob("*/results.json"):
            assert json.loads(f.read_text())["status"] in ("ok", "interrupted"), f.read_text()[:500]
    p = subprocess.run([TRAIN, *SWEEP, f"hydra.sweep.dir={sweep}"], env=_env(), capture_output=True, text=True,
                       timeout=1200, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-3000:]
    final = _finished(sweep)
    assert sorted(final) == sorted(RUNS)
    assert all(final[k] == v for k, v in finished.items())

    from peftbench.report import build_report

    res = build_report([sweep], tmp_path / "report", formats=("md",), plots=False)
    assert res.n_ok == len(RUNS) and res.n_failed == 0
