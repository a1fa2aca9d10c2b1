"""Two-stage runs: train one model, then adapt it. A run whose config has a ``base_stage`` block
first runs that stage — this run's config with the block's groups and values swapped in — and then
uses the stage's trained model as its own base (``model.path``). Both stages are ordinary runs
of the one pipeline, under the same budget rule.

    base_stage:
      method: full                    # group swaps: method / dataset (a conf/<group>/<name>.yaml)
      dataset: tinyshakespeare
      set: {trainer.max_steps: 400, optim.lr: 1.0e-3}   # then any dotted values

The stage writes its record and model into ``<paths.cache_dir>/stages/<its run id>``: runs that
need the same base share it (several methods or final-stage learning rates on one seed; not
several seeds, since the seed is part of the stage), and a relaunch skips it when it finished.
The stage inherits every setting of the final run that ``set`` does not pin: a sweep over, say,
``data.batch_size`` changes the base too — pin what the base must keep. Its identity does not
include the code: after changing training code, delete ``<cache>/stages`` to train bases anew. Seed 004's sphere → Gaussian study is expressed this way. (The gpt2_local ladder
is pretrained by runs of its own with ``save_model``; the benchmark's cells then load those models.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench.config.paths import conf_dir
from peftbench.errors import ConfigError
from peftbench.results import dotted_items

GROUPS = ("method", "dataset")
KEYS = ("set", *GROUPS)
MODEL_DIR = "model"  # where a stage's trained model is saved inside its folder


def _group(group: str, name: Any) -> dict[str, Any]:
    """A group option as Hydra composes it (plugins' search paths included), interpolations kept:
    they resolve inside the stage's config (``${seed}`` …)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    try:
        if GlobalHydra.instance().is_initialized():  # inside peftbench-train's @hydra.main
            cfg = compose(config_name="train", overrides=[f"{group}={name}"])
        else:
            with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
                cfg = compose(config_name="train", overrides=[f"{group}={name}"])
    except HydraException as e:
        raise ConfigError(f"unknown {group} '{name}': {str(e).splitlines()[0]}", option=f"base_stage.{group}") from e
    return OmegaConf.to_container(cfg[group], resolve=False)


def stage_config(cfg: DictConfig) -> DictConfig | None:
    """The base stage's own config (None for a one-stage run). Pure: nothing runs, nothing loads."""
    from peftbench.results import run_id

    block = cfg.get("base_stage")
    if not block:
        return None
    block = OmegaConf.to_container(block, resolve=True)
    unknown = sorted(set(block) - set(KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; base_stage takes {list(KEYS)}", option=f"base_stage.{unknown[0]}")
    stage = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(stage, False)
    stage.base_stage = None
    stage.save_model = True
    stage.metric_aliases = {}  # the study's names describe the final run, not its base
    for group in GROUPS:
        if block.get(group):
            stage[group] = _group(group, block[group])
    # flat (``trainer.max_steps: 9``) or nested (``+base_stage.set.trainer.max_steps=9``); later wins
    for key, value in dotted_items(block.get("set") or {}):
        if key.split(".")[0] in ("base_stage", "paths"):
            raise ConfigError(f"a stage cannot set '{key}' (it shares the run's paths)", option=f"base_stage.set.{key}")
        OmegaConf.update(stage, key, value, merge=False)
    stage.paths.output_dir = None  # not part of the identity; set below from it
    rid = run_id(OmegaConf.to_container(stage, resolve=True))
    stage.paths.output_dir = str(Path(stage.paths.cache_dir) / "stages" / rid)
    return stage


def stage_model_dir(stage: DictConfig) -> Path:
    return Path(stage.paths.output_dir) / MODEL_DIR
