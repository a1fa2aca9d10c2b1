"""The standard benchmark: tasks × models × sizes × methods × seeds × a small per-method lr grid.

Every cell is one ordinary ``train(cfg)`` run (same code as ``peftbench-train``) in its own output
dir, so a relaunch skips finished cells (idempotent run ids) and a failed cell is recorded, not
fatal. Model selection: for each (task, model, size, method) the lr with the best mean
*selection* metric over seeds wins; the report shows those runs' numbers on the *held-out* split.
A selected lr at an edge of its grid is extended by one step beyond it (``extend_edges`` rounds:
the task's, else the grid's, default 1; ``--extend-edges`` overrides both; each added run is listed
in the manifest), since the optimum may lie there.

Splits (each task's ``splits`` line, stated in every report): the selection metric is read on a
dev split (``val/*``) and the report shows the held-out split (``test/*``), never the same rows:
SST-2 selects on a sample of ``dev.tsv`` (held out of GLUE train) and reports on ``validation.tsv``
(GLUE dev); sets without a dev file cut it from the end of train (``dataset.val_fraction``), and
LM/SFT corpora cut both (``dataset.test_fraction``).

Runs: ``--jobs N`` single-thread workers over whole groups, records beside the report, each
committed as it lands with ``--commit``; a relaunch continues where a stopped benchmark stopped.

The grids are yaml, one file each: ``conf/benchmark/<grid>.yaml`` (tasks with their budgets and
data overrides, models, methods, seeds, lr grids, the gpt2_local pretraining ladder); this module
reads them, expands them into cells, runs, selects and writes the manifest.

``python -m peftbench.cli.suite [--grid standard_cpu|standard_quick|gpt2_modes] [--dry-run]``
(``experiments/standard_cpu/run.sh`` wraps it: ``--report reports/standard-cpu --jobs 2``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import logging
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.config.paths import conf_dir
from peftbench.errors import ConfigError
from peftbench.report.referee import DEFAULT_REFERENCE
from peftbench.report.stats import common_seeds, flat, tied_edge

log = logging.getLogger("peftbench")


@dataclass(frozen=True)
class Task:
    """A task of a grid file, with its fixed budget; ``select``/``report`` are results.json metric keys."""

    name: str
    overrides: tuple[str, ...]
    select: str
    report: str
    models: tuple[tuple[str, str], ...]  # (model family, size)
    methods: tuple[str, ...] | None = None  # None: the grid's; fewer for a costly model
    seeds: tuple[int, ...] | None = None
    # None: the grid's lr grid (not part of the hash: cells key the run records)
    lrs: dict[str, list[float]] | None = field(default=None, hash=False, compare=False)
    cost: float = field(default=1.0, hash=False, compare=False)  # relative run time: balances --jobs workers
    splits: str = field(default="", hash=False, compare=False)  # which split selects, which is reported
    # None: the grid's extend_edges (a task whose optimum lies far from the shared lr grid needs more rounds)
    extend_edges: int | None = field(default=None, hash=False, compare=False)
    # a method whose runs also score the model before training (measure.before): the table's untuned-base-model
    # row; it must start from the base model itself (full, or an adapter initialised to the identity)
    untuned: str | None = None

    def own_methods(self, methods: list[str]) -> list[str]:
        """The grid's available methods this task runs."""
        return [m for m in methods if self.methods is None or m in self.methods]


@dataclass
class Grid:
    """One conf/benchmark/<name>.yaml, parsed (``load_grid``)."""

    name: str
    tasks: list[Task]
    methods: list[str]
    seeds: list[int]
    lrs: dict[str, list[float]]  # per method; "default" for the rest
    pretrain: dict[str, int] = field(default_factory=dict)  # gpt2_local size → pretraining steps
    common: tuple[str, ...] = ("logger=none", "trainer.enable_progress_bar=false")
    # run folders of another grid with identical cells (same task budgets, lr grid, seeds, ladder): a
    # cell already finished there is skipped by its run id, not re-run
    runs_from: str | None = None
    # rounds of one more lr beyond a selected edge; a grid key so every invocation (and every worker)
    # selects alike — `--extend-edges` overrides it
    extend_edges: int = 1
    # the report's paired-test references: the first fills its "vs" column, the others a note per table
    references: tuple[str, ...] = ("full",)

    def seeds_of(self, task: Task) -> list[int]:
        return list(task.seeds or self.seeds)

    def rounds(self, task: Task, override: int | None = None) -> int:
        """Edge-extension rounds for ``task``: ``override`` (--extend-edges), else the task's, else the grid's."""
        return override if override is not None else task.extend_edges if task.extend_edges is not None \
            else self.extend_edges

    def extend_per_task(self, override: int | None = None) -> dict[str, int]:
        """The rounds of every task, keyed as the manifest's splits are (the manifest's ``extend_edges``)."""
        return {task_key(t): self.rounds(t, override) for t in self.tasks}

    def lr_grid(self, method: str, task: Task | None = None) -> list[float]:
        lrs = task.lrs if task is not None and task.lrs else self.lrs
        return lrs.get(method, lrs["default"])


GRID_KEYS = {"common", "methods", "seeds", "lrs", "pretrain", "runs_from", "tasks", "extend_edges", "references"}
TASK_KEYS = {"name", "overrides", "select", "report", "models", "methods", "seeds", "lrs", "cost", "splits",
             "extend_edges", "untuned"}


def task_key(t: Task) -> str:
    """A task's name is not unique in a grid (SST-2 on three models): this key is."""
    return f"{t.name}:{'/'.join(f'{a}-{b}' for a, b in t.models)}"


def _rounds(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where}: extend_edges must be an integer >= 0, got {value!r}", option="extend_edges")
    return value


def grid_dir() -> Path:
    return conf_dir() / "benchmark"


def _lrs(raw: dict[str, Any]) -> dict[str, list[float]]:
    return {m: [float(x) for x in v] for m, v in raw.items()}


def _check_keys(raw: Any, allowed: set[str], required: set[str], where: str) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {sorted(allowed)}", option=where)
    unknown, missing = sorted(set(raw) - allowed), sorted(required - set(raw))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} (keys: {sorted(allowed)})", option=where)
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing} (keys: {sorted(allowed)})", option=where)


