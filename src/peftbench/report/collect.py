"""Find results.json files, validate them, and aggregate seeds into comparable groups.

Pure stdlib on purpose: a report must build on a laptop from files copied off a cluster,
without torch or Lightning. Everything here is ordered deterministically so that the same
files always give byte-identical tables.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench import results as _results

log = logging.getLogger(__name__)

# Canonical order of the method taxonomy; unknown families sort after these, by name.
FAMILY_ORDER = ("baseline", "additive", "selective", "reparameterized", "hybrid")
# Common size names, small to large; unknown sizes sort after by model.total then by name.
SIZE_ORDER = ("tiny", "mini", "xs", "small", "s", "base", "medium", "m", "large", "l", "xl", "xxl")
RUN_DIR = "_dir"  # each record's folder, noted by collect() so predictions can be found (never written out)
# Metric names containing one of these are "lower is better".
LOWER_IS_BETTER = ("loss", "ppl", "perplexity", "error", "wer", "cer", "mse", "mae", "rmse")
# Preferred headline metrics, best first; otherwise the first non-loss metric, else any.
PREFERRED = ("acc", "accuracy", "f1", "macro_f1", "mcc", "matthews", "pearson", "spearman", "rouge",
             "bleu", "em", "exact_match", "ppl", "loss")


@dataclass(frozen=True)
class Stat:
    """Mean ± sample std over seeds; std is None for n < 2 (one seed says nothing about spread)."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        vals = [float(v) for v in values if _is_num(v)]
        if not vals:
            return None
        std = statistics.stdev(vals) if len(vals) > 1 else None
        return cls(statistics.fmean(vals), std, len(vals))


@dataclass
class Group:
    """All runs of one (model family, size, method, dataset), aggregated over seeds.

    ``status`` is "ok" when at least one seed finished; "oom" when every attempt ran out of
    memory (the row is kept: "does not fit" is a result, not a missing value).
    """

    model_family: str
    model_size: str
    method: str
    method_family: str
    dataset: str
    task: str
    status: str
    runs: list[dict[str, Any]]
    n_oom: int = 0
    seeds: tuple[int, ...] = ()
    metrics: dict[str, Stat] = field(default_factory=dict)
    params: dict[str, Stat] = field(default_factory=dict)
    memory: dict[str, Stat] = field(default_factory=dict)
    speed: dict[str, Stat] = field(default_factory=dict)
    model_total: float | None = None
    budget: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.model_family, self.model_size, self.method, self.dataset)

    @property
    def pct_trainable(self) -> float | None:
        tr = self.params.get("trainable")
        tot = self.params.get("total")
        if tr is None or tot is None or not tot.mean:
            return None
        return 100.0 * tr.mean / tot.mean


@dataclass(frozen=True)
class Failure:
    """A run that did not finish normally; listed with its error so nothing is silently lost."""

    path: str
    run_id: str
    status: str
    model_family: str
    model_size: str
    method: str
    dataset: str
    seed: int
    error: str


@dataclass(frozen=True)
class Skipped:
    path: Path  # as found (for the log)
    rel: str  # relative to the scanned dir (for reports: no machine-specific prefix)
    reason: str


@dataclass
class Collection:
    groups: list[Group]
    failures: list[Failure]
    skipped: list[Skipped]
    n_ok: int
    n_files: int


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def lower_is_better(metric: str) -> bool:
    name = metric.rsplit("/", 1)[-1].lower()
    return any(tok in name for tok in LOWER_IS_BETTER)


def headline_metric(groups: Sequence[Group]) -> str | None:
    """The metric to plot for a dataset: the one its runs' dataset config names (``dataset.metric``,
    e.g. CoLA's mcc), else the preferred; test over val, task metrics over losses."""
    names = sorted({m for g in groups for m in g.metrics if not m.endswith("_before")})
    if not names:
        return None
    declared = {((r.get("config") or {}).get("dataset") or {}).get("metric") for g in groups for r in g.runs}
    chosen = next(iter(declared)) if len(declared) == 1 else None

    def rank(m: str) -> tuple[int, int, int, str]:
        split, _, base = m.rpartition("/")
        split_r = {"test": 0, "val": 1, "validation": 1, "eval": 1}.get(split, 2)
        base_r = PREFERRED.index(base) if base in PREFERRED else (len(PREFERRED) - 2)
        return (0 if base == chosen else 1, base_r, split_r, m)

    return min(names, key=rank)


def family_rank(family: str) -> tuple[int, str]:
    f = family.lower()
    return (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER), f)


def _parse_count(s: str) -> float | None:
    """'0.5b' -> 5e8, '125m' -> 1.25e8: size names that carry their own scale."""
    mult = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
    if len(s) > 1 and s[-1] in mult:
        try:
            return float(s[:-1]) * mult[s[-1]]
        except ValueError:
            return None
    return None


