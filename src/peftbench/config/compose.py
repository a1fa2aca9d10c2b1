"""Compose the train config outside ``@hydra.main`` (CLI subcommands, tests). The search path is
Hydra's own: conf/, the folders in ``$PEFTBENCH_CONFIG_PATH`` and installed plugins' search-path
plugins, exactly as ``peftbench-train`` sees them."""

from __future__ import annotations

from typing import Sequence

from omegaconf import DictConfig

from peftbench.errors import ConfigError


def compose(overrides: Sequence[str] = (), output_dir: str | None = None) -> DictConfig:
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from peftbench.config.paths import conf_dir, user_config_dirs

    user_config_dirs()  # a bad $PEFTBENCH_CONFIG_PATH is refused by name (Hydra adds the folders itself)
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = hcompose(config_name="train", overrides=list(overrides))
    except HydraException as e:
        raise ConfigError(str(e).splitlines()[0]) from e
    OmegaConf.set_struct(cfg, False)
    cfg.paths.output_dir = output_dir
    return cfg