def _task(raw: dict[str, Any], where: str) -> Task:
    _check_keys(raw, TASK_KEYS, {"name", "overrides", "select", "report", "models"}, where)
    models = tuple((str(fam), str(size)) for fam, sizes in raw["models"].items() for size in sizes)
    own = {k: tuple(raw[k]) for k in ("methods", "seeds") if raw.get(k) is not None}
    return Task(str(raw["name"]), tuple(str(o) for o in raw["overrides"]), raw["select"], raw["report"], models,
                lrs=_lrs(raw["lrs"]) if raw.get("lrs") else None, cost=float(raw.get("cost", 1.0)),
                splits=str(raw.get("splits") or ""),
                extend_edges=_rounds(raw["extend_edges"], where) if "extend_edges" in raw else None,
                untuned=raw.get("untuned"), **own)


def load_grid(path: Path) -> Grid:
    """One ``conf/benchmark/<name>.yaml`` (its keys are explained in standard_cpu.yaml's header)."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    _check_keys(raw, GRID_KEYS, {"methods", "seeds", "lrs", "tasks"}, str(path))
    common = {"common": tuple(raw["common"])} if "common" in raw else {}  # else the dataclass default
    extend = _rounds(raw.get("extend_edges", 1), str(path))
    tasks = [_task(x, f"{path.name} tasks[{i}]") for i, x in enumerate(raw["tasks"])]
    for t in tasks:  # `untuned`: one method the task runs (Task.own_methods), or none
        if t.untuned is not None and (not isinstance(t.untuned, str) or t.untuned not in t.own_methods(raw["methods"])):
            raise ConfigError(f"{path}: task {t.name}: untuned must name one method the task runs, got "
                              f"{t.untuned!r}", option="untuned")
    refs = raw.get("references", ["full"])  # the default needs no full row: the report then says n/a
    if "references" in raw and (not isinstance(refs, list) or not refs or len(set(refs)) < len(refs)
                                or any(r not in raw["methods"] for r in refs)):
        raise ConfigError(f"{path}: references must list distinct methods of the grid's `methods`, got {refs!r}",
                          option="references")
    return Grid(path.stem, tasks=tasks,
                methods=list(raw["methods"]), seeds=[int(s) for s in raw["seeds"]], lrs=_lrs(raw["lrs"]),
                pretrain={str(k): int(v) for k, v in (raw.get("pretrain") or {}).items()},
                runs_from=raw.get("runs_from"), extend_edges=extend, references=tuple(refs), **common)


def grids() -> dict[str, Grid]:
    """Every grid in conf/benchmark/, by file name."""
    found = {p.stem: load_grid(p) for p in sorted(grid_dir().glob("*.yaml"))}
    for g in found.values():
        if g.runs_from is not None and g.runs_from not in found:
            raise ConfigError(f"conf/benchmark/{g.name}.yaml: runs_from '{g.runs_from}' is no grid "
                              f"(grids: {sorted(found)})", option="runs_from")
    return found


@dataclass(frozen=True)
class Cell:
    task: Task
    model: str
    size: str
    method: str
    lr: float
    seed: int

    @property
    def group(self) -> tuple[str, str, str, str]:
        return (self.task.name, self.model, self.size, self.method)

    def rel_dir(self) -> str:
        return f"{self.task.name}/{self.model}-{self.size}/{self.method}/lr{self.lr:g}/seed{self.seed}"

    def overrides(self, grid: Grid, shared: Path | None = None) -> list[str]:
        own = []
        if self.model == "gpt2_local" and self.size in grid.pretrain and shared is not None:
            own = [f"model.sizes.{self.size}.local={portable(pretrained_dir(grid, self.size, shared))}"]
        if self.method == self.task.untuned:
            own.insert(0, "measure.before=true")
        return [*grid.common, f"model={self.model}", f"model_size={self.size}", f"method={self.method}",
                *self.task.overrides, *own, f"optim.lr={self.lr}", f"seed={self.seed}"]


def available_methods(names: list[str]) -> tuple[list[str], list[str]]:
    """Methods with both a registry entry and a conf/method yaml; the rest are listed as skipped."""
    from peftbench.methods.registry import get_method

    ok, skipped = [], []
    for n in names:
        try:
            get_method(n)
            (ok if (conf_dir() / "method" / f"{n}.yaml").exists() else skipped).append(n)
        except Exception:  # noqa: BLE001 - not registered in this install
            skipped.append(n)
    return ok, skipped


def cells(grid: Grid, methods: list[str]) -> Iterator[Cell]:
    """Phase 1: every (task, model, size, method) at every lr of its grid, on the first seed."""
    for task in grid.tasks:
        for (model, size), method in itertools.product(task.models, task.own_methods(methods)):
            for lr in grid.lr_grid(method, task):
                yield Cell(task, model, size, method, lr, grid.seeds_of(task)[0])


def seed_cells(selection: list[dict[str, Any]], phase1: list[Cell], grid: Grid) -> Iterator[Cell]:
    """Phase 2: the remaining seeds, at each group's selected lr only."""
    best = {(r["task"], r["model"], r["size"], r["method"]): r["best_lr"] for r in selection}
    seen = set()
    for c in phase1:
        lr = best.get(c.group)
        if lr is None or c.group in seen:
            continue
        seen.add(c.group)
        for seed in grid.seeds_of(c.task)[1:]:
            yield Cell(c.task, c.model, c.size, c.method, lr, seed)


def pretrained_dir(grid: Grid, size: str, shared: Path) -> Path:
    """Pretrained weights keyed by size and steps, so grids with the same ladder share them and a
    quick edition's 40-step model never replaces a full edition's (nor the user's cache copy)."""
    return shared / f"gpt2_local-{size}-{grid.pretrain[size]}steps"


def portable(path: Path) -> str:
    """A path inside the working directory stays relative: it enters the run id, and a benchmark
    resumed from another clone (another absolute path) must find its finished runs."""
    import os

    p = os.path.abspath(path)  # not resolve(): a symlinked outputs/ must not make the id machine-specific
    rel = os.path.relpath(p, os.getcwd())
    return str(p) if rel.startswith("..") else rel


def pretrain_overrides(grid: Grid, size: str, shared: Path | None = None) -> list[str]:
    own = [f"save_model={portable(pretrained_dir(grid, size, shared))}"] if shared is not None else []
    return [*grid.common, "experiment=pretrain_gpt2_local", f"model_size={size}",
            f"trainer.max_steps={grid.pretrain[size]}", *own]


