"""Running a two-stage run's base stage (config/stages.py decides it): refuse what the final stage
would refuse before the base trains, train the base once (a lock keeps concurrent jobs that share
it from training it twice), and hand its status on as this run's when it did not finish."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from peftbench import results
from peftbench.config.plan import make_plan
from peftbench.config.stages import stage_config, stage_model_dir
from peftbench.errors import ConfigError
from peftbench.run.failures import Diverged
from peftbench.run.record import rank

log = logging.getLogger("peftbench")
WAIT_S = 3600  # how long a DDP rank > 0 waits for rank 0 to save the base model


def run_base_stage(cfg: DictConfig, out: Path, train: Callable[[DictConfig], dict[str, Any]]
                   ) -> tuple[DictConfig, dict[str, Any] | None]:
    """``(the final stage's config, the base stage's summary)``; a one-stage run comes back as it is."""
    stage = stage_config(cfg)
    if stage is None:
        return cfg, None
    probe = copy.deepcopy(cfg)  # the final stage on a from-config base: every refusal, no weights
    probe.model.from_config, probe.model.path = True, None
    make_plan(probe, out, load_data=False)
    log.info("base stage: %s", stage.paths.output_dir)
    rec = _train_once(stage, train)
    _raise_for(rec, stage)
    final = copy.deepcopy(cfg)
    final.model.path = str(stage_model_dir(stage))
    return final, {"run_id": rec["run_id"], "output_dir": str(stage.paths.output_dir),
                   "method": rec["method"]["name"], "dataset": rec["dataset"].get("name"),
                   "metrics": rec["metrics"], "budget": rec.get("budget"), "skipped": bool(rec.get("skipped")),
                   "model_weights": (rec.get("artifacts") or {}).get("model_weights")}


def _train_once(stage: DictConfig, train: Callable[[DictConfig], dict[str, Any]]) -> dict[str, Any]:
    folder, model = Path(stage.paths.output_dir), stage_model_dir(stage)
    with _lock(folder):
        if (folder / results.FILENAME).exists() and not model.exists():
            log.warning("the base stage in %s finished but its model is gone: training it again", folder)
            (folder / results.FILENAME).unlink()
        rec = train(stage)
    if rank() != 0:  # rank 0 saves the model after its ranks finished fitting: wait for it
        deadline = time.time() + WAIT_S
        while not (model / "config.json").exists() and time.time() < deadline:
            time.sleep(1)
    return rec


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the stage folder for one process per job. Not for the ranks of one
    DDP job (they train the stage together: a rank holding the lock would starve the others)."""
    distributed = "LOCAL_RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if distributed:
        yield
        return
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _raise_for(rec: dict[str, Any], stage: DictConfig) -> None:
    """The base stage's outcome as this run's: refused stays refused, OOM stays OOM."""
    status, where = rec["status"], stage.paths.output_dir
    msg = f"the base stage ({where}) ended '{status}': {rec.get('error')}"
    if status == "ok":
        return
    if status == "refused":
        raise ConfigError(msg, option="base_stage")
    if status == "oom":
        raise MemoryError(f"out of memory in {msg}")
    if status == "diverged":
        raise Diverged(msg)
    raise RuntimeError(msg)
