"""Compose the train config outside ``@hydra.main`` (CLI subcommands, tests)."""

from __future__ import annotations

from typing import Sequence

from omegaconf import DictConfig

from peftbench.errors import ConfigError


def compose(overrides: Sequence[str] = (), output_dir: str | None = None) -> DictConfig:
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from peftbench.config.paths import conf_dir

    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = hcompose(config_name="train", overrides=list(overrides))
    except HydraException as e:
        raise ConfigError(str(e).splitlines()[0]) from e
    OmegaConf.set_struct(cfg, False)
    cfg.paths.output_dir = output_dir
    return cfg