def _run(overrides: list[str], out: Path, reuse: bool = False) -> dict[str, Any]:
    """One cell through ``train`` (a finished run is skipped). ``reuse``: a record of this exact run in
    ``out`` is returned whatever its status, nothing is trained (the pass after --jobs workers: it
    collects what they did, it never re-runs their failures)."""
    from peftbench import results
    from peftbench.run import record
    from peftbench.train import train

    cfg = _compose(overrides, out)
    if reuse:
        rec = record.finished_record(out, _run_id(cfg), results.STATUSES)
        if rec is not None:
            return {**rec, "skipped": True}
    return train(cfg)


class _Unfinished(Exception):
    """A dry pass met a cell that would train."""


def _finished(overrides: list[str], out: Path) -> dict[str, Any]:
    """The dry pass's ``_run``: what ``train`` would return without training (a finished record, or
    the refusal of a folder holding another configuration's run), else ``_Unfinished``."""
    from peftbench.run import record

    out = Path(out)
    rid = _run_id(_compose(overrides, out))
    try:
        rec = record.prior_run(out, rid)
    except ConfigError as e:
        return {"status": "refused", "error": str(e)}
    if rec is None:
        raise _Unfinished(str(out))
    return rec


def _compose(overrides: list[str], out: Path) -> Any:
    from peftbench.config.compose import compose

    return compose(overrides, output_dir=str(out))


def _run_id(cfg: Any) -> str:
    from peftbench import results
    from peftbench.run import record

    return results.run_id(record.container(cfg))


def select(grid: Grid, records: dict[Cell, dict[str, Any]]) -> list[dict[str, Any]]:
    """Best lr per (task, model, size, method) by the selection metric, over the seeds every lr of
    the group ran (phase 1: the first seed), so the other seeds run at the winner cannot move it."""
    from peftbench.report.collect import lower_is_better

    rows = []
    groups: dict[tuple, list[Cell]] = {}
    for c in records:
        groups.setdefault(c.group, []).append(c)
    for g, cs in groups.items():
        task = cs[0].task
        by_lr: dict[float, dict[int, float]] = {}
        for c in sorted(cs, key=lambda c: (c.lr, c.seed)):  # a tie goes to the smallest lr, as in the report
            v = records[c].get("metrics", {}).get(task.select)
            if records[c].get("status") == "ok" and v is not None:
                by_lr.setdefault(c.lr, {})[c.seed] = float(v)
        common = common_seeds(by_lr.values())
        scored = {lr: statistics.mean(x for s, x in v.items() if s in common or not common) for lr, v in by_lr.items()}
        best = (min if lower_is_better(task.select) else max)(scored, key=scored.get) if scored else None
        tried = sorted({c.lr for c in cs})
        rows.append({"task": g[0], "model": g[1], "size": g[2], "method": g[3], "select_on": task.select,
                     "report": task.report, "lr_scores": {f"{k:g}": v for k, v in sorted(scored.items())},
                     "best_lr": best, "edge": (tied_edge(tried, scored, best) or (None,))[0] if best is not None else None,
                     "flat": flat(tried, scored),
                     "selected_runs": [c.rel_dir() for c in cs if c.lr == best]})
    return rows


def next_lr(tried: list[float], edge: str) -> float | None:
    """One more step beyond the selected edge, at the ratio of the grid's two values at that edge
    (1e-4, 1e-3 → 1e-2 above, 1e-5 below), rounded to 6 significant digits so the run id is stable."""
    lrs = sorted(set(tried))
    if len(lrs) < 2 or lrs[0] <= 0:
        return None
    nxt = lrs[-1] * lrs[-1] / lrs[-2] if edge == "high" else lrs[0] * lrs[0] / lrs[1]
    return float(f"{nxt:.6g}")


def edge_extensions(grid: Grid, records: dict[Cell, dict[str, Any]]) -> list[Cell]:
    """Cells that extend, by one step, each group whose selected lr is at an edge of the lrs tried."""
    first = {c.group: c for c in records}
    out = []
    for row in select(grid, records):
        if not row["edge"]:
            continue
        c = first[(row["task"], row["model"], row["size"], row["method"])]
        lr = next_lr([x.lr for x in records if x.group == c.group], row["edge"])
        if lr is not None:
            out.append(Cell(c.task, c.model, c.size, c.method, lr, grid.seeds_of(c.task)[0]))
    return out


Keep = Callable[[Cell], bool] | None  # the groups this process runs (a --shard worker's share); None: all


def only_sizes(grid: Grid, sizes: set[str], family: str | None = None) -> Grid:
    """``grid`` with every task's models cut to ``sizes`` (of ``family``, else any; tasks left without a
    model dropped): rerun one size, e.g. after its ladder model was rebuilt, without touching the others'."""
    known = {size for t in grid.tasks for _, size in t.models}
    if not sizes <= known:
        raise ConfigError(f"no size {sorted(sizes - known)} in the tasks of grid {grid.name} being run "
                          f"(their sizes: {sorted(known)})", option="sizes")
    tasks = [dataclasses.replace(t, models=tuple(m for m in t.models if m[1] in sizes and family in (None, m[0])))
             for t in grid.tasks]
    return dataclasses.replace(grid, tasks=[t for t in tasks if t.models])


def ladder_sizes(grid: Grid) -> list[str]:
    """The ladder sizes some task of ``grid`` fine-tunes (--only without the ladder's task: none)."""
    used = {size for t in grid.tasks for fam, size in t.models if fam == "gpt2_local"}
    return [s for s in grid.pretrain if s in used]


