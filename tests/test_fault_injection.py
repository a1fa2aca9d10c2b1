"""A sweep never lies and never loses: six tiny runs killed at seeded random moments — SIGKILL ten
times, SIGTERM three times, always while a run is training — and relaunched after each. After every
kill: no finished run was lost, re-run or altered (its results.json and adapter, byte for byte); a
SIGTERM is recorded `interrupted` and ends the process with 143; in the end every run is `ok`
exactly once and the report lists all six."""

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
RUNS = [("bitfit", 1), ("bitfit", 2), ("ia3", 1), ("ia3", 2), ("lora", 1), ("lora", 2)]
SWEEP = ["-m", "model=bert", "model_size=tiny", "dataset=sst2", "method=lora,bitfit,ia3", "seed=1,2",
         "trainer.max_steps=800", "trainer.max_epochs=-1", "dataset.train_limit=64", "dataset.val_limit=16",
         "data.batch_size=8", "measure.inference_overhead=false", "checkpoint.every_n_steps=20", "logger=none",
         "trainer.enable_progress_bar=false"]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def _finished(sweep: Path) -> dict[tuple[str, int], str]:
    """(method, seed) → a digest of its results.json and adapter files, for the runs that say ok."""
    out: dict[tuple[str, int], str] = {}
    for f in sorted(sweep.glob("*/results.json")):
        rec = json.loads(f.read_bytes())
        if rec["status"] != "ok":
            continue
        key = (rec["method"]["name"], rec["seed"])
        assert key not in out, f"{key} finished twice"
        h = hashlib.sha256(f.read_bytes())
        for a in sorted((f.parent / "adapter").rglob("*")):
            if a.is_file():
                h.update(a.name.encode() + a.read_bytes())
        out[key] = h.hexdigest()
    return out


def _training(sweep: Path, since: float) -> bool:
    """Some run of this launch is in its training loop (it wrote a checkpoint since the launch)."""
    return any(c.stat().st_mtime > since for c in sweep.glob("*/checkpoints/*.ckpt"))


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_kills_at_random_moments_lose_nothing(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    rng = random.Random(19)
    signals = [signal.SIGKILL] * 10 + [signal.SIGTERM] * 3
    rng.shuffle(signals)
    finished: dict[tuple[str, int], str] = {}
    mid_training = 0
    for sig in signals:
        since = time.time()
        p = subprocess.Popen([TRAIN, *SWEEP, f"hydra.sweep.dir={sweep}"], env=_env(), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.time() + 300
            while p.poll() is None and not _training(sweep, since) and time.time() < deadline:
                time.sleep(0.2)  # wait until a run trains: kills during start-up test nothing
            time.sleep(rng.uniform(0, 3))  # then a random moment of its training (a run trains ~10 s)
            if p.poll() is None:
                mid_training += 1
                os.killpg(p.pid, sig)
            rc = p.wait(timeout=300)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if sig == signal.SIGTERM and rc != 0:
            assert rc == 143, rc  # caught: exit 143 (never 0 unrecorded)
            # the run it stopped is recorded `interrupted`, unless it landed after a run had written its
            # `ok` record (while printing the summary, or between two jobs of the sweep): then a run finished
            interrupted = any(json.loads(f.read_text())["status"] == "interrupted" for f in sweep.glob("*/results.json"))
            assert interrupted or len(_finished(sweep)) > len(finished), "SIGTERM exit 143 with nothing recorded"
        now = _finished(sweep)
        for key, digest in finished.items():  # nothing finished is lost, re-run or altered
            assert now.get(key) == digest, (key, sig)
        finished = now
        for f in sweep.glob("*/results.json"):
            assert json.loads(f.read_text())["status"] in ("ok", "interrupted"), f.read_text()[:500]
    assert mid_training >= 10, mid_training  # the kills really landed while runs were training
    p = subprocess.run([TRAIN, *SWEEP, f"hydra.sweep.dir={sweep}"], env=_env(), capture_output=True, text=True,
                       timeout=1200, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-3000:]
    final = _finished(sweep)
    assert sorted(final) == RUNS
    assert all(final[k] == v for k, v in finished.items())
    assert any(json.loads(f.read_text())["resumed_from_step"] for f in sweep.glob("*/results.json"))

    from peftbench.report import build_report

    res = build_report([sweep], tmp_path / "report", formats=("md",), plots=False)
    assert res.n_ok == len(RUNS) and res.n_failed == 0
