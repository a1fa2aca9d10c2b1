"""SLURM launcher tests on a real one-node SLURM cluster on localhost.

    scripts/slurm.sh start           # once (root; installs slurm + munge with apt when missing)
    pytest -m slurm tests/test_slurm.py

The module fixture starts the cluster itself when `sinfo` does not answer (root + apt needed,
else the tests are skipped with the reason). Each sweep job is one SLURM job whose 2 DDP ranks
are started by srun (tasks_per_node = trainer.devices), so Lightning's SLURMEnvironment must
report world size 2. See docs/slurm.md.

`test_launcher_configs_compose` needs no cluster and runs with the default test selection.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SLURM_SH = ROOT / "scripts" / "slurm.sh"
BIN = Path(sys.executable).parent
DATA_DIR = os.environ.get("PEFTBENCH_DATA_DIR", "/work/shared/data")
SWEEP_TIMEOUT_S = int(os.environ.get("PEFTBENCH_SLURM_TEST_TIMEOUT", "1200"))


def _sinfo_ok() -> bool:
    """True when slurmctld answers and the partition has a usable node."""
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True,
                             timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = out.stdout.split()
    return out.returncode == 0 and any(s.rstrip("*~#").startswith(("idle", "mix", "alloc", "comp"))
                                       for s in states)


@pytest.fixture(scope="module")
def slurm_cluster():
    """A SLURM cluster that answers; started by scripts/slurm.sh when needed (and stopped after)."""
    if _sinfo_ok():
        yield
        return
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("no SLURM cluster answers and not root: run `sudo scripts/slurm.sh start` first")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("no SLURM cluster answers, slurm is not installed and there is no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "CI": os.environ.get("CI", "true")}
    proc = subprocess.run(["bash", str(SLURM_SH), "start"], capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL, env=env)
    if proc.returncode != 0 or not _sinfo_ok():
        pytest.fail(f"scripts/slurm.sh start failed (rc={proc.returncode}):\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    yield
    if os.environ.get("PEFTBENCH_SLURM_KEEP") != "1":
        subprocess.run(["bash", str(SLURM_SH), "stop"], capture_output=True, timeout=120,
                       stdin=subprocess.DEVNULL)


def _subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env.update(PEFTBENCH_DATA_DIR=DATA_DIR, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return env


def _run(cmd: list[str], cwd: Path, timeout: int = SWEEP_TIMEOUT_S) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_subprocess_env(), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        logs = ""
        for f in sorted(cwd.rglob("*_log.*"))[:8]:  # submitit logs of each rank
            logs += f"\n---- {f}\n{f.read_text(errors='replace')[-3000:]}"
        pytest.fail(f"{' '.join(cmd)} -> rc={proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n"
                    f"stderr:\n{proc.stderr[-6000:]}{logs}")
    return proc


# --------------------------------------------------------------------------- no cluster needed


def test_launcher_configs_compose(tmp_path):
    """The three launcher configs compose onto the plugin schemas with our defaults."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    (tmp_path / "config.yaml").write_text(textwrap.dedent(f"""\
        hydra:
          searchpath: ["file://{CONF}"]
        trainer:
          devices: 2
        """))
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
            for name, target in [("basic", "BasicLauncher"), ("submitit_local", "LocalLauncher"),
                                 ("submitit_slurm", "SlurmLauncher")]:
                with pytest.warns(UserWarning, match="schema") if name != "basic" else _nullctx():
                    cfg = compose("config", overrides=[f"hydra/launcher={name}",
                                                       "hydra.sweep.dir=/x/sweep"],
                                  return_hydra_config=True)
                launcher = cfg.hydra.launcher
                assert launcher._target_.endswith(target)
                if name == "submitit_slurm":
                    resolved = _launcher(cfg)
                    assert resolved["tasks_per_node"] == 2  # follows trainer.devices
                    assert resolved["partition"] == "debug"
                    assert resolved["gpus_per_node"] == 0
                    assert resolved["submitit_folder"].startswith("/x/sweep/")
                    assert resolved["name"] not in ("bash", "interactive")
                    assert resolved["signal_delay_s"] > 0 and resolved["max_num_timeout"] >= 1
            cfg = compose("config", overrides=["hydra/launcher=submitit_slurm", "~trainer.devices",
                                               "hydra.launcher.partition=gpu"],
                          return_hydra_config=True)
            resolved = _launcher(cfg)
            assert resolved["tasks_per_node"] == 1  # no trainer.devices -> 1
            assert resolved["partition"] == "gpu"
    finally:
        GlobalHydra.instance().clear()


def _launcher(cfg) -> dict:
    """hydra.launcher with interpolations resolved against the whole config (as Hydra does)."""
    from omegaconf import OmegaConf

    return {k: OmegaConf.select(cfg, f"hydra.launcher.{k}") for k in cfg.hydra.launcher}


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------- real SLURM

_MINI_APP = '''
import json, os
import hydra

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    import torch, lightning as L
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    class M(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        def training_step(self, batch, i):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    ds = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    trainer = L.Trainer(accelerator="cpu", strategy="ddp", devices=cfg.trainer.devices, num_nodes=1,
                        max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(M(), torch.utils.data.DataLoader(ds, batch_size=8))
    out = os.path.join(cfg.out_dir, f"x{cfg.x}_rank{trainer.global_rank}.json")
    with open(out, "w") as f:
        json.dump({"x": cfg.x, "world_size": trainer.world_size, "rank": trainer.global_rank,
                   "env": type(trainer.strategy.cluster_environment).__name__,
                   "detect": SLURMEnvironment.detect()}, f)

if __name__ == "__main__":
    main()
'''


@pytest.mark.slurm
@pytest.mark.distributed
def test_minimal_hydra_ddp_app_on_slurm(slurm_cluster, tmp_path):
    """Mechanics without peftbench: a Hydra multirun of 2 jobs, each a 2-rank DDP fit on CPU."""
    app = tmp_path / "app"
    (app / "conf" / "hydra").mkdir(parents=True)
    shutil.copytree(CONF / "hydra" / "launcher", app / "conf" / "hydra" / "launcher")
    out = tmp_path / "out"
    out.mkdir()
    (app / "conf" / "config.yaml").write_text(f"x: 0\nout_dir: {out}\ntrainer:\n  devices: 2\n")
    (app / "app.py").write_text(_MINI_APP)
    _run([sys.executable, "app.py", "-m", "hydra/launcher=submitit_slurm",
          "hydra.launcher.tasks_per_node=2", "x=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
         cwd=app, timeout=600)
    recs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert sorted((r["x"], r["rank"]) for r in recs) == [(1, 0), (1, 1), (2, 0), (2, 1)], recs
    for r in recs:
        assert r["world_size"] == 2 and r["env"] == "SLURMEnvironment" and r["detect"], r


@pytest.mark.slurm
@pytest.mark.distributed
@pytest.mark.timeout(SWEEP_TIMEOUT_S + 120)
def test_peftbench_sweep_on_slurm(slurm_cluster, tmp_path):
    """The real entry point: 2 methods x 1 job each, every job a 2-rank DDP run started by SLURM."""
    train = shutil.which("peftbench-train", path=str(BIN)) or shutil.which("peftbench-train")
    cli = shutil.which("peftbench", path=str(BIN)) or shutil.which("peftbench")
    if train is None or cli is None:
        pytest.skip("peftbench-train / peftbench not installed (pip install -e .)")
    sweep = tmp_path / "sweep"
    _run([train, "-m", "hydra/launcher=submitit_slurm", "model=bert", "model_size=tiny",
          "method=lora,bitfit", "dataset=sst2", "trainer.devices=2", "strategy=ddp",
          "trainer.max_steps=3", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)

    results = sorted(p for p in sweep.rglob("results.json") if ".submitit" not in p.parts)
    assert len(results) == 2, f"expected 2 results.json under {sweep}, got {results}"
    methods = set()
    for p in results:
        rec = json.loads(p.read_text())
        assert rec["status"] == "ok", (p, rec.get("status"), rec.get("error"))
        # contract: env.world_size is the DDP world size the run actually had (here: the 2 srun ranks)
        assert rec["env"].get("world_size") == 2, (p, rec["env"], rec.get("budget"), rec.get("env_extra"))
        assert rec["metrics"], (p, "no metrics")
        name = rec["method"]["name"] if isinstance(rec["method"], dict) else rec["method"]
        methods.add(name)
    assert methods == {"lora", "bitfit"}, methods

    proc = _run([cli, "report", str(sweep)], cwd=tmp_path, timeout=300)
    text = proc.stdout + proc.stderr
    assert "lora" in text and "bitfit" in text, text[-3000:]
