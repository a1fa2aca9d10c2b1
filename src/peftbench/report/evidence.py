"""Per-run evidence beyond the headline numbers: the ``eval`` block, per-example predictions and
training curves (the record contract of issue 20). Everything here tolerates their absence: an older
record simply has no evidence, and the report says "n/a" where a check needed it.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.report import stats
from peftbench.report.collect import RUN_DIR, lower_is_better

log = logging.getLogger(__name__)
_CACHE: dict[str, dict[str, Any] | None] = {}


def split_of(metric: str) -> str:
    return metric.split("/", 1)[0] if "/" in metric else ""


def base_of(metric: str) -> str:
    return metric.rsplit("/", 1)[-1]


def eval_block(rec: dict[str, Any], split: str) -> dict[str, Any] | None:
    ev = rec.get("eval")
    blk = ev.get(split) if isinstance(ev, dict) else None
    return blk if isinstance(blk, dict) else None


def predictions(rec: dict[str, Any], split: str) -> dict[str, Any] | None:
    """The run's ``predictions/<split>.json.gz`` as a dict, or None (absent, unreadable, or a path
    that leaves the run folder: a record never makes the report read elsewhere)."""
    blk = eval_block(rec, split)
    rel = blk.get("predictions") if blk else None
    run_dir = rec.get(RUN_DIR)
    if not isinstance(rel, str) or not run_dir:
        return None
    root = Path(run_dir).resolve()
    path = (root / rel).resolve()
    if root not in path.parents:
        log.warning("ignoring predictions path %r outside its run folder %s", rel, root)
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    key = f"{path}:{st.st_mtime_ns}:{st.st_size}"  # a rewritten file is read again
    if key not in _CACHE:
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                data = json.load(f)
            _CACHE[key] = data if isinstance(data, dict) and isinstance(data.get("ids"), list) else None
        except (OSError, ValueError, EOFError) as e:
            log.warning("unreadable predictions %s: %s", path, e)
            _CACHE[key] = None
    return _CACHE[key]


@dataclass(frozen=True)
class Examples:
    """Per-example values of one metric of one run: the metric is ``transform(weighted mean)``."""

    ids: tuple[Any, ...]
    values: tuple[float, ...]
    weights: tuple[float, ...] | None = None
    binary: bool = False  # right/wrong per example: McNemar applies
    log_scale: bool = False  # ppl = exp(mean loss)

    def transform(self, x: float) -> float:
        return math.exp(x) if self.log_scale else x


def examples(rec: dict[str, Any], metric: str) -> Examples | None:
    """Per-example data behind ``metric`` (``<split>/acc`` from pred/label or ``correct``,
    ``<split>/loss`` or ``/ppl`` from per-example loss weighted by tokens), else None."""
    split, base = split_of(metric), base_of(metric)
    p = predictions(rec, split)
    if p is None:
        return None
    ids = tuple(p["ids"])
    try:
        if base in ("acc", "accuracy") and "pred" in p and "label" in p:
            vals = tuple(float(a == b) for a, b in zip(p["pred"], p["label"]))
            return Examples(ids, vals, binary=True) if len(vals) == len(ids) else None
        blk = eval_block(rec, split) or {}
        if "correct" in p and blk.get("metric") == metric and not lower_is_better(metric):
            vals = tuple(float(bool(v)) for v in p["correct"])
            return Examples(ids, vals, binary=True) if len(vals) == len(ids) else None
        if base in ("loss", "ppl", "perplexity") and "loss" in p:
            w = tuple(float(t) for t in p["tokens"]) if "tokens" in p else None
            vals = tuple(float(v) for v in p["loss"])
            return Examples(ids, vals, w, log_scale=base != "loss") if len(vals) == len(ids) else None
    except (TypeError, ValueError, KeyError):
        return None
    return None


def is_constant(rec: dict[str, Any], split: str) -> bool | None:
    """Whether a classifier predicted one class for every example (None: no predictions)."""
    p = predictions(rec, split)
    if p is None or not isinstance(p.get("pred"), list) or not p["pred"]:
        return None
    return len(set(map(str, p["pred"]))) == 1


def subset_metric(rec: dict[str, Any], metric: str, n: int) -> float | None:
    """``metric`` of the run's final model on the first ``n`` rows of its split (the convergence
    curve's subset), from the per-example predictions; None when they cannot give it."""
    if base_of(metric) in ("mcc", "matthews"):
        p = predictions(rec, split_of(metric))
        if p is None or not isinstance(p.get("pred"), list) or not isinstance(p.get("label"), list):
            return None
        rows = [(a, b) for i, a, b in zip(p["ids"], p["pred"], p["label"]) if int(i) < n]
        names = ((rec.get("config") or {}).get("dataset") or {}).get("label_names")
        k = len(names) if isinstance(names, list) and names else None
        try:
            return stats.matthews([a for a, _ in rows], [b for _, b in rows], k) if len(rows) == n else None
        except (TypeError, ValueError):  # labels that are not class indices
            return None
    ex = examples(rec, metric)
    keep = [k for k, i in enumerate(ex.ids) if int(i) < n] if ex is not None else []
    if ex is None or len(keep) != n:
        return None
    w = ex.weights or (1.0,) * len(ex.values)
    total = sum(w[k] for k in keep)
    return ex.transform(sum(ex.values[k] * w[k] for k in keep) / total) if total else None


def final_step(rec: dict[str, Any]) -> float | None:
    """The optimizer step training ended at: the train-loss curve's last step, else the budget's."""
    tc = train_curve(rec)
    if tc:
        return tc[-1][0]
    steps = (rec.get("budget") or {}).get("optimizer_steps")
    return float(steps) if isinstance(steps, (int, float)) and steps > 0 else None


def val_curve(rec: dict[str, Any]) -> tuple[str, list[list[float]]] | None:
    """The validation curve; one that stops before the final step (records before the pipeline
    closed its curves: 150 steps at 4 points ended at step 114) is completed with the final model's
    value on the same subset, read from the predictions, so "the last quarter" is the end of training."""
    c = rec.get("curves")
    v = c.get("val") if isinstance(c, dict) else None
    if not (isinstance(v, dict) and isinstance(v.get("points"), list) and v.get("metric")):
        return None
    metric, pts = str(v["metric"]), [list(map(float, pt)) for pt in v["points"] if len(pt) == 2]
    end, sub = final_step(rec), v.get("subset")
    if pts and end is not None and pts[-1][0] < end and isinstance(sub, int) and sub > 0:
        last = subset_metric(rec, metric, sub)
        if last is not None:
            pts.append([end, last])
    return metric, pts


def train_curve(rec: dict[str, Any]) -> list[list[float]] | None:
    c = rec.get("curves")
    t = c.get("train_loss") if isinstance(c, dict) else None
    return [list(map(float, pt)) for pt in t if len(pt) == 2] if isinstance(t, list) and t else None
