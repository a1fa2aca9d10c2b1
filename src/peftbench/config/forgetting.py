"""Planning half of the forgetting measurement (measure/forgetting.py measures): the ``forgetting``
block checked and its general set read, before any weight is loaded."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from peftbench.config.checks import positive_int
from peftbench.config.paths import dataset_config
from peftbench.data.sft import run_dataset
from peftbench.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_SET = {"causal_lm": "c4_demo", "classification": "agnews"}


@dataclass
class ForgettingPlan:
    """Resolved settings plus the (already read and checked) general-set examples."""

    measure: str  # "perplexity" | "probe_accuracy"
    dataset: dict[str, Any]
    max_examples: int
    max_tokens: int | None
    probe_train_examples: int
    batch_size: int
    train_texts: list[str]
    train_labels: list[int]
    eval_texts: list[str]
    eval_labels: list[int]
    source: str


def _int(cfg: Mapping[str, Any], key: str, default: int | None) -> int | None:
    v = positive_int(cfg.get(key), f"forgetting.{key}")
    return default if v is None else v


def plan_forgetting(cfg: DictConfig) -> ForgettingPlan | None:
    """Check the ``forgetting`` block and read the general set, before any weight is loaded.

    Returns None when forgetting is off (``enabled: auto`` = on for causal LMs, off for
    classification unless ``enabled: true``).
    """
    fc = OmegaConf.to_container(cfg.get("forgetting") or OmegaConf.create({}), resolve=True)
    task = str(run_dataset(OmegaConf.to_container(cfg.dataset, resolve=True))["task"])  # as_sft: causal_lm
    enabled = fc.get("enabled", "auto")
    if enabled not in ("auto", True, False):
        raise ConfigError(f"must be auto | true | false, got {enabled!r}", option="forgetting.enabled")
    if enabled is False or (enabled == "auto" and task != "causal_lm"):
        return None
    if task not in DEFAULT_SET:
        raise ConfigError(f"no forgetting measure for task '{task}'", option="forgetting.enabled")
    name = fc.get("dataset") or DEFAULT_SET[task]
    ds = dataset_config(str(name))
    measure = "perplexity" if task == "causal_lm" else "probe_accuracy"
    max_examples = _int(fc, "max_examples", 32 if task == "causal_lm" else 256)
    max_tokens = _int(fc, "max_tokens", None)
    probe_n = _int(fc, "probe_train_examples", 256)
    batch = _int(fc, "batch_size", 8)
    from peftbench.data.load import load_examples
    from peftbench.data.sources import local_dir

    data_dir = cfg.paths.get("data_dir")
    if enabled == "auto" and local_dir(ds, data_dir) is None:
        # never start a hub download (allenai/c4 is huge) for a measurement nobody asked for
        log.warning("forgetting skipped: no local copy of '%s' under the data dir (set forgetting.enabled=true "
                    "to use the hub copy, or forgetting.dataset)", name)
        return None
    if task == "causal_lm":
        if ds.get("task") != "causal_lm" or ds.get("format") != "text":
            raise ConfigError(f"'{name}' is not a plain-text corpus (task causal_lm, format text); "
                              "use c4_demo, wiki_demo or tinyshakespeare", option="forgetting.dataset")
        ds["block_size"] = int(fc.get("block_size") or cfg.dataset.get("max_length") or ds.get("block_size") or 128)
        ex = load_examples(ds, data_dir)
        if "validation" not in ex:
            raise ConfigError(f"'{name}' has no held-out split (set val_fraction in its config)",
                              option="forgetting.dataset")
        held = ex["validation"]
        return ForgettingPlan(measure, ds, max_examples, max_tokens, probe_n, batch, [], [],
                              list(held.columns["text"]), [], held.source)
    # classification: a second, untouched task
    if ds.get("task") != "classification":
        raise ConfigError(f"'{name}' is not a classification set", option="forgetting.dataset")
    if name == cfg.dataset.name:
        raise ConfigError(f"the forgetting set must be a task the run does not train on, got the run's own "
                          f"dataset '{name}'", option="forgetting.dataset")
    ds["train_limit"], ds["val_limit"], ds["test_limit"] = probe_n, max_examples, max_examples
    ds["subset_seed"] = int(fc.get("subset_seed", 0))
    ex = load_examples(ds, data_dir)
    held = ex.get("test") or ex["validation"]
    return ForgettingPlan(measure, ds, max_examples, max_tokens, probe_n, batch,
                          list(ex["train"].columns["text"]), list(ex["train"].columns["label"]),
                          list(held.columns["text"]), list(held.columns["label"]), held.source)
