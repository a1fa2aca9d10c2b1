"""Experiment trackers that need a decision before they start (conf/logger/wandb.yaml, swanlab.yaml).

- wandb goes **offline by itself** when there is no API key (env or ~/.netrc) or the API host
  does not answer, so a sweep on an air-gapped cluster never hangs or crashes on login; the
  offline runs can be uploaded later with ``wandb sync``. ``WANDB_MODE`` set by the user wins.
- Runs are **grouped by sweep**: the group is the multirun's sweep dir (one group per
  ``-m`` launch), the run name is the job's output dir name.
- swanlab is an optional extra: refused with a clear message when it is not installed.
The resolved config is logged to every tracker by ``run.trainer.make_loggers``.
"""

from __future__ import annotations

import netrc
import os
import socket
from pathlib import Path
from typing import Any

from peftbench.errors import ConfigError

WANDB_HOST = "api.wandb.ai"


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _host_answers(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_mode() -> str:
    """``WANDB_MODE`` if set, else online only with an API key and a reachable API host."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if _has_wandb_key() and _host_answers(WANDB_HOST) else "offline"


def sweep_group_and_name() -> tuple[str | None, str | None]:
    """(group, name) from Hydra: the sweep dir for multiruns (None for single runs), the job dir name."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except Exception:  # noqa: BLE001 - not inside a Hydra app (tests, compose())
        return None, None
    group = str(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    return group, Path(hc.runtime.output_dir).name


def wandb_logger(save_dir: str, project: str = "peftbench", group: str | None = None, name: str | None = None,
                 **kwargs: Any):
    """Lightning ``WandbLogger`` with the offline decision and sweep grouping applied."""
    try:
        import wandb  # noqa: F401
        from lightning.pytorch.loggers import WandbLogger
    except ImportError as e:
        raise ConfigError("logger=wandb needs wandb: pip install 'peftbench[wandb]' (or logger=csv)",
                          option="logger") from e
    auto_group, auto_name = sweep_group_and_name()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(save_dir=save_dir, project=project, group=group or auto_group, name=name or auto_name,
                       offline=wandb_mode() == "offline", **kwargs)


def swanlab_logger(save_dir: str, project: str = "peftbench", name: str | None = None, **kwargs: Any):
    """SwanLab's Lightning logger (optional extra), local mode unless ``SWANLAB_MODE`` says otherwise."""
    try:
        from swanlab.integration.pytorch_lightning import SwanLabLogger
    except ImportError as e:
        raise ConfigError("logger=swanlab needs swanlab, which is not importable here: "
                          "pip install swanlab (or logger=csv | tensorboard | wandb)", option="logger") from e
    group, auto_name = sweep_group_and_name()
    kwargs.setdefault("mode", os.environ.get("SWANLAB_MODE", "local"))
    return SwanLabLogger(project=project, experiment_name=name or auto_name, logdir=save_dir,
                         group=group, **kwargs)


def finish_runs(ok: bool = True) -> None:
    """End the tracker runs of this job. Lightning's loggers leave the wandb run open until the
    process exits, so the next job of a sequential multirun would log into it: close it here."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=0 if ok else 1)
