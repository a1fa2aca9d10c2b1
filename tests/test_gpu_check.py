"""The GPU check (``peftbench gpu-check``, scripts/gpu-check.sh) and the GPU edition of the benchmark,
tested where CI runs — on CPU: the dry run takes every path of the check with a tiny model, the
wheel set plus the tree must fit the device's 64 MiB, and every cell of the GPU sweeps plans."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from peftbench.measure.flops import flops_per_token, matmul_params, mfu, peak_bf16_flops

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024**2


# ---- FLOPs and MFU -----------------------------------------------------------------------------------
def test_flops_per_token_charges_weight_gradients_to_trainable_weights_only():
    n, nt = 1000, 10
    assert flops_per_token(n, n) == 6 * n  # full fine-tuning: the classic 6N
    assert flops_per_token(n, nt) == 4 * n + 2 * nt
    assert flops_per_token(n, 0, n_layers=2, d_model=8, context=16) == 4 * n + 3 * 4 * 2 * 8 * 16
    assert flops_per_token(n, nt, 2, 8, 16, training=False) == 2 * n + 4 * 2 * 8 * 16
    with pytest.raises(ValueError):
        flops_per_token(10, 11)


def test_peak_table_matches_device_names():
    assert peak_bf16_flops("NVIDIA H200") == peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_bf16_flops("Tesla T4") is None and peak_bf16_flops(None) is None
    assert mfu(2000.0, 3e9, 12e12) == pytest.approx(0.5)
    assert mfu(None, 3e9, 12e12) is None and mfu(1.0, 3e9, None) is None


def test_matmul_params_skip_lookups_and_count_a_tied_head_once():
    from torch import nn

    emb, body, head = nn.Embedding(10, 4), nn.Linear(4, 4), nn.Linear(4, 10, bias=False)
    untied = nn.ModuleDict({"emb": emb, "body": body, "head": head})
    body.weight.requires_grad_(False)
    assert matmul_params(untied) == {"all": 16 + 4 + 40, "trainable": 4 + 40}
    head.weight = emb.weight  # tied: one tensor, a matmul in the head
    assert matmul_params(untied) == {"all": 16 + 4 + 40, "trainable": 4 + 40}


# ---- fail fast ---------------------------------------------------------------------------------------
def test_check_module_imports_no_third_party_package():
    code = ("import sys, peftbench.cli.gpu_check as g; g.all_cases(); g.build_parser(); "
            "print(sorted(m for m in ('torch', 'hydra', 'omegaconf', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_package_is_named_before_anything_runs(monkeypatch):
    from peftbench.cli import gpu_check

    monkeypatch.setattr(gpu_check, "REQUIRED", (*gpu_check.REQUIRED, "peftbench_no_such_package"))
    with pytest.raises(SystemExit, match=r"peftbench_no_such_package.*gpu-wheels\.sh"):
        gpu_check.preflight(dry_run=True)


def test_real_check_refuses_a_machine_without_cuda():
    import torch

    from peftbench.cli import gpu_check

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_check.preflight(dry_run=False)


# ---- the dry run: every path, tiny model, CPU ----------------------------------------------------------
@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-dry")
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_NO_WHEELS": "1",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--dry-run", "--out", str(out), "--budget-min", "30"],
                       capture_output=True, text=True, env=env, timeout=900, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((out / "gpu.json").read_text()), (out / "gpu.md").read_text()


def _tiny_llama() -> dict:
    fam = yaml.safe_load((ROOT / "conf" / "model" / "llama.yaml").read_text())
    return {**fam["arch_defaults"], **fam["sizes"]["tiny"]["arch"]}


def test_dry_run_records_every_case(dry):
    from peftbench.cli.gpu_check import all_cases

    data, md = dry
    rows = {r["case"]: r for r in data["rows"]}
    cases = all_cases(dry_run=True)
    assert sorted(rows) == sorted(c.name for c in cases)
    for c in cases:
        want = {"skipped"} if not c.dry else ({"expected_error"} if c.expect_error else {"ok"})
        assert rows[c.name]["status"] in want, (c.name, rows[c.name].get("error"))
    assert data["meta"]["dry_run"] is True
    # datasets / submitit / gguf are missing on the device: no peftbench code may look them up
    # (a library's optional probe, e.g. transformers' Trainer for datasets, is skipped there)
    importers = data["meta"]["looked_up_but_absent_on_device"]
    assert not [w for w in importers.values() if "/peftbench/" in w], importers
    assert "No figure below is a GPU measurement" in md and "torch " in md


def test_dry_run_counts_and_flops_follow_the_architecture(dry):
    from peftbench.cli.gpu_measure import DRY

    data, _ = dry
    rows = {r["case"]: r for r in data["rows"]}
    a = _tiny_llama()
    d, L, ff, vocab = a["hidden_size"], a["num_hidden_layers"], a["intermediate_size"], 512  # DRY's vocabulary
    kv = a["num_key_value_heads"] * d // a["num_attention_heads"]
    block = d * d * 2 + d * kv * 2 + 3 * d * ff + 2 * d
    total = 2 * vocab * d + L * block + d  # untied embedding and head, final norm
    r = yaml.safe_load((ROOT / "conf" / "method" / "lora.yaml").read_text())["r"]
    assert rows["method-lora"]["params"]["trainable"] == L * r * ((d + d) + (d + kv))  # q and v
    full = rows["method-full"]
    assert full["params"]["trainable"] == full["params"]["total"] == total
    n = total - vocab * d  # the embedding lookup is no matmul
    assert full["matmul_params"] == full["matmul_trainable"] == n
    assert full["flops_per_token"] == 6 * n + 12 * L * d * DRY.seq
    assert full["mfu"] is None and full["peak_allocated_gib"] is None  # CPU: no peak, no CUDA memory
    assert all(rows[c]["tokens_per_s"] > 0 for c in ("method-lora", "method-ia3", "method-prefix_tuning"))


def test_dry_run_fsdp_and_overhead_paths(dry):
    data, md = dry
    rows = {r["case"]: r for r in data["rows"]}
    assert "uniform `requires_grad`" in rows["fsdp1-torch-mixed"]["error"]
    assert "FSDP needs CUDA" in rows["fsdp1-lightning-lora"]["error"]  # make_plan's refusal on CPU
    two = rows["fsdp2-torch-lora"]
    assert two["world_size"] == 2 and two["backend"] == "gloo" and two["use_orig_params"] is True
    o = rows["overhead-lora"]["overhead"]
    assert all(o[f"{k}_steps_per_s"] > 0 for k in "abc")
    assert o["thr_b_over_a"] == pytest.approx(o["b_steps_per_s"] / o["a_steps_per_s"])
    assert "refused, as expected" in md


# ---- the wheels that travel to the device --------------------------------------------------------------
WHEELS = ("hydra_core", "omegaconf", "antlr4_python3_runtime", "bitsandbytes")


def _pinned_wheels(folder: Path) -> list[Path] | None:
    from importlib.metadata import version

    found = []
    for name in WHEELS:
        v = version(name.replace("_", "-"))
        hits = sorted(folder.glob(f"{name}-{v}-*.whl"))
        if not hits:
            return None
        found.append(hits[0])
    return found


def test_wheels_and_tree_fit_the_device_limit():
    """What travels to the device: the tree (tracked + untracked, not ignored) plus .whl/ ≤ 64 MiB."""
    folder = ROOT / ".whl"
    wheels = _pinned_wheels(folder) if folder.is_dir() else None
    if wheels is None:
        p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-wheels.sh"), str(folder)], capture_output=True,
                           text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=600, check=False)
        wheels = _pinned_wheels(folder) if p.returncode == 0 else None
        if wheels is None:
            pytest.skip(f"pip download of the device wheels failed (offline?): {(p.stderr or p.stdout)[-300:]}")
    ls = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                        check=False)
    if ls.returncode != 0:
        pytest.skip("not a git checkout: the tree's size is unknown")
    files = [ROOT / f for f in ls.stdout.decode().split("\0") if f and (ROOT / f).is_file()]
    tree, whl = sum(f.stat().st_size for f in files), sum(w.stat().st_size for w in wheels)
    assert tree + whl <= 64 * MIB, f"tree {tree / MIB:.1f} MiB + wheels {whl / MIB:.1f} MiB > 64 MiB"


# ---- the GPU edition of the benchmark: sweeps, planning, the GPU-hours estimate ------------------------------
def _sweep(name: str) -> dict:
    text = (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text()
    return yaml.safe_load(text)


def test_gpu_glue_every_cell_plans_and_the_estimate_is_printed(capsys):
    from peftbench.cli.gpu_estimate import main

    y = _sweep("gpu_glue")
    axes = {k: str(v).split(",") for k, v in y["hydra"]["sweeper"]["params"].items()}
    assert len(axes["seed"]) == 5 and {"full", "bitfit", "houlsby", "lora"} <= set(axes["method"])
    assert main(["experiment=gpu_glue"]) == 0  # make_plan on every cell, or it raises
    out = capsys.readouterr().out
    jobs = len(list(itertools.product(*axes.values())))
    cells = jobs // len(axes["seed"])
    assert f"{jobs} jobs in {cells} cells" in out
    row = next(line for line in out.splitlines() if "model_size=base dataset=sst2 method=lora " in line)
    lr, epochs = y["gpu_glue"]["lr"]["base"]["sst2"]["lora"], y["gpu_glue"]["epochs"]["base"]["sst2"]["lora"]
    cols = [c.strip() for c in row.strip("|").split("|")]
    assert float(cols[3]) == lr and float(cols[2]) == epochs
    g = y["gpu_estimate"]
    assert float(cols[5]) == pytest.approx(epochs * g["train_examples"]["sst2"] * g["tokens_per_example"]["sst2"], rel=1e-2)


def test_estimate_uses_a_measured_rate_where_there_is_one(tmp_path):
    from peftbench.cli.gpu_estimate import estimate, measured_rates

    rep = tmp_path / "gpu-nvidia-h200" / "gpu.json"
    rep.parent.mkdir()
    rep.write_text(json.dumps({"meta": {"device": "NVIDIA H200", "dry_run": False}, "rows": [
        {"group": "methods", "method": "lora", "status": "ok", "mfu": 0.5, "peak_flops": 1e15}]}))
    rates = measured_rates(str(tmp_path / "gpu-*" / "gpu.json"))
    assert rates["lora"][0] == 5e14
    est = estimate(["experiment=gpu_sft_llama", "method=lora,full", "seed=1"], rates=rates)  # the command line wins
    cells = {c.label: c.row for c in est["cells"]}
    assert sorted(cells) == ["method=full", "method=lora"] and est["jobs"] == 2
    lora, g = cells["method=lora"], _sweep("gpu_sft_llama")["gpu_estimate"]
    assert "measured NVIDIA H200" in lora["rate_source"] and "assumed" in cells["method=full"]["rate_source"]
    assert lora["gpu_hours"] == pytest.approx(lora["flops"] / 5e14 / 3600 + g["job_overhead_min"] / 60)


def test_gpu_sweeps_submit_through_the_slurm_launcher_with_the_estimate_first(capfd):
    from omegaconf import OmegaConf

    from peftbench.cli.gpu_estimate import EstimateCallback, sweep_config

    cfg = sweep_config(["experiment=gpu_sft_llama"])
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.gpus_per_node == 1
    assert cfg.hydra.callbacks.gpu_estimate._target_ == "peftbench.cli.gpu_estimate.EstimateCallback"
    task = ["experiment=gpu_sft_llama", "method=ia3", "seed=1,2", "hydra/launcher=basic", "hydra.sweep.dir=/tmp/x"]
    EstimateCallback().on_multirun_start(OmegaConf.create({"hydra": {"overrides": {"task": task}}}))
    assert "2 jobs in 1 cells" in capfd.readouterr().out
