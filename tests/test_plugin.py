"""Plugin API: the example package under examples/ adds `method=scaled_bias` with no edit to
peftbench (entry point + Hydra search-path plugin), and a sweep runs with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PLUGIN = ROOT / "examples" / "peftbench-scaled-bias"


@pytest.fixture(scope="module")
def plugin_installed():
    """pip-install the example plugin into this test environment (as a user would)."""
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(PLUGIN)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    yield


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def test_plugin_method_listed_and_counted(plugin_installed):
    out = subprocess.run([sys.executable, "-m", "peftbench.cli.main", "params", "model=gpt2", "model_size=tiny",
                          "method=scaled_bias", "--json"], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # the plugin's conf/ is a package (conf/__init__.py): Hydra reads it without "provider=… is not available"
    assert "is not available" not in out.stderr, out.stderr[-2000:]
    t = json.loads(out.stdout)
    assert t["method"]["name"] == "scaled_bias" and t["method"]["family"] == "selective"
    # δ per adapted bias: tiny GPT-2 (d=64, 2 blocks): c_attn 3d + attn.c_proj d + c_fc 4d + mlp.c_proj d = 9d per block
    # (+ the classification head `score`, 64×2, no bias)
    assert t["params"]["trainable"] == 2 * 9 * 64 + 64 * 2
    listed = subprocess.run([sys.executable, "-m", "peftbench.cli.main", "list", "methods"], capture_output=True, text=True,
                            cwd=ROOT, env=_env(), timeout=120).stdout
    assert "scaled_bias" in listed


def test_plugin_sweep_runs_and_reports(plugin_installed, tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "peftbench.train", "-m", "model=bert", "model_size=tiny", "method=scaled_bias,bitfit",
           "trainer.max_steps=3", "dataset.train_limit=64", "dataset.val_limit=32", "measure.inference_overhead=false",
           "logger=none", "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(p.read_text()) for p in sorted(sweep.rglob("results.json"))]
    assert {x["method"]["name"] for x in recs} == {"scaled_bias", "bitfit"}
    assert all(x["status"] == "ok" for x in recs), [x["error"] for x in recs]
    sb = next(x for x in recs if x["method"]["name"] == "scaled_bias")
    assert sb["params"]["added"] > 0 and sb["params"]["changed"] > 0