def _pretrain_ladder(grid: Grid, runs: Path, shared: Path, on_done: Any = None,
                     extend: int | None = None, keep: Keep = None) -> dict[str, dict[str, Any]]:
    """The gpt2_local sizes the grid pretrains from scratch, before any cell fine-tunes them. The
    record goes beside the cells' (``<runs>/pretrain/``, committed with them); the weights go to
    ``shared`` (never committed) with a marker naming the pretraining run, so another grid with the
    same ladder copies that run's record instead of pretraining (and replacing the weights) again. A
    clone that has the record but not the weights pretrains again into a scratch folder (same config
    and seed) and says whether the rebuild matches the record, unless every cell of that size has
    finished (a dry pass, ``extend`` rounds as the run's): a finished study rebuilds nothing."""
    import shutil

    from peftbench import results
    from peftbench.config.compose import compose
    from peftbench.run import record

    pre: dict[str, dict[str, Any]] = {}
    for size in ladder_sizes(grid):
        weights = pretrained_dir(grid, size, shared)
        out = runs / "pretrain" / weights.name
        overrides = pretrain_overrides(grid, size, shared)
        rid = results.run_id(record.container(compose(overrides, output_dir=str(out))))
        marker = weights / "peftbench_pretrain.json"
        made = json.loads(marker.read_text()) if marker.exists() else {}
        if not (out / results.FILENAME).exists() and made.get("run_id") == rid and \
                (Path(made.get("record", "")) / results.FILENAME).exists():
            shutil.copytree(made["record"], out, ignore=shutil.ignore_patterns("model", "adapter", "checkpoints", "logs"))
        rec = _run(overrides, out)
        if rec.get("status") == "ok" and not rec.get("skipped"):
            marker.write_text(json.dumps({"run_id": rid, "record": str(out)}))
        if rec.get("status") == "ok" and not (weights / "config.json").exists() and \
                _needs_weights(grid, size, runs, shared, extend, keep):
            log.warning("%s: pretrained weights missing; pretraining again to rebuild them", weights)
            scratch = shared.parent / "pretrain-rebuild" / f"{weights.name}-{int(time.time())}"
            again = _run(overrides, scratch)
            ppl, was = (again.get("metrics") or {}).get("val/ppl"), (rec.get("metrics") or {}).get("val/ppl")
            if not (weights / "config.json").exists():
                raise ConfigError(f"{weights}: could not rebuild the pretrained weights ({again.get('status')}: "
                                  f"{again.get('error')})", option="pretrain")
            marker.write_text(json.dumps({"run_id": rid, "record": str(out)}))
            if not _same_weights(rec, again):
                log.warning("%s: the rebuilt weights reach val/ppl %s, the committed record %s: cells run now "
                            "fine-tune a different model than the committed ones did (their records' "
                            "model.weights tell them apart)", weights, ppl, was)
        if on_done is not None:
            on_done(out, rec)
        pre[size] = {"dir": str(out), "status": rec["status"], "run_id": rec["run_id"], "metrics": rec.get("metrics")}
    return pre


def _needs_weights(grid: Grid, size: str, runs: Path, shared: Path, extend: int | None, keep: Keep = None) -> bool:
    """Would some ladder cell of ``size`` (of this process's groups, ``keep``) train now? Phase 1, the
    edge rounds and the seeds replayed over the finished records alone, as the run would select."""
    one = only_sizes(grid, {size}, family="gpt2_local")
    try:
        _run_cells(one, available_methods(grid.methods)[0], runs, shared, extend, keep=keep, dry=True)
    except _Unfinished as e:
        log.warning("%s has to run: the ladder's %s model is needed", e, size)
        return True
    return False


def _same_weights(rec: dict[str, Any], again: dict[str, Any]) -> bool:
    """Did a rebuild reproduce the recorded pretraining? By the saved weights' digest where both
    records have it, else (older records) by validation perplexity, exactly: the same weights give the
    same float. Near is not the same: the m ladder model rebuilt with the recorded thread count reached
    126.22140 for a recorded 126.22134, and l with one thread instead of two 120.19 for 120.29."""
    want, got = ((r.get("artifacts") or {}).get("model_weights") for r in (rec, again))
    if want and got:
        return want == got
    ppl, was = ((r.get("metrics") or {}).get("val/ppl") for r in (again, rec))
    return ppl is not None and ppl == was


def _run_cells(grid: Grid, methods: list[str], runs: Path, shared: Path, extend: int | None = None,
               extensions: list[dict[str, Any]] | None = None, keep: Keep = None,
               on_done: Any = None, reuse: bool = False, dry: bool = False) -> dict[Cell, dict[str, Any]]:
    """Task by task, in grid order: phase 1 (the lr grid on the first seed); up to ``grid.rounds(task,
    extend)`` rounds that add one lr beyond the edge a group selected (listed in ``extensions``, for the manifest);
    then phase 2 (the other seeds at the selected lr). A task's table is complete before the next
    task starts, so a stopped benchmark leaves whole tables behind. ``on_done(folder, record)`` is
    called after each cell (finished before or now): the --commit hook; ``reuse``: see ``_run``; ``dry``:
    nothing trains, the first unfinished cell raises ``_Unfinished``."""
    extensions = [] if extensions is None else extensions
    records: dict[Cell, dict[str, Any]] = {}

    def run_cell(c: Cell) -> None:
        rec = _finished(c.overrides(grid, shared), runs / c.rel_dir()) if dry else \
            _run(c.overrides(grid, shared), runs / c.rel_dir(), reuse)
        records[c] = rec
        if not dry:
            log.warning("%s: %s %s", c.rel_dir(), rec["status"], {k: round(v, 4) for k, v in rec.get("metrics", {}).items()
                                                            if k in (c.task.select, c.task.report)})
        if on_done is not None:  # skipped ones too: a record finished without --commit is committed now
            on_done(runs / c.rel_dir(), rec)

    for task in grid.tasks:
        one = dataclasses.replace(grid, tasks=[task])
        phase1 = [c for c in cells(one, methods) if keep is None or keep(c)]
        if not phase1:
            continue
        mine: dict[Cell, dict[str, Any]] = {}
        for c in phase1:
            run_cell(c)
            mine[c] = records[c]
        for step in range(grid.rounds(task, extend)):  # bounded: each round adds at most one lr per edge-selected group
            more = [c for c in edge_extensions(one, mine) if c not in mine]
            for c in more:
                run_cell(c)
                mine[c] = records[c]
                extensions.append({"round": step + 1, "task": c.task.name, "model": c.model, "size": c.size,
                                   "method": c.method, "added_lr": c.lr, "run": c.rel_dir()})
            phase1 += more
        for c in list(seed_cells(select(one, mine), phase1, one)):
            run_cell(c)
    return records


