"""``train(cfg) -> record``: one run, end to end; ``main`` is the thin ``peftbench-train`` Hydra wrapper.

A run never raises into a sweep: refusals, crashes, NaN losses and OOMs become a results.json with
that status, so a sweep records the failure and goes on (and a relaunch skips finished runs).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench import results
from peftbench.config.paths import conf_dir
from peftbench.config.plan import make_plan
from peftbench.config.stages import stage_config, stage_model_dir
from peftbench.run.pipeline import execute

log = logging.getLogger("peftbench")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one configuration; always returns (and on rank 0 writes) a validated record."""
    from peftbench.run import record

    out = record.output_dir(cfg)
    OmegaConf.set_struct(cfg, False)
    cfg.paths.output_dir = str(out)
    rid = results.run_id(record.container(cfg))
    done = record.finished_record(out, rid)
    if done is not None:
        log.warning("skipping: %s already holds a finished run with run_id %s", out, rid)
        return {**done, "skipped": True}
    t_start = time.time()

    def stages() -> dict[str, Any]:
        record.check_writable(out)
        base = run_base_stage(cfg)
        t0 = time.perf_counter()
        plan = make_plan(cfg, out, run_id=rid)  # every refusal before weights load, once
        plan_s = time.perf_counter() - t0
        part = execute(plan, t_start=t0)
        part.setdefault("timings", {})["plan_s"] = plan_s
        if base is not None:
            part["stages"] = {"base": base}
        return part

    rec = record.run_stages(record.base_record(cfg, rid), stages)
    return record.finish(rec, out, time.time() - t_start)


def run_base_stage(cfg: DictConfig) -> dict[str, Any] | None:
    """A two-stage run's first stage (config/stages.py): an ordinary run, skipped when it already
    finished; its trained model becomes this run's base (``model.path``)."""
    stage = stage_config(cfg)
    if stage is None:
        return None
    log.info("base stage: %s", stage.paths.output_dir)
    rec = train(stage)
    if rec["status"] != "ok":
        raise RuntimeError(f"the base stage in {stage.paths.output_dir} ended '{rec['status']}': {rec.get('error')}")
    cfg.model.path = str(stage_model_dir(stage))
    return {"run_id": rec["run_id"], "output_dir": str(stage.paths.output_dir), "method": rec["method"]["name"],
            "dataset": rec["dataset"].get("name"), "metrics": rec["metrics"], "budget": rec.get("budget"),
            "skipped": bool(rec.get("skipped"))}


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