def size_rank(size: str, total: float | None = None) -> tuple[int, float, str]:
    """Small to large: known names first, then '<n>b'-style names and measured totals."""
    s = size.lower()
    idx = SIZE_ORDER.index(s) if s in SIZE_ORDER else len(SIZE_ORDER)
    n = _parse_count(s)
    if n is None:
        n = total if total is not None else math.inf
    return (idx, n, s)


def find_results(dirs: Iterable[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """Every results.json under ``dirs`` as (root, path), sorted, each file once.

    Recursive so local multirun trees (multirun/DATE/TIME/N/) and submitit's nested
    SLURM folders are found alike; symlinked duplicates are reported once.
    """
    seen: set[Path] = set()
    found: list[tuple[Path, Path]] = []
    for d in dirs:
        root = Path(d)
        if root.is_file():
            cands = [root] if root.name == _results.FILENAME else []
            root = root.parent
        else:
            cands = []
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                if _results.FILENAME in filenames:
                    cands.append(Path(dirpath) / _results.FILENAME)
        for p in sorted(cands):
            real = p.resolve()
            if real not in seen:
                seen.add(real)
                found.append((root, p))
    return found


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _dedupe(records: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """One record per run_id: a resumed or retried sweep writes the same run twice.

    The run id hashes the config incl. the seed, so duplicates are the same experiment;
    a finished attempt wins over a failed one, otherwise the first by path.
    """
    best: dict[str, tuple[str, dict[str, Any]]] = {}
    out: list[tuple[str, dict[str, Any]]] = []
    for rel, rec in records:
        rid = rec.get("run_id") or ""
        if not rid:
            out.append((rel, rec))
            continue
        prev = best.get(rid)
        if prev is None or (prev[1]["status"] != "ok" and rec["status"] == "ok"):
            if prev is not None:
                log.info("duplicate run_id %s: using %s over %s", rid, rel, prev[0])
            best[rid] = (rel, rec)
    out.extend(best.values())
    return sorted(out, key=lambda t: t[0])


def _stats(runs: list[dict[str, Any]], section: str, skip: Iterable[str] = ()) -> dict[str, Stat]:
    keys = sorted({k for r in runs for k, v in (r.get(section) or {}).items() if _is_num(v)} - set(skip))
    out = {}
    for k in keys:
        st = Stat.of([(r.get(section) or {}).get(k) for r in runs])
        if st is not None:
            out[k] = st
    return out


# What a run's identity leaves out (results.run_id): how it was watched, where it wrote. A row is
# everything else but the seeds.
_NOT_CONFIG = (*_results.NOT_IDENTITY, *(f"trainer.{k}" for k in _results.NOT_IDENTITY_TRAINER))


def config_items(rec: dict[str, Any]) -> dict[str, str]:
    """The record's resolved config as dotted keys, minus seeds and what does not change training."""
    flat = dict(_results.dotted_items(rec.get("config") or {}))
    return {k: _canonical(v) for k, v in flat.items()
            if "seed" not in k.rsplit(".", 1)[-1] and not any(k == n or k.startswith(n + ".") for n in _NOT_CONFIG)}


def _canonical(v: Any) -> str:
    """One spelling per value: 0, 0.0 and 0e0 are one weight decay."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return json.dumps(float(v))
    return json.dumps(v, sort_keys=True, default=str)


def _shown(text: str) -> str:
    v = json.loads(text)
    return f"{v:g}" if isinstance(v, float) else str(v)


def config_key(rec: dict[str, Any]) -> str:
    return json.dumps(sorted(config_items(rec).items()))


def variant_labels(buckets: dict[tuple[str, ...], list[dict[str, Any]]]) -> dict[tuple[str, ...], str]:
    """For rows that share model, size, method and dataset but not their configuration: the keys
    whose values differ (shortest unique suffix), so ``method.r=2,16`` makes two labelled rows."""
    by_row: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for key in buckets:
        by_row.setdefault(key[:4], []).append(key)
    labels: dict[tuple[str, ...], str] = {}
    for keys in by_row.values():
        if len(keys) < 2:
            continue
        items = {k: config_items(buckets[k][0]) for k in keys}
        names = sorted({n for it in items.values() for n in it})
        differ = [n for n in names if len({it.get(n) for it in items.values()}) > 1]
        short = _short_names(differ)
        for k, it in items.items():  # every differing key: a cut label could name two rows alike
            labels[k] = ", ".join(f"{short[n]}={_shown(it[n]) if n in it else '-'}" for n in differ)
    return labels


def _short_names(names: list[str]) -> dict[str, str]:
    """``method.r`` → ``r`` unless another differing key ends the same way."""
    out = {}
    for n in names:
        parts = n.split(".")
        for i in range(len(parts) - 1, -1, -1):
            cand = ".".join(parts[i:])
            if sum(1 for m in names if m == cand or m.endswith("." + cand)) == 1:
                out[n] = cand
                break
        else:
            out[n] = n
    return out


def _common(values: list[Any]) -> Any:
    """The value all runs agree on, else None (so a mixed budget is never shown as one)."""
    if values and all(v == values[0] for v in values):
        return values[0]
    return None


def _make_group(key: tuple[str, str, str, str], runs: list[dict[str, Any]], variant: str = "") -> Group:
    """One row: the seeds of one configuration. ``variant`` names what sets it apart from other
    rows of the same model, method and dataset (``lora [r=16]``)."""
    ok = [r for r in runs if r["status"] == "ok"]
    oom = [r for r in runs if r["status"] == "oom"]
    use = ok or oom
    first = use[0]
    totals = [r["model"].get("total") for r in use if _is_num(r["model"].get("total"))]
    budgets = [r.get("budget") or {} for r in use]
    budget = {k: _common([b.get(k) for b in budgets]) for k in sorted({k for b in budgets for k in b})}
    g = Group(
        model_family=key[0], model_size=key[1], method=f"{key[2]} [{variant}]" if variant else key[2],
        dataset=key[3], method_family=str(first["method"].get("family") or ""),
        task=str(first["dataset"].get("task") or ""),
        status="ok" if ok else "oom",
        runs=use, n_oom=len(oom),
        seeds=tuple(sorted(int(r["seed"]) for r in ok)),
        # Parameter counts do not need training to finish: an OOM row still shows them.
        params=_stats(use, "params", skip=("delta_rank",)),
        model_total=statistics.fmean(totals) if totals else None,
        budget={k: v for k, v in budget.items() if v is not None},
    )
    if ok:
        g.metrics = _stats(ok, "metrics")
        g.memory = _stats(ok, "memory")
        g.speed = _stats(ok, "speed")
    if "total" not in g.params and g.model_total is not None:
        g.params["total"] = Stat(g.model_total, None, len(totals))
    return g


def sort_groups(groups: list[Group]) -> list[Group]:
    """model family, size (small → large), dataset, method family, method."""
    totals: dict[tuple[str, str], float] = {}
    for g in groups:
        if g.model_total is not None:
            k = (g.model_family, g.model_size)
            totals[k] = min(totals.get(k, math.inf), g.model_total)

    def key(g: Group) -> tuple[Any, ...]:
        return (g.model_family, size_rank(g.model_size, totals.get((g.model_family, g.model_size))),
                g.dataset, family_rank(g.method_family), g.method)

    return sorted(groups, key=key)


def collect(dirs: Iterable[str | os.PathLike]) -> Collection:
    """Read every results.json under ``dirs``; bad files are skipped with a logged warning.

    A sweep of hundreds of runs should never fail to report because one job was killed
    mid-write or wrote an older schema: the rest is still worth reading.
    """
    files = find_results(dirs)
    good: list[tuple[str, dict[str, Any]]] = []
    skipped: list[Skipped] = []
    for root, path in files:
        try:
            rec = _results.read(path)
        except _results.SchemaError as e:
            reason = str(e)
            if reason.startswith(f"{path}: "):
                reason = reason[len(f"{path}: "):]
            log.warning("skipping %s: %s", path, reason)
            skipped.append(Skipped(path, _rel(root, path), reason))
            continue
        rec[RUN_DIR] = str(path.parent)
        good.append((_rel(root, path), rec))
    good = _dedupe(good)

    buckets: dict[tuple[str, str, str, str, str], list[dict[str, Any]]] = {}
    failures: list[Failure] = []
    n_ok = 0
    for rel, rec in good:
        key = (str(rec["model"]["family"]), str(rec["model"]["size"]),
               str(rec["method"]["name"]), str(rec["dataset"]["name"]))
        if rec["status"] == "ok":
            n_ok += 1
        else:
            failures.append(Failure(
                path=rel, run_id=rec["run_id"], status=rec["status"],
                model_family=key[0], model_size=key[1], method=key[2], dataset=key[3],
                seed=rec["seed"], error=str(rec.get("error") or ""),
            ))
        if rec["status"] in ("ok", "oom"):
            buckets.setdefault((*key, config_key(rec)), []).append(rec)

    labels = variant_labels(buckets)
    groups = []
    for key in sorted(buckets):
        runs = sorted(buckets[key], key=lambda r: (r["seed"], r["run_id"]))
        groups.append(_make_group(key[:4], runs, labels.get(key, "")))
    groups = sort_groups(groups)
    failures.sort(key=lambda f: (f.model_family, f.model_size, f.dataset, f.method, f.seed, f.path))
    return Collection(groups=groups, failures=failures, skipped=skipped, n_ok=n_ok, n_files=len(files))