def shard_of(grid: Grid, methods: list[str], k: int, n: int) -> set[tuple[str, str, str, str]]:
    """Worker ``k`` of ``n``'s groups: whole groups (a group's selection and seeds stay in one
    process), dealt task by task, longest first, to the least-loaded worker by the tasks' ``cost``."""
    load = [0.0] * n
    share: list[set[tuple[str, str, str, str]]] = [set() for _ in range(n)]
    for task in grid.tasks:  # task by task, so the workers finish each task's table at about the same time
        groups: dict[tuple[str, str, str, str], float] = {}
        for c in cells(dataclasses.replace(grid, tasks=[task]), methods):
            groups[c.group] = groups.get(c.group, 0.0) + c.task.cost * (2.0 if c.method == "full" else 1.0)
        for g, cost in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0])):
            i = min(range(n), key=lambda j: (load[j], j))
            load[i] += cost
            share[i].add(g)
    return share[k]


def committer(grid: Grid, runs: Path) -> Callable[[Path, dict[str, Any]], None]:
    """The --commit hook: one commit per new run record, named by its path under ``runs`` and its
    status, carrying the committed report beside ``runs`` (if there is one) regenerated with it."""
    def done(folder: Path, rec: dict[str, Any]) -> None:
        if _git(["status", "--porcelain", "--", str(folder)]):
            with _report_turn(runs):
                _git(["add", "-A", "--", str(folder)])  # staged first: the report is built from the index
                paths = [folder, *refresh_report(runs)]
                commit_record(paths, f"{grid.name}: {folder.relative_to(runs)} {rec['status']}")
    return done


def _git(args: Sequence[str]) -> str:
    """A git command's output in the current folder ('' when it fails)."""
    import subprocess

    out = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


@contextlib.contextmanager
def _report_turn(runs: Path) -> Iterator[None]:
    """Workers commit and regenerate the report one at a time: a lock on a file in git's own folder,
    so it is never committed, shared by every worker of this clone."""
    import fcntl

    gd = _git(["rev-parse", "--git-dir"])
    if not gd:
        yield
        return
    with open(Path(gd) / "peftbench-report.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed
        yield


def refresh_report(runs: Path) -> list[Path]:
    """Regenerate the report that ``<report>/runs`` feeds (``<report>/report.md``, as `peftbench report`
    with ``report-args`` would) from the records in git's index (the committed ones and the one staged
    to be committed with it); returns the paths to commit. A record committed without its report
    would leave main with a report its records no longer reproduce, and a benchmark may stop at any
    record; another worker's finished but unstaged record is left out. Never raises: records first."""
    import shutil
    import tempfile

    report = runs.parent
    if runs.name != "runs" or not (report / "report.md").is_file():
        return []
    try:
        from peftbench.cli.main import build_parser
        from peftbench.report import build_report

        extra = (report / "report-args").read_text().split() if (report / "report-args").is_file() else []
        a = build_parser().parse_args(["report", str(runs), *extra])
        with tempfile.TemporaryDirectory() as tmp:
            snap = Path(tmp) / "runs"
            for f in filter(None, _git(["ls-files", "-z", "--", str(runs)]).split("\0")):
                dest = snap / Path(f).resolve().relative_to(runs.resolve())
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest)
            res = build_report([snap], report, formats=tuple(a.formats.split(",")), plots=not a.no_plots,
                               reference=a.reference)
        made = {p.name for p in res.files}
        for old in (report / "plots").glob("*") if (report / "plots").is_dir() else []:
            if old.is_file() and old.name not in made:  # a plot the records no longer make goes too
                old.unlink()
        tracked = _git(["ls-files", "--", str(report / "plots")]).split()  # deleted ones included
        return [*res.files, *map(Path, tracked)]
    except (Exception, SystemExit) as e:  # noqa: BLE001 — the report is a view of the records: it never stops the benchmark
        log.warning("--commit: %s not regenerated (%s: %s); the record is committed alone", report,
                    type(e).__name__, e)
        return []


def commit_record(folder: Path | Sequence[Path], message: str) -> bool:
    """``git commit`` one finished run's folder (reports/.gitignore keeps weights and logs out), or
    several paths, so a stopped benchmark loses nothing; True when a commit was made. Several workers
    may commit at once: a held index lock is retried."""
    import subprocess

    paths = [str(p) for p in ([folder] if isinstance(folder, Path) else folder)]
    for attempt in range(8):
        add = subprocess.run(["git", "add", "-A", "--", *paths], capture_output=True, text=True, check=False)
        err = add.stderr
        if add.returncode == 0:
            if subprocess.run(["git", "diff", "--cached", "--quiet", "--", *paths], check=False).returncode == 0:
                return False  # nothing new
            done = subprocess.run(["git", "commit", "-q", "--no-verify", "-m", message, "--", *paths],
                                  capture_output=True, text=True, check=False)
            if done.returncode == 0:
                return True
            err = done.stderr
        if "index.lock" not in err:
            log.warning("--commit: git could not commit %s: %s", ", ".join(paths), err.strip()[-300:])
            return False
        time.sleep(0.5 + attempt)
    log.warning("--commit: the git index stayed locked; %s is not committed (it stays on disk)", ", ".join(paths))
    return False


def build_manifest(grid: Grid, command: str, methods: list[str], skipped: list[str], pre: dict[str, Any],
                   records: dict[Cell, dict[str, Any]], runs: Path, t0: float,
                   extensions: list[dict[str, Any]] | None = None, extend: int | None = None) -> dict[str, Any]:
    """What ran, how it was selected, on what machine: the report's manifest.json."""
    from peftbench.run.record import env_info, git_revision

    selection = select(grid, records)
    rounds = grid.extend_per_task(extend)
    env = env_info()  # once: it imports torch and runs git
    return {
        "grid": grid.name, "command": command, "git_revision": git_revision(short=False),
        "machine": {"platform": env["platform"], "python": env["python"], "processor": platform.processor(),
                    "cpu_count": env["cpu_count"], "device": env.get("device")},
        "versions": {m: v for m, v in env.items()
                     if m in ("torch", "lightning", "transformers", "peft", "datasets", "bitsandbytes")},
        "methods_run": methods, "methods_skipped_not_available": skipped, "seeds": grid.seeds,
        "protocol": f"lr grid on the first seed (selection metric); up to {rounds_text(rounds)} extra lr step(s) beyond a grid edge "
                    "that was selected; then the other seeds at the selected lr; "
                    "the report shows the selected lr's runs (mean ± std over seeds)",
        "tasks": [{"name": t.name, "models": [f"{m}-{z}" for m, z in t.models], "methods": t.own_methods(methods),
                   "seeds": grid.seeds_of(t), "overrides": list(t.overrides)} for t in grid.tasks],
        "lr_grid": {m: grid.lr_grid(m) for m in methods},
        "lr_grid_per_task": {task_key(t): t.lrs for t in grid.tasks if t.lrs},
        "splits": {task_key(t): t.splits or f"select {t.select}, report {t.report}" for t in grid.tasks},
        "pretrain": pre, "selection": selection, "lr_grid_extensions": list(extensions or []),
        "extend_edges": rounds, "references": list(grid.references),
        "runs_dir": str(runs),
        "run_ids": {c.rel_dir(): r["run_id"] for c, r in records.items()},
        "statuses": {c.rel_dir(): r["status"] for c, r in records.items()},
        "wall_s": round(time.time() - t0, 1),
        "runs_s": round(sum(float((r.get("timings") or {}).get("total_s") or 0) for r in records.values()), 1),
    }


