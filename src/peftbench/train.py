"""``train(cfg) -> record``: one run, end to end; ``main`` is the thin ``peftbench-train`` Hydra wrapper.

A run never raises into a sweep: refusals, crashes, NaN losses and OOMs become a results.json with
that status, so a sweep records the failure and goes on (and a relaunch skips finished runs).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench import results
from peftbench.errors import ConfigError, PeftbenchError

log = logging.getLogger("peftbench")


def conf_dir() -> Path:
    """conf/ beside src/ (editable install, repo checkout) unless PEFTBENCH_CONF_DIR says otherwise."""
    env = os.environ.get("PEFTBENCH_CONF_DIR")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for cand in (here.parents[2] / "conf", here.parent / "conf"):
        if (cand / "train.yaml").exists():
            return cand
    raise FileNotFoundError("peftbench conf/ not found: set PEFTBENCH_CONF_DIR")


def _container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def _rank() -> int:
    for k in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(k):
            return int(os.environ[k])
    return 0


def env_info() -> dict[str, Any]:
    import platform
    import subprocess

    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpu_count": os.cpu_count(), "hostname": platform.node()}
    from importlib.metadata import PackageNotFoundError, version

    # package metadata, not imports: importing bitsandbytes alone pulls in torch inductor (seconds)
    for mod, dist in (("torch", "torch"), ("lightning", "lightning"), ("transformers", "transformers"),
                      ("peft", "peft"), ("hydra", "hydra-core"), ("datasets", "datasets"),
                      ("bitsandbytes", "bitsandbytes")):
        try:
            info[mod] = version(dist)
        except PackageNotFoundError:  # optional packages
            info[mod] = None
    try:
        import torch

        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        info["device"] = "unknown"
    try:
        info["git_revision"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except Exception:  # noqa: BLE001
        info["git_revision"] = None
    return info


def output_dir(cfg: DictConfig) -> Path:
    try:
        d = OmegaConf.select(cfg, "paths.output_dir", default=None)
    except Exception:  # noqa: BLE001 - ${hydra:...} outside a Hydra app
        d = None
    if d is None:
        try:
            from hydra.core.hydra_config import HydraConfig

            d = HydraConfig.get().runtime.output_dir
        except Exception:  # noqa: BLE001
            d = "outputs/run"
    return Path(d)


def check_writable(out: Path) -> None:
    """A read-only or full output dir is found before training, not after it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".peftbench-write-probe"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output dir {out} is not writable: {e.strerror}", option="hydra.run.dir") from e
    import shutil

    if shutil.disk_usage(out).free < 50 * 2**20:
        raise ConfigError(f"output dir {out} has less than 50 MiB free", option="hydra.run.dir")


def finished_record(out: Path, rid: str) -> dict[str, Any] | None:
    path = out / results.FILENAME
    if not path.exists():
        return None
    try:
        rec = results.read(path)
    except results.SchemaError:
        return None
    return rec if rec["run_id"] == rid and rec["status"] == "ok" else None


def base_record(cfg: DictConfig, rid: str) -> dict[str, Any]:
    c = _container(cfg)
    return results.empty_record(
        run_id=rid, config=c, seed=int(cfg.seed),
        model={"family": c["model"].get("family", ""), "size": c["model_size"]["name"]},
        method={"name": c["method"]["name"], "family": "", "hparams": {k: v for k, v in c["method"].items() if k != "name"}},
        dataset={"name": c["dataset"]["name"], "task": c["dataset"].get("task")},
        env={"trust_remote_code": bool(c["model"].get("trust_remote_code", False)), "world_size": 1},
    )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one configuration; always returns (and on rank 0 writes) a validated record."""
    out = output_dir(cfg)
    OmegaConf.set_struct(cfg, False)
    cfg.paths.output_dir = str(out)
    rid = results.run_id(_container(cfg))
    rec = base_record(cfg, rid)
    done = finished_record(out, rid)
    if done is not None:
        log.warning("skipping: %s already holds a finished run with run_id %s", out, rid)
        done["skipped"] = True
        return done
    t_start = time.time()
    try:
        check_writable(out)
        if cfg.get("study"):
            from peftbench.run_study import run_study

            rec.update(run_study(cfg))
        else:
            from peftbench.run_text import run_text

            part = run_text(cfg, out)
            rec["env"].update(part.pop("env", {}))
            rec.update(part)
        rec["status"] = rec.get("status") or "ok"
    except PeftbenchError as e:
        rec.update(status="refused", error=str(e))
        log.error("refused: %s", e)
    except Exception as e:  # noqa: BLE001 - recorded, never lost; the sweep goes on
        from peftbench.failures import classify

        status = classify(e)
        rec.update(status=status, error=f"{type(e).__name__}: {e}")
        rec.setdefault("traceback", traceback.format_exc())
        log.error("%s: %s", status, rec["error"])
    from peftbench.trackers import finish_runs

    finish_runs(ok=rec["status"] == "ok")  # a sequential multirun's next job gets its own tracker run
    rec["timings"]["total_s"] = round(time.time() - t_start, 3)
    if not rec["env"].get("python"):
        rec["env"].update(env_info())
    if _rank() == 0:
        try:
            results.write(out, rec)
        except OSError as e:
            log.error("could not write results.json to %s: %s", out, e)
        try:
            from peftbench.summary import render_summary

            render_summary(rec, out)
        except Exception as e:  # noqa: BLE001 - a display problem must never fail a finished run
            log.warning("could not print the run summary: %s", e)
    return rec


def _patch_lightning_hydra_relaunch() -> None:
    """Lightning relaunches DDP ranks with the parent's argv, which under ``-m`` would start the
    whole sweep again. Relaunch with this job's own overrides instead (works for -m and single runs)."""
    try:
        from lightning.fabric.strategies.launchers import subprocess_script as ss
    except ImportError:  # pragma: no cover
        return

    def _cmd(local_rank: int):
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import get_original_cwd

        hc = HydraConfig.get()
        command = [sys.executable, "-m", "peftbench.train", *hc.overrides.task,
                   f"hydra.run.dir={hc.runtime.output_dir}", f"hydra.job.name=train_ddp_process_{local_rank}",
                   "hydra.output_subdir=null"]
        return command, get_original_cwd()

    ss._hydra_subprocess_cmd = _cmd


def main() -> None:
    import hydra

    _patch_lightning_hydra_relaunch()
    status = {"code": 0}

    @hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")
    def _main(cfg: DictConfig) -> float | None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        rec = train(cfg)
        if rec["status"] not in ("ok",) and HydraConfig.get().mode != RunMode.MULTIRUN:
            status["code"] = 2 if rec["status"] == "refused" else 1
        metric = cfg.get("optimized_metric")
        return rec["metrics"].get(metric) if metric else None

    _main()
    if status["code"]:
        sys.exit(status["code"])


if __name__ == "__main__":
    main()
