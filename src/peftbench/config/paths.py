"""Where things live: the conf/ folder, the local data root, the cache. A leaf module (standard
library + omegaconf), so loaders and planners can ask without importing each other."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from peftbench.errors import ConfigError


def conf_dir() -> Path:
    """conf/ beside src/ (editable install, repo checkout) unless PEFTBENCH_CONF_DIR says otherwise."""
    env = os.environ.get("PEFTBENCH_CONF_DIR")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for cand in (here.parents[3] / "conf", here.parents[1] / "conf"):
        if (cand / "train.yaml").exists():
            return cand
    raise FileNotFoundError("peftbench conf/ not found: set PEFTBENCH_CONF_DIR")


CONFIG_PATH_ENV = "PEFTBENCH_CONFIG_PATH"


def user_config_dirs() -> list[Path]:
    """The user's config folders, ``$PEFTBENCH_CONFIG_PATH`` (``os.pathsep``-separated), each laid out
    like conf/ (``dataset/x.yaml``). Hydra searches them after conf/ (hydra_plugins/peftbench_config_path)."""
    dirs = []
    for part in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep):
        if not part.strip():
            continue
        d = Path(part.strip()).expanduser().resolve()
        if not d.is_dir():
            raise ConfigError(f"{CONFIG_PATH_ENV} names {part!r}, which is not a folder", option=CONFIG_PATH_ENV)
        dirs.append(d)
    return dirs


def config_dirs() -> list[Path]:
    """conf/ first, then the user's folders: where a config group's yaml files are looked up."""
    return [conf_dir(), *user_config_dirs()]


def data_root(cfg_data_dir: str | None) -> Path | None:
    """The local dataset root. ``paths.data_dir`` defaults to ``$PEFTBENCH_DATA_DIR`` (an
    interpolation in conf/paths), so an explicit ``paths.data_dir=…`` wins, as in any Hydra option;
    the variable is read here only where no config is at hand."""
    d = cfg_data_dir or os.environ.get("PEFTBENCH_DATA_DIR")
    return Path(d).expanduser() if d else None


def cache_dir() -> Path:
    d = Path(os.environ.get("PEFTBENCH_CACHE_DIR", Path.home() / ".cache" / "peftbench"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def dataset_config(name: str, option: str = "forgetting.dataset") -> dict[str, Any]:
    """A dataset config by name, read from conf/dataset/<name>.yaml (for sets outside the run's group)."""
    from omegaconf import OmegaConf

    found = [d / "dataset" / f"{name}.yaml" for d in config_dirs() if (d / "dataset" / f"{name}.yaml").is_file()]
    if not found:
        known = sorted({p.stem for d in config_dirs() for p in (d / "dataset").glob("*.yaml")})
        raise ConfigError(f"unknown dataset '{name}'; known: {known}", option=option)
    path = found[0]
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