def report_dirs(manifest: dict[str, Any], runs: Path) -> list[Path]:
    """Every run of the grid (all lrs: the report needs the grid to flag an edge) and the ladder: the
    runs folder itself, as `peftbench report <runs>` reads it (a list of run folders would name a
    failure by its own folder, not by its path under runs), and any ladder record kept elsewhere."""
    inside = runs.resolve()
    return [runs, *(Path(p["dir"]) for p in manifest["pretrain"].values()
                    if inside not in Path(p["dir"]).resolve().parents)]


def write_report(manifest: dict[str, Any], runs: Path, report_dir: Path) -> None:
    """Tables and plots of every run of the grid and the ladder, plus the manifest, selection and README.
    The report resolves each lr grid itself (its selected row in the table, every lr in the grid's
    selection table, flagged when the selection sits at an edge)."""
    from peftbench.report import build_report

    dirs = report_dirs(manifest, runs)
    report_dir.mkdir(parents=True, exist_ok=True)
    # only references with a finished run: a method whose runs all failed must not cost the report
    ok = {k.split("/")[2] for k, v in manifest["statuses"].items() if v == "ok" and k.count("/") >= 2}
    refs = [r for r in manifest.get("references") or [] if r in ok]
    extra = reference_args(refs)
    build_report(dirs, report_dir, formats=REPORT_FORMATS, reference=",".join(refs) if extra else None)
    # `peftbench report` (and the committed-report test) regenerate alike
    (report_dir / "report-args").write_text(" ".join(filter(None, [extra, f"--formats {','.join(REPORT_FORMATS)}"])) + "\n")
    (report_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    (report_dir / "selection.md").write_text(selection_markdown(manifest))
    page, text = front_page(report_dir, readme_markdown(manifest))
    page.write_text(text)


# A benchmark's report is committed beside its records: PNG plots only (report.html embeds them); the
# SVG copies would double the plots' bytes in every clone (`peftbench report` still writes them).
REPORT_FORMATS = ("md", "csv", "tex", "html")


def reference_args(refs: Sequence[str]) -> str:
    """`peftbench report`'s option for these references; empty for the report's own default (full)."""
    joined = ",".join(refs)
    return f"--reference {joined}" if joined and joined != DEFAULT_REFERENCE else ""


READING_MARK = "<!-- generated above; a hand-written reading below this line survives a relaunch -->"


def front_page(report_dir: Path, generated: str) -> tuple[Path, str]:
    """Where the generated front page goes, and its text: README.md, keeping whatever was written
    below the mark; a README.md written by hand (no mark) is never replaced: the page goes beside it."""
    readme = report_dir / "README.md"
    if not readme.exists():
        return readme, f"{generated}\n{READING_MARK}\n"
    old = readme.read_text()
    if READING_MARK not in old:
        log.warning("%s is hand-written: the benchmark's front page goes to benchmark.md", readme)
        return report_dir / "benchmark.md", generated
    return readme, f"{generated}\n{READING_MARK}{old.split(READING_MARK, 1)[1]}"


def run_grid(grid: Grid, runs: Path, shared: Path, report_dir: Path | None, command: str, extend: int | None = None,
             keep: Keep = None, commit: bool = False, reuse: bool = False, whole: bool = True) -> dict[str, Any]:
    """Run (or skip, when finished) every cell of ``grid`` whose group ``keep`` accepts, record by
    record into ``runs``; then the manifest beside the runs and, given ``report_dir``, the report."""
    methods, skipped = available_methods(grid.methods)
    extensions: list[dict[str, Any]] = []
    t0 = time.time()
    on_done = committer(grid, runs) if commit else None
    if commit:  # a report left behind its records (a stop before this hook existed) is caught up first
        with _report_turn(runs):
            paths = refresh_report(runs)
            if paths:  # commit_record makes no commit when nothing changed
                commit_record(paths, f"{grid.name}: report regenerated from the committed records")
    pre = _pretrain_ladder(grid, runs, shared, on_done, extend, keep)
    records = _run_cells(grid, methods, runs, shared, extend, extensions, keep, on_done, reuse)
    manifest = build_manifest(grid, command, methods, skipped, pre, records, runs, t0, extensions, extend)
    if keep is None and whole:  # a worker's (or --only's) manifest would describe part of the grid
        runs.mkdir(parents=True, exist_ok=True)
        (runs / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    if report_dir is not None and keep is None and whole:
        write_report(manifest, runs, report_dir)
        if commit:
            commit_record(report_dir, f"{grid.name}: report regenerated from {len(records)} runs")
    return manifest


def preflight(grid: Grid, shared: Path) -> None:
    """Plan one cell of every group as its run will (``make_plan``: numbers, budget, the method against
    the model's family table, lengths, strategy), reading no weights or data, before anything trains:
    a typo in a task's overrides or a method the model cannot take is refused here, by task, instead
    of stopping a worker hours in."""
    from peftbench.config.compose import compose
    from peftbench.config.plan import make_plan

    seen = set()
    for c in cells(grid, available_methods(grid.methods)[0]):
        if c.group in seen:
            continue
        seen.add(c.group)
        try:
            ladder = c.model == "gpt2_local" and c.size in grid.pretrain  # not pretrained yet: its architecture
            make_plan(compose([*c.overrides(grid, shared), *([f"++model.sizes.{c.size}.from_config=true"] * ladder)]),
                      load_data=False)
        except ConfigError as e:
            raise ConfigError(f"grid {grid.name}, task {c.task.name} ({c.model}-{c.size}, {c.method}): {e}") from e


def run_workers(grid: Grid, a: argparse.Namespace) -> int:
    """``--jobs N``: the ladder first (all threads), then N single-thread worker processes, each its
    share of the groups (``--shard k/N``); returns the first failing worker's exit code, else 0."""
    import os
    import subprocess

    _pretrain_ladder(grid, runs_dir(a, grid), Path(a.out) / "pretrained",
                     committer(grid, runs_dir(a, grid)) if a.commit else None, a.extend_edges)
    base = [sys.executable, "-m", "peftbench.cli.suite", "--grid", grid.name, "--runs", str(runs_dir(a, grid)),
            "--out", a.out, *(["--extend-edges", str(a.extend_edges)] if a.extend_edges is not None else []),
            *(["--only", a.only] if a.only else []), *(["--sizes", a.sizes] if a.sizes else []),
            *(["--commit"] if a.commit else [])]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1"), "TOKENIZERS_PARALLELISM": "false"}
    procs = [subprocess.Popen([*base, "--shard", f"{k}/{a.jobs}", "--no-report"], env=env) for k in range(a.jobs)]
    try:
        codes = [p.wait() for p in procs]
    finally:  # stopped (signal, Ctrl+C): the workers stop too, each recording its run as interrupted
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
    bad = [c for c in codes if c]
    return (128 - bad[0] if bad[0] < 0 else bad[0]) if bad else 0  # killed by signal N: 128 + N


def runs_dir(a: argparse.Namespace, grid: Grid) -> Path:
    """Where the records go: --runs; else <report>/runs (records committed beside their report);
    else <out>/<grid>/runs."""
    if a.runs:
        return Path(a.runs)
    if a.report:
        return Path(a.report) / "runs"
    return Path(a.out) / (grid.runs_from or grid.name) / "runs"


def readme_markdown(m: dict[str, Any]) -> str:
    """The report's front page: what ran, how it was selected, on what machine, how to regenerate."""
    mc, v = m["machine"], m["versions"]
    lines = [f"# Standard benchmark — grid `{m['grid']}`", "",
             "Regenerate (from the repo root; a relaunch skips finished runs):", "", "```bash",
             f"PEFTBENCH_DATA_DIR=../shared/data HF_HUB_OFFLINE=1 {m['command']}", "```", "",
             (f"Git revision {m['git_revision']}; this invocation {m['wall_s'] / 60:.1f} min (finished runs are skipped); "
              f"the runs' own time adds up to {m.get('runs_s', 0) / 60:.0f} min; machine: {mc['cpu_count']} CPU(s) "
              f"({mc['processor'] or 'x86_64'}), {mc['platform']}, Python {mc['python']}, device {mc.get('device', '?')}."), "",
             "Versions: " + ", ".join(f"{k} {x}" for k, x in v.items()), "",
             f"Protocol: {m['protocol']}.", "", "Splits (selection is never on the reported split):", "",
             *[f"- {k}: {v}" for k, v in m["splits"].items()], "",
             "| task | models | methods | seeds | budget and data (overrides) |", "|---|---|---|---|---|"]
    for t in m["tasks"]:
        lines.append(f"| {t['name']} | {', '.join(t['models'])} | {', '.join(t['methods'])} | "
                     f"{', '.join(map(str, t['seeds']))} | `{' '.join(t['overrides'])}` |")
    lines += ["", "Learning-rate grids: " + "; ".join(f"{k}: {', '.join(f'{x:g}' for x in lr)}"
                                                    for k, lr in m["lr_grid"].items())]
    for t, lrs in (m.get("lr_grid_per_task") or {}).items():
        lines.append(f"- {t}: one lr per method (cost): " + "; ".join(f"{k}: {', '.join(f'{x:g}' for x in v)}"
                                                                      for k, v in lrs.items()))
    lines.append("")
    if m.get("pretrain"):
        lines += ["gpt2_local ladder pretrained here from scratch (`experiment=pretrain_gpt2_local`): " +
                  "; ".join(f"{k}: {p['status']}, val ppl {((p.get('metrics') or {}).get('val/ppl') or float('nan')):.1f}"
                            for k, p in m["pretrain"].items()), ""]
    bad = {k: s for k, s in m["statuses"].items() if s != "ok"}
    lines += [f"Runs: {len(m['statuses'])} ({len(bad)} not ok{': ' + ', '.join(f'{k} {s}' for k, s in bad.items()) if bad else ''}).", "",
              ("Files: [report.md](report.md) (tables: mean ± std over seeds of the selected lr's runs; parameter "
               "columns name their count type), [selection.md](selection.md) (every lr's selection score), "
               "report.csv / report.tex / report.html, plots/, manifest.json (run ids, statuses)."), ""]
    return "\n".join(lines)


def selection_markdown(m: dict[str, Any]) -> str:
    lines = [f"# lr selection — grid `{m['grid']}`", "", f"Command: `{m['command']}`", "",
             "Splits: " + "; ".join(f"{k}: {v}" for k, v in m["splits"].items()) + ".", "",
             f"Methods skipped (not registered / no conf): {', '.join(m['methods_skipped_not_available']) or 'none'}", "",
             "| task | model | size | method | selection metric | mean over seeds per lr | best lr | flag |",
             "|---|---|---|---|---|---|---|---|"]
    for r in m["selection"]:
        scores = ", ".join(f"{k}: {v:.4f}" for k, v in r["lr_scores"].items()) or "no ok run"
        flag = ("every lr ties (grid flat): the data select none, the smallest is kept" if r.get("flat") else
                f"at the {r['edge']} edge of the lrs tried: the optimum may lie beyond" if r.get("edge") else "")
        lines.append(f"| {r['task']} | {r['model']} | {r['size']} | {r['method']} | {r['select_on']} | {scores} | "
                     f"{r['best_lr'] if r['best_lr'] is not None else '—'} | {flag} |")
    ext = m.get("lr_grid_extensions") or []
    lines += ["", f"Edge-selected grids were extended by one lr step, at most {rounds_text(m.get('extend_edges', 1))} time(s) per "
              f"group ({len(ext)} extra run(s)" + (": " + "; ".join(
                  f"{e['task']} {e['model']}-{e['size']} {e['method']} +lr {e['added_lr']:g}" for e in ext) if ext else "")
              + "); a flag left above means the bound was reached."]
    return "\n".join(lines) + "\n"


def rounds_text(rounds: int | dict[str, int]) -> str:
    """``2``, or ``2 (wiki_lm:gpt2_local-s/…: 4)`` when some task has its own rounds (the base is
    the most common value; a tie goes to the smallest)."""
    if isinstance(rounds, int):
        return str(rounds)
    vals = list(rounds.values())
    common = max(sorted(set(vals)), key=vals.count, default=1)
    own = [f"{k}: {v}" for k, v in rounds.items() if v != common]
    return f"{common}" + (f" ({'; '.join(own)})" if own else "")


def dry_run(grid: Grid, shared: Path | None = None, extend: int | None = None) -> list[str]:
    methods, skipped = available_methods(grid.methods)
    out = [f"# grid {grid.name}: methods {methods} (skipped: {skipped}), seeds {grid.seeds}"]
    out += [f"pretrain gpt2_local-{s}: {' '.join(pretrain_overrides(grid, s, shared))}" for s in ladder_sizes(grid)]
    out += [f"{c.rel_dir()}: {' '.join(c.overrides(grid, shared))}" for c in cells(grid, methods)]
    extra = sum(len(t.models) * len(t.own_methods(methods)) * (len(grid.seeds_of(t)) - 1) for t in grid.tasks)
    out.append(f"# then up to {rounds_text(grid.extend_per_task(extend))} more lr(s) per group whose selected lr is at an edge of its grid, and "
               f"{extra} more runs: the other seeds at each group's selected lr")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m peftbench.cli.suite", description=__doc__.splitlines()[0])
    p.add_argument("--grid", default="standard_cpu", choices=sorted(grids()))
    p.add_argument("--quick", action="store_true", help="the CI edition (= --grid standard_quick)")
    p.add_argument("--dry-run", action="store_true", help="print the grid (one line per run) and exit")
    p.add_argument("--only", default=None,
                   help="comma-separated task names: run just those; a later run without --only skips every "
                        "finished cell and writes the whole report")
    p.add_argument("--sizes", default=None,
                   help="comma-separated model sizes (e.g. l): run just those sizes' cells (and ladder); like --only, "
                        "no full report is written")
    p.add_argument("--out", default="outputs/suite",
                   help="scratch folder: pretrained ladder weights (<out>/pretrained) and, without --report or "
                        "--runs, the run records (<out>/<grid>/runs)")
    p.add_argument("--report", default=None, help="report folder (e.g. reports/standard-cpu); the records go to "
                                                  "<report>/runs unless --runs says otherwise")
    p.add_argument("--runs", default=None, help="run records folder (default: <report>/runs, else <out>/<grid>/runs)")
    p.add_argument("--extend-edges", type=int, default=None, metavar="N",
                   help="rounds that add one lr beyond a grid edge the selection chose, for every task (0: never; "
                        "default: each task's extend_edges, else the grid's, else 1)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="N single-thread worker processes side by side (whole groups each; on 2 cores, 2 beats "
                        "one 2-thread process); the report is written once all have finished")
    p.add_argument("--shard", default=None, metavar="K/N", help="run only worker K's share of N (what --jobs starts)")
    p.add_argument("--no-report", action="store_true", help="no manifest or report (a --shard worker's part)")
    p.add_argument("--commit", action="store_true",
                   help="git-commit each finished run's record (and the report) as it lands: a stopped benchmark "
                        "loses nothing, a later invocation continues where it stopped")
    return p


def _cut(grid: Grid, a: argparse.Namespace, p: argparse.ArgumentParser) -> Grid:
    """``grid`` cut to --only's tasks and --sizes' sizes; an unknown name is a usage error."""
    if a.only:
        keep = set(a.only.split(","))
        unknown = keep - {t.name for t in grid.tasks}
        if unknown:
            p.error(f"--only: no task {sorted(unknown)} in grid {grid.name} (tasks: {[t.name for t in grid.tasks]})")
        grid = dataclasses.replace(grid, tasks=[t for t in grid.tasks if t.name in keep])
    if a.sizes:
        try:
            grid = only_sizes(grid, set(a.sizes.split(",")))
        except ConfigError as e:
            p.error(str(e))
    return grid


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    a = p.parse_args(argv)
    if a.extend_edges is not None and a.extend_edges < 0:
        p.error("--extend-edges must be >= 0")
    if a.jobs < 1:
        p.error("--jobs must be >= 1")
    shard = None
    if a.shard is not None:
        k, _, n = a.shard.partition("/")
        if not (k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
            p.error(f"--shard {a.shard}: expected K/N with 0 <= K < N")
        shard = (int(k), int(n))
    if shard and a.jobs > 1:
        p.error("--shard and --jobs exclude each other (--jobs starts the shards)")
    grid = _cut(grids()["standard_quick" if a.quick else a.grid], a, p)
    partial = bool(a.only or a.sizes)
    shared = Path(a.out) / "pretrained"
    if a.dry_run:
        print("\n".join(dry_run(grid, shared, a.extend_edges)))
        return 0
    logging.basicConfig(level=logging.WARNING)
    runs = runs_dir(a, grid)
    if shard is None:  # the workers' parent checked already
        try:
            preflight(grid, shared)
        except ConfigError as e:
            print(f"refused before any run: {e}", file=sys.stderr)
            return 2
    cmd = "python -m peftbench.cli.suite " + " ".join(argv if argv is not None else sys.argv[1:])
    if a.jobs > 1:
        code = run_workers(grid, a)
        if code:
            print(f"a worker exited {code}; finished runs are kept, a relaunch continues", file=sys.stderr)
            return code
    keep = None
    if shard is not None:
        mine = shard_of(grid, available_methods(grid.methods)[0], *shard)
        keep = lambda c: c.group in mine
    report = None if a.no_report or not a.report else Path(a.report)
    if report is not None and partial:  # a report of some cells would replace the whole grid's
        refs = reference_args(grid.references)
        print(f"--only/--sizes: no full report written (with --commit, a partial report.md beside the runs is kept in step); "
              f"`peftbench report {runs} --out <folder>{' ' * bool(refs)}{refs}` reports what has finished",
              file=sys.stderr)
        report = None
    m = run_grid(grid, runs, shared, report, cmd, a.extend_edges, keep, a.commit, reuse=a.jobs > 1, whole=not partial)
    bad = {k: v for k, v in m["statuses"].items() if v != "ok"}
    print(f"{len(m['statuses'])} runs, {len(bad)} not ok, {m['wall_s']} s; records: {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
