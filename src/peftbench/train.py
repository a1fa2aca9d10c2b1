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
from peftbench.config.paths import conf_dir, user_config_dirs
from peftbench.config.plan import make_plan
from peftbench.errors import ConfigError
from peftbench.run import record
from peftbench.run.console import print_plan, quiet
from peftbench.run.pipeline import execute
from peftbench.run.stages import run_base_stage

log = logging.getLogger("peftbench")
UNRECORDED: list[str] = []  # refusals that could write no record (the folder was another run's)
# sweep job folders named by their overrides (conf/hydra/default.yaml); registered on import, so a
# SLURM job that unpickles the task function resolves it too
OmegaConf.register_new_resolver("peftbench.job_dir", record.job_dir, replace=True)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one configuration; always returns (and on rank 0 writes) a validated record."""
    out = record.output_dir(cfg)
    OmegaConf.set_struct(cfg, False)
    cfg.paths.output_dir = str(out)
    rid = results.run_id(record.container(cfg))
    t_start = time.time()
    rec = record.base_record(cfg, rid)
    lock = record.FolderLock(out)
    try:
        done = record.prior_run(out, rid)
        if done is not None:
            where = ((done.get("config") or {}).get("paths") or {}).get("output_dir") or out
            log.warning("skipping: a finished run with run_id %s is already in %s", rid, where)
            return {**done, "skipped": True}
        lock.__enter__()
    except ConfigError as e:  # refused, and nothing written over the other run's folder
        log.error("refused: %s", e)
        UNRECORDED.append(str(e))
        return {**rec, "status": "refused", "error": str(e)}

    def stages() -> dict[str, Any]:
        record.check_writable(out)
        final, base = run_base_stage(cfg, out, train)  # a two-stage run trains (or finds) its base first
        if base is not None:  # the record says which base this run adapted (model_dir), even if it fails
            rec["stages"] = {"base": {**base, "model_dir": str(final.model.path)}}
        t0 = time.perf_counter()
        plan = make_plan(final, out, run_id=rid)  # every refusal before weights load, once
        plan_s = time.perf_counter() - t0
        print_plan(plan)
        part = execute(plan, t_start=t0)
        part.setdefault("timings", {})["plan_s"] = plan_s
        return part

    try:
        rec = record.finish(record.run_stages(rec, stages), out, time.time() - t_start)
    finally:
        lock.__exit__()
    code = record.exit_code(rec)
    if code is not None:  # recorded; now stop, as the signal asked (a sweep must not go on)
        raise SystemExit(code)
    return rec


def main() -> None:
    import hydra

    from peftbench.run.strategy import patch_lightning_hydra_relaunch, stop_on_signals

    quiet()  # known-benign third-party warnings, silenced by message and module (PEFTBENCH_VERBOSE=1: all)
    try:  # Hydra's search path takes $PEFTBENCH_CONFIG_PATH's folders: refuse a bad one by name, not a traceback
        user_config_dirs()
    except ConfigError as e:
        print(f"peftbench-train: error: {e}", file=sys.stderr)
        sys.exit(2)
    patch_lightning_hydra_relaunch()
    stop_on_signals()
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
    if UNRECORDED:  # a sweep goes on past them, but must not end as if all went well
        log.error("%d job(s) refused without a record:\n  %s", len(UNRECORDED), "\n  ".join(UNRECORDED))
        status["code"] = status["code"] or 2
    if status["code"]:
        sys.exit(status["code"])


if __name__ == "__main__":
    main()
