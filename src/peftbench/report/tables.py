"""Render a Collection as Markdown, CSV, LaTeX (booktabs) and one self-contained HTML page.

All renderers share one table model (``build_tables``) so the formats can never disagree.
Output is a pure function of the input: no timestamps, no absolute paths, fixed float
formatting, stable ordering — so committed reports diff cleanly.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from peftbench.report import referee as rf
from peftbench.report import stats
from peftbench.report.captions import caption
from peftbench.report.collect import Collection, Group, Stat, headline_metric, lower_is_better

DASH = "—"
NOISE_OVERHEAD = 0.05  # one run's latency ratio within ±5 % of the base is timing noise on a shared machine
METRIC_NOTE = (
    "Metrics: mean ± sample std (n seeds) [95% interval: t over seeds when n ≥ 2, bootstrap over the eval "
    "examples when n = 1]; best mean per column in bold. *vs <reference>*: paired test on the same eval "
    "examples (McNemar for accuracy with one seed; otherwise a paired bootstrap over the examples, each averaged "
    "over the seeds; ≈ = not significantly different, α = 0.05). "
    "*tie group*: rows not significantly different from their group's best (1 = best). *flags*: see the "
    "lines under each table and docs/report.md."
)
PARAM_NOTE = (
    "Parameter columns name their count type: *trainable* = updated by the optimizer; "
    "*% trainable* = trainable / total model scalars; *added* = scalars not in the base model; "
    "*changed* = scalars of the final model that differ from the base; "
    "*stored bytes* = what must be saved to rebuild the fine-tuned model from the base."
)


# ---------------------------------------------------------------- formatting helpers

def _decimals(x: float) -> int:
    return 2 if abs(x) >= 100 else 4


def fmt_float(x: float, decimals: int | None = None) -> str:
    """Fixed precision by magnitude: 4 decimals for scores, 2 for ppl-like values."""
    if not math.isfinite(x):
        return str(x)
    d = _decimals(x) if decimals is None else decimals
    return f"{x:.{d}f}"


def fmt_stat(st: Stat | None) -> str:
    """mean ± std (n); std shares the mean's decimals so columns line up."""
    if st is None:
        return DASH
    if st.std is None:
        return f"{fmt_float(st.mean)} ({st.n})"
    d = _decimals(st.mean)
    return f"{fmt_float(st.mean, d)} ± {fmt_float(st.std, d)} ({st.n})"


def _scaled(x: float | None, units: Sequence[tuple[float, str]], plain: str) -> str:
    """``x`` in the largest unit it reaches (2 decimals), else exact with the ``plain`` suffix."""
    if x is None:
        return DASH
    for div, unit in units:
        if abs(x) >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.0f}{plain}"


def fmt_count(x: float | None) -> str:
    """Human-readable scalar count (1.23M); exact below 1000."""
    return _scaled(x, ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")), "")


def fmt_bytes(x: float | None) -> str:
    return _scaled(x, ((1e12, " TB"), (1e9, " GB"), (1e6, " MB"), (1e3, " kB")), " B")


def fmt_plain(x: float | None, digits: int = 1) -> str:
    return DASH if x is None else f"{x:.{digits}f}"


def fmt_raw(x: Any) -> str:
    """CSV numbers: exact integers stay integers, floats get 10 significant digits."""
    if x is None:
        return ""
    if isinstance(x, float):
        if x.is_integer() and abs(x) < 1e15:
            return str(int(x))
        return f"{x:.10g}"
    return str(x)


# ---------------------------------------------------------------- table model

@dataclass
class Cell:
    text: str
    value: float | None = None  # raw number, for sorting (html) and choosing the best
    best: bool = False
    flags: tuple[rf.Flag, ...] = ()  # badges (html) with their reasons (tooltips)
    dim: bool = False  # a value flagged "≈ baseline": greyed in html


@dataclass
class Column:
    header: str
    get: Callable[[Group], Cell]
    numeric: bool = True
    metric: str | None = None  # set for task-metric columns: those get a "best" mark
    keep_empty: bool = False  # parameter columns are shown even when unmeasured
    detail: bool = False  # collapsed by default in html, so the table fits a 1280-px screen


@dataclass
class Table:
    model_family: str
    model_size: str
    dataset: str
    task: str
    columns: list[Column]
    groups: list[Group]
    rows: list[list[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    baselines: list[list[Cell]] = field(default_factory=list)  # majority class, untuned base model
    referee: rf.TableReferee | None = None

    def legend(self) -> list[tuple[str, rf.Flag]]:
        """(row, flag) for every flag in the table: the "why" a terminal reader cannot hover for."""
        out = []
        for g, row in zip(self.groups, self.rows):
            out += [(g.method, f) for c in row for f in c.flags]
        return out


def _stat_val(st: Stat | None) -> float | None:
    return None if st is None else st.mean


def _param_col(header: str, key: str, fmt: Callable[[float | None], str], detail: bool = False) -> Column:
    def get(g: Group) -> Cell:
        v = _stat_val(g.params.get(key))
        return Cell(fmt(v), v)
    return Column(header, get, keep_empty=True, detail=detail)


def _section_col(header: str, section: str, key: str, fmt: Callable[[float | None], str],
                 oom_text: str | None = None) -> Column:
    def get(g: Group) -> Cell:
        if g.status == "oom" and oom_text:
            return Cell(oom_text)
        v = _stat_val(getattr(g, section).get(key))
        return Cell(fmt(v), v)
    return Column(header, get, detail=True)


def fmt_interval(iv: rf.Interval | None, like: float) -> str:
    if iv is None:
        return ""
    d = _decimals(like)
    return f" [{fmt_float(iv.lo, d)}, {fmt_float(iv.hi, d)}]"


def _metric_col(metric: str, ref: rf.TableReferee | None = None) -> Column:
    arrow = "↓" if lower_is_better(metric) else "↑"

    def get(g: Group) -> Cell:
        if g.status == "oom":
            return Cell("OOM")
        st = g.metrics.get(metric)
        v = ref.of(g) if ref is not None else None
        iv = v.intervals.get(metric) if v is not None and st is not None else None
        dim = v is not None and metric == ref.metric and any(f.code == "baseline" for f in v.flags)
        return Cell(fmt_stat(st) + fmt_interval(iv, st.mean if st else 0.0), _stat_val(st), dim=dim)
    return Column(f"{metric} {arrow}", get, metric=metric)


def _n_cell(g: Group) -> Cell:
    n = len(g.seeds)
    text = str(n) + (f" (+{g.n_oom} OOM)" if g.n_oom and n else "")
    return Cell(text, float(n))


def _pct_cell(g: Group) -> Cell:
    p = g.pct_trainable
    if p is None:
        return Cell(DASH)
    return Cell(f"{p:.3f}%", p)


FORGET_KEYS = ("before", "after", "delta", "forgot")


def forgetting_stats(g: Group) -> dict[str, Stat]:
    """Mean ± std over the group's finished seeds of its results.json ``forgetting`` block."""
    runs = [r for r in g.runs if r.get("status") == "ok" and isinstance(r.get("forgetting"), dict)]
    out = {}
    for k in FORGET_KEYS:
        st = Stat.of([r["forgetting"].get(k) for r in runs])
        if st is not None:
            out[k] = st
    return out


def _forgetting_cell(g: Group) -> Cell:
    fs = forgetting_stats(g)
    if g.status != "ok" or "delta" not in fs:
        return Cell(DASH)
    unit = "ppl" if any((r.get("forgetting") or {}).get("measure") == "perplexity" for r in g.runs) else "acc"
    d = 2 if unit == "ppl" else 4
    return Cell(f"{fmt_float(fs['before'].mean, d)} → {fmt_float(fs['after'].mean, d)} ({fs['delta'].mean:+.3g} {unit})",
                fs["delta"].mean)


def _forgetting_notes(groups: Sequence[Group]) -> list[str]:
    """Which general set measured forgetting, and on how much text: a number means little without it."""
    seen = []
    for g in groups:
        for r in g.runs:
            f = r.get("forgetting") if r.get("status") == "ok" else None
            if not isinstance(f, dict) or "measure" not in f:
                continue
            if f["measure"] == "perplexity":
                text = (f"forgetting: perplexity on the held-out split of {f.get('set')} "
                        f"({f.get('n_examples')} blocks of {f.get('block_size')} tokens = {f.get('n_tokens')} scored "
                        f"tokens), before → after fine-tuning; Δ = after − before, higher = more forgetting")
            else:
                text = (f"forgetting: accuracy on {f.get('set')} ({f.get('n_examples')} examples) of a logistic-regression "
                        f"probe trained on the base model's mean-pooled features ({f.get('probe_train_examples')} "
                        f"examples), before → after fine-tuning; Δ = after − before, lower = more forgetting")
            if text not in seen:
                seen.append(text)
    return seen


def _vs_ref_col(ref: rf.TableReferee) -> Column:
    """Paired test against the reference row: the difference, or "≈" when not significant."""
    def get(g: Group) -> Cell:
        v = ref.of(g)
        if v.is_ref:
            return Cell("reference")
        c = v.vs_ref
        if c is None:
            return Cell("n/a" if g.status == "ok" else DASH)
        d = _decimals(ref.ref_group.metrics[ref.metric].mean) if ref.ref_group and ref.metric else 4
        p = "p<0.001" if c.p < 0.001 else f"p={c.p:.3f}"
        why = rf.Flag("tie" if not c.significant else "differs", "≈ reference" if not c.significant else "differs",
                      f"{c.test} on {c.n} paired {'seeds' if 'seeds' in c.test else 'examples'}: "
                      f"difference {c.diff:+.{d}f}, {p} (α = 0.05)")
        return Cell(_said(c, d), c.diff, flags=(why,))
    return Column(f"vs {ref.reference} ({ref.metric})", get)


def _tie_col(ref: rf.TableReferee) -> Column:
    def get(g: Group) -> Cell:
        t = ref.of(g).tie_group
        return Cell(DASH if g.status != "ok" else ("n/a" if t is None else str(t)), None if t is None else float(t))
    return Column("tie group", get)


def _flags_col(ref: rf.TableReferee) -> Column:
    def get(g: Group) -> Cell:
        fl = tuple(ref.of(g).flags)
        return Cell(", ".join(f.label for f in fl) or DASH, flags=fl)
    return Column("flags", get, numeric=False)


def _overhead_cell(g: Group) -> Cell:
    """Inference overhead (adapted ÷ base latency − 1) as a percentage with its spread over seeds;
    "≈ 0 (noise)" when the seeds' t-interval contains 0, or one run measured less than ±5 %."""
    vals = [float(r["speed"]["inference_overhead"]) for r in g.runs if r.get("status") == "ok"
            and isinstance((r.get("speed") or {}).get("inference_overhead"), (int, float))]
    if g.status != "ok" or not vals:
        return Cell(DASH)
    m = statistics.fmean(vals)
    if len(vals) >= 2:
        lo, hi = stats.t_interval(vals) or (m, m)
        spread = f" ± {100 * statistics.stdev(vals):.1f}%"
        noise = lo <= 0.0 <= hi
    else:
        spread, noise = " (1 run)", abs(m) < NOISE_OVERHEAD
    return Cell(f"≈ 0 (noise: {100 * m:+.1f}%{spread})" if noise else f"{100 * m:+.1f}%{spread}", m)


def _columns(groups: Sequence[Group], ref: rf.TableReferee | None = None) -> list[Column]:
    metrics = sorted({m for g in groups for m in g.metrics})
    metrics = [m for m in metrics if not (m.endswith("_before") and m[: -len("_before")] in metrics)]
    cols = [
        Column("method", lambda g: Cell(g.method), numeric=False),
        Column("method family", lambda g: Cell(g.method_family or DASH), numeric=False),
        Column("seeds", _n_cell),
        _param_col("trainable params", "trainable", fmt_count),
        Column("% trainable", _pct_cell, keep_empty=True),
        _param_col("added params", "added", fmt_count, detail=True),
        _param_col("changed params", "changed", fmt_count, detail=True),
        _param_col("stored bytes", "stored_bytes", fmt_bytes, detail=True),
    ]
    cols += [_metric_col(m, ref) for m in metrics]
    if ref is not None and ref.ref_group is not None:
        cols.append(_vs_ref_col(ref))
    if ref is not None and any(v.tie_group is not None for v in ref.verdicts.values()):
        cols.append(_tie_col(ref))
    if ref is not None and any(v.flags for v in ref.verdicts.values()):
        cols.append(_flags_col(ref))
    cols.append(Column("forgetting (before → after, Δ)", _forgetting_cell))
    cols += [
        _section_col("peak GPU alloc (MB)", "memory", "peak_gpu_allocated_mb", fmt_plain, "OOM"),
        _section_col("peak GPU reserved (MB)", "memory", "peak_gpu_reserved_mb", fmt_plain, "OOM"),
        _section_col("peak RSS (MB)", "memory", "peak_rss_mb", fmt_plain),
        _section_col("train tokens/s", "speed", "train_tokens_per_s", fmt_plain),
        _section_col("useful tokens/s", "speed", "useful_tokens_per_s", fmt_plain),
        Column("inference overhead", _overhead_cell, detail=True),
    ]
    return cols


def _baseline_rows(cols: Sequence[Column], ref: rf.TableReferee) -> list[list[Cell]]:
    """Rows for the majority-class rate and the untuned base model, under the metric columns they score."""
    out = []
    for name, by_metric in (("majority class", {m: f"{r:.4f} (n={n})" for m, (r, n) in ref.majority.items()}),
                            ("base model (untuned)", {m: fmt_stat(st) for m, st in ref.before.items()})):
        vals = {**{m: r for m, (r, _) in ref.majority.items()}} if name == "majority class" else \
            {m: st.mean for m, st in ref.before.items()}
        if not any(c.metric in by_metric for c in cols):
            continue
        row = []
        for c in cols:
            if c.header == "method":
                row.append(Cell(name))
            elif c.header == "method family":
                row.append(Cell("baseline"))
            elif c.metric in by_metric:
                row.append(Cell(by_metric[c.metric], vals[c.metric]))
            else:
                row.append(Cell(""))
        out.append(row)
    return out


def _mark_best(table: Table) -> None:
    """Bold the best mean per metric column; ties share it; needs ≥ 2 rows to compare."""
    for j, col in enumerate(table.columns):
        if col.metric is None:
            continue
        vals = [row[j].value for row in table.rows if row[j].value is not None]
        if len(vals) < 2:
            continue
        best = min(vals) if lower_is_better(col.metric) else max(vals)
        for row in table.rows:
            if row[j].value is not None and row[j].value == best:
                row[j].best = True


# "attempts" is the list of micro-batch sizes that ran out of memory before a run fit (auto micro-batch)
_BUDGET_NAMES = {"attempts": "OOM retries"}


def _budget_value(key: str, v: Any) -> str:
    if v is None:
        return DASH
    if key == "attempts":  # the micro-batches that ran out of memory before the run fit (micro_batch_size: auto)
        return str(len(v)) if isinstance(v, list) else str(v)
    return fmt_raw(v)


def _budget_notes(groups: Sequence[Group]) -> list[str]:
    """Say whether methods were trained under one budget: unequal budgets skew comparisons."""
    keys = sorted({k for g in groups for k in g.budget})
    same, differ = [], []
    for k in keys:
        vals = sorted({_budget_value(k, g.budget.get(k)) for g in groups})
        (same if len(vals) == 1 else differ).append((k, vals))
    notes = []
    if same:
        notes.append("budget: " + ", ".join(f"{_BUDGET_NAMES.get(k, k)}={v[0]}" for k, v in same))
    if differ:
        notes.append("WARNING: budget differs across rows: "
                     + "; ".join(f"{_BUDGET_NAMES.get(k, k)} in {{{', '.join(v)}}}" for k, v in differ))
    return notes


def build_tables(coll: Collection, reference: str = rf.DEFAULT_REFERENCE, also: Sequence[str] = ()) -> list[Table]:
    """One table per model × size × dataset, rows ordered by method family then method; each
    judged by the referee (baselines, intervals, paired tests against ``reference`` in a column and
    against each of ``also`` in a note, flags)."""
    buckets: dict[tuple[str, str, str], list[Group]] = {}
    for g in coll.groups:  # already sorted; dict keeps first-seen order
        buckets.setdefault((g.model_family, g.model_size, g.dataset), []).append(g)
    tables = []
    for (fam, size, ds), groups in buckets.items():
        judge = rf.judge(groups, headline_metric(groups), reference, also)
        groups = [g for g in groups if g.method not in judge.hidden]
        cols = _columns(groups, judge)
        rows = [[c.get(g) for c in cols] for g in groups]
        # Drop measurement columns nobody measured (e.g. GPU memory on a CPU sweep).
        keep = [j for j, c in enumerate(cols)
                if c.keep_empty or not c.numeric or c.metric
                or any(r[j].value is not None or r[j].flags for r in rows)]
        cols = [cols[j] for j in keep]
        notes = _budget_notes(groups) + _forgetting_notes(groups) + judge.notes + _referee_notes(judge, groups)
        t = Table(fam, size, ds, groups[0].task, cols, groups, [[r[j] for j in keep] for r in rows], notes,
                  _baseline_rows(cols, judge), judge)
        _mark_best(t)
        tables.append(t)
    return tables


def _referee_notes(judge: rf.TableReferee, groups: Sequence[Group]) -> list[str]:
    """Say when the paired comparison could not run, so a missing column is never read as "no difference"."""
    if judge.metric is None or len(groups) < 2:
        return []
    out = []
    if judge.ref_group is None:
        out.append(f"paired comparison: n/a (no ok '{judge.reference}' row with {judge.metric} in this table; "
                   "choose another with `peftbench report --reference NAME`)")
    for name, (row, tests) in judge.also.items():
        if row is None:
            out.append(f"vs {name}: n/a (no ok '{name}' row with {judge.metric} in this table)")
            continue
        d = _decimals(row.metrics[judge.metric].mean)
        said = [f"{m} {'n/a' if c is None else _said(c, d)}" for m, c in tests.items()]
        kinds = sorted({c.test for c in tests.values() if c is not None})
        out.append(f"vs {row.method} ({judge.metric}, row − {name}; {', '.join(kinds) or 'no paired test'}; "
                   f"≈ = not significant at α = 0.05): " + "; ".join(said))
    return out


def _said(c: rf.Comparison, d: int) -> str:
    """A paired test in a few characters: "≈ (+0.012, p=0.310)" or "-0.031 (p<0.001)"."""
    p = "p<0.001" if c.p < 0.001 else f"p={c.p:.3f}"
    return f"≈ ({c.diff:+.{d}f}, {p})" if not c.significant else f"{c.diff:+.{d}f} ({p})"


def _blocks(tables: Sequence[Table]) -> list[tuple[tuple[str, str], list[Table]]]:
    """Tables grouped per model × size, so size effects read top to bottom."""
    out: dict[tuple[str, str], list[Table]] = {}
    for t in tables:
        out.setdefault((t.model_family, t.model_size), []).append(t)
    return list(out.items())


def _summary(coll: Collection) -> str:
    by_status: dict[str, int] = {}
    for f in coll.failures:
        by_status[f.status] = by_status.get(f.status, 0) + 1
    not_ok = sum(by_status.values())
    detail = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
    parts = [f"{coll.n_ok} ok run{'s' if coll.n_ok != 1 else ''}",
             f"{not_ok} not ok" + (f" ({detail})" if detail else ""),
             f"{len(coll.groups)} row{'s' if len(coll.groups) != 1 else ''} (one per configuration, its seeds "
             "aggregated)",
             f"{len(coll.skipped)} unreadable file{'s' if len(coll.skipped) != 1 else ''} skipped"]
    return " · ".join(parts)


def _first_line(s: str, limit: int = 160) -> str:
    lines = [ln.strip() for ln in s.strip().splitlines() if ln.strip()]
    # The last line of a traceback names the exception; it is the informative one.
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


FAIL_HEADERS = ["status", "model", "size", "dataset", "method", "seed", "run_id", "error", "path"]


def _fail_row(f: Any) -> list[str]:
    return [f.status, f.model_family, f.model_size, f.dataset, f.method, str(f.seed),
            f.run_id or DASH, _first_line(f.error) or DASH, f.path]


# ---------------------------------------------------------------- markdown

def _md_escape(s: str) -> str:
    """One line of inert text: a name from a record can neither split a table cell nor start a
    heading of its own (line breaks of any kind, U+2028 included, become spaces)."""
    return " ".join(str(s).replace("\\", "\\\\").replace("|", "\\|").splitlines())


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    out = ["| " + " | ".join(_md_escape(h) for h in headers) + " |",
           "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _md_bold(text: str) -> str:
    """Bold the mean ± std, not the interval after it."""
    head, sep, iv = text.partition(" [")
    return f"**{_md_escape(head)}**" + (_md_escape(sep + iv) if sep else "")


def _md_block(t: Table) -> list[str]:
    """One table: rows, then the baseline rows, the notes, why each flag was raised, the tuning grids."""
    lines = [f"### {_md_escape(t.dataset)}" + (f" ({_md_escape(t.task)})" if t.task else ""), ""]
    rows = [[_md_bold(c.text) if c.best else _md_escape(c.text) for c in r] for r in t.rows]
    rows += [[f"_{_md_escape(c.text)}_" if c.text else "" for c in r] for r in t.baselines]
    lines += _md_table([c.header for c in t.columns], rows, [c.numeric for c in t.columns])
    lines.append("")
    lines += [f"_{_md_escape(n)}_" for n in t.notes]
    if t.notes:
        lines.append("")
    legend = [(m, f) for m, f in t.legend() if f.code not in ("tie", "differs")]
    if legend:
        lines += [f"- {_md_escape(m)} — **{_md_escape(f.label)}**: {_md_escape(f.why)}" for m, f in legend] + [""]
    for sw in (t.referee.sweeps if t.referee else []):
        lines += _md_sweep(sw)
    return lines


def sweep_rows(sw: rf.Sweep) -> list[list[str]]:
    """The selection table of one tuning grid: value, selection score (mean ± std (n)), mark."""
    out = []
    for v, st, g in sw.rows:
        mark = ""
        if g is sw.selected:
            mark = "selected" + (" (every value ties)" if sw.flat else f" (at the {sw.edge} edge of the grid)"
                                 if sw.edge else "")
        out.append([f"{v:g}", fmt_stat(st), mark])
    return out


def _md_sweep(sw: rf.Sweep) -> list[str]:
    short = sw.key.rsplit(".", 1)[-1]
    lines = [f"Tuning grid of {_md_escape(sw.method)} over `{_md_escape(sw.key)}` (selected on {sw.metric}):", ""]
    lines += _md_table([short, sw.metric, "selection"], [[_md_escape(x) for x in r] for r in sweep_rows(sw)],
                       [True, True, False])
    return lines + [""]


def to_markdown(coll: Collection, tables: Sequence[Table] | None = None,
                plot_files: Sequence[str] = ()) -> str:
    """The report as GitHub-flavoured Markdown; best metric per column in bold."""
    tables = build_tables(coll) if tables is None else tables
    lines = ["# peftbench report", "", _summary(coll), ""]
    if tables:
        lines += [PARAM_NOTE, "", METRIC_NOTE, ""]
    for (fam, size), ts in _blocks(tables):
        lines += [f"## {_md_escape(fam)} · {_md_escape(size)}", ""]
        for t in ts:
            lines += _md_block(t)
    if coll.failures:
        lines += ["## Runs that did not finish", ""]
        lines += _md_table(FAIL_HEADERS, [[_md_escape(x) for x in _fail_row(f)] for f in coll.failures],
                           [False] * len(FAIL_HEADERS))
        lines.append("")
    if coll.skipped:
        lines += ["## Skipped files", "",
                  f"{len(coll.skipped)} results.json file(s) could not be read or failed validation:", ""]
        lines += [f"- `{s.rel}`: {_md_escape(_first_line(s.reason))}" for s in coll.skipped]
        lines.append("")
    if plot_files:
        lines += ["## Plots", ""]
        for p in plot_files:
            lines += [f"![{_md_escape(Path(p).stem)}]({p})", "", f"_{_md_escape(caption(Path(p)))}_", ""]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- csv

REFEREE_CSV = ["reference", "vs_reference_diff", "vs_reference_p", "vs_reference_test", "tie_group",
               "baseline_p", "flags", "tuning"]


def _csv_referee(t: Table | None, g: Group) -> list[str]:
    if t is None or t.referee is None:
        return [""] * len(REFEREE_CSV)
    ref = t.referee
    tuning = "selected" if any(sw.selected is g for sw in ref.sweeps) else ""
    if g.method in ref.hidden:  # a grid point the selection did not pick: its numbers, no verdicts
        return [""] * (len(REFEREE_CSV) - 1) + ["not selected"]
    v = ref.of(g)
    c = v.vs_ref
    return [ref.ref_group.method if ref.ref_group else "", fmt_raw(c.diff) if c else "", fmt_raw(c.p) if c else "",
            c.test if c else ("reference" if v.is_ref else ""), "" if v.tie_group is None else str(v.tie_group),
            fmt_raw(v.baseline_p), ";".join(f.code for f in v.flags), tuning]


def _csv_metric(g: Group | None, m: str, v: rf.Verdict | None, baseline: float | None = None) -> list[str]:
    if g is None:  # a baseline row: the value only
        return [fmt_raw(baseline), "", "", "", "", ""] if baseline is not None else [""] * 6
    st = g.metrics.get(m)
    iv = v.intervals.get(m) if v is not None else None
    if st is None:
        return [""] * 6
    return [fmt_raw(st.mean), fmt_raw(st.std), str(st.n)] + \
        ([fmt_raw(iv.lo), fmt_raw(iv.hi), iv.how] if iv else ["", "", ""])


def _csv_baselines(t: Table, metrics: Sequence[str], width: int) -> list[list[str]]:
    """The majority-class and untuned-base-model rows of one table, under their metric columns."""
    ref = t.referee
    if ref is None:
        return []
    out = []
    for name, vals in (("majority class", {m: r for m, (r, _) in ref.majority.items()}),
                       ("base model (untuned)", {m: st.mean for m, st in ref.before.items()})):
        if not any(m in vals for m in metrics):
            continue
        row = [t.model_family, t.model_size, t.dataset, t.task, "baseline", name, "baseline", "", "", ""]
        row += [""] * width
        for m in metrics:
            row += _csv_metric(None, m, None, vals.get(m))
        out.append(row)
    return out


def to_csv(coll: Collection, tables: Sequence[Table] | None = None) -> str:
    """One flat row per table row (a configuration: mean/std/n over its seeds, the 95% interval and
    how it was computed, the referee's verdicts), then each table's baseline rows (status "baseline")."""
    tables = build_tables(coll) if tables is None else tables
    of_group = {g.key: t for t in tables for g in t.groups}
    of_group.update({g.key: t for t in tables if t.referee for sw in t.referee.sweeps for _, _, g in sw.rows})
    groups = coll.groups
    metrics = sorted({m for g in groups for m in g.metrics})
    params = sorted({k for g in groups for k in g.params})
    memory = sorted({k for g in groups for k in g.memory})
    speed = sorted({k for g in groups for k in g.speed})
    header = ["model_family", "model_size", "dataset", "task", "method_family", "method", "status",
              "n_seeds", "seeds", "n_oom"]
    header += [f"params_{k}" for k in params] + ["pct_trainable"]
    for m in metrics:
        header += [f"{m}_mean", f"{m}_std", f"{m}_n", f"{m}_ci_low", f"{m}_ci_high", f"{m}_ci_method"]
    tail = [f"memory_{k}" for k in memory] + [f"speed_{k}" for k in speed] + REFEREE_CSV
    has_forget = any(forgetting_stats(g) for g in groups)
    tail += [f"forgetting_{k}" for k in FORGET_KEYS] if has_forget else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header + tail)
    for g in groups:
        t = of_group.get(g.key)
        v = t.referee.of(g) if t is not None and t.referee is not None else None
        row: list[str] = [g.model_family, g.model_size, g.dataset, g.task, g.method_family, g.method,
                          g.status, str(len(g.seeds)), " ".join(map(str, g.seeds)), str(g.n_oom)]
        row += [fmt_raw(_stat_val(g.params.get(k))) for k in params]
        row.append(fmt_raw(g.pct_trainable))
        for m in metrics:
            row += _csv_metric(g, m, v)
        row += [fmt_raw(_stat_val(g.memory.get(k))) for k in memory]
        row += [fmt_raw(_stat_val(g.speed.get(k))) for k in speed]
        row += _csv_referee(t, g)
        if has_forget:
            fs = forgetting_stats(g)
            row += [fmt_raw(_stat_val(fs.get(k))) for k in FORGET_KEYS]
        w.writerow(row)
    for t in tables:
        w.writerows(r + [""] * len(tail) for r in _csv_baselines(t, metrics, len(params) + 1))
    return buf.getvalue()


def failures_csv(coll: Collection) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(FAIL_HEADERS)
    for f in coll.failures:
        w.writerow([f.status, f.model_family, f.model_size, f.dataset, f.method, f.seed,
                    f.run_id, f.error, f.path])
    return buf.getvalue()


# ---------------------------------------------------------------- latex

_TEX_ESC = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            "<": r"\textless{}", ">": r"\textgreater{}"}
_TEX_UNI = {"≈": r"$\approx$", "≥": r"$\geq$", "α": r"$\alpha$", "±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "—": "---", "·": r"$\cdot$",
            "×": r"$\times$", "…": r"\ldots{}", "→": r"$\rightarrow$", "Δ": r"$\Delta$", "−": r"$-$", "≤": r"$\leq$",
            "²": r"$^2$", "³": r"$^3$"}


def tex_escape(s: str) -> str:
    """Escaped LaTeX text; a `code span` (markdown's backticks, as in notes) becomes \\texttt{…}, since
    LaTeX would print a backtick as an opening quote."""
    parts = s.split("`")
    tail = ""
    if len(parts) % 2 == 0:  # backticks pair left to right; an unpaired last one is a character
        tail = r"\textasciigrave{}" + _tex_text(parts.pop())
    return "".join(f"\\texttt{{{_tex_text(p)}}}" if i % 2 else _tex_text(p) for i, p in enumerate(parts)) + tail


def _tex_text(s: str) -> str:
    out = "".join(_TEX_ESC.get(ch, ch) for ch in s)
    for k, v in _TEX_UNI.items():
        out = out.replace(k, v)
    return out


def to_latex(coll: Collection, tables: Sequence[Table] | None = None) -> str:
    """booktabs tables (one per model × size × dataset), a \\midrule between method families."""
    tables = build_tables(coll) if tables is None else tables
    out = ["% Generated by peftbench report. Requires \\usepackage{booktabs}.", ""]
    for t in tables:
        spec = "".join("r" if c.numeric else "l" for c in t.columns)
        cap = f"{t.model_family} {t.model_size} on {t.dataset}"
        out += ["\\begin{table}[t]", "\\centering", "\\small",
                f"\\caption{{{tex_escape(cap)}}}",
                f"\\label{{tab:{_slug(t.model_family)}-{_slug(t.model_size)}-{_slug(t.dataset)}}}",
                f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
                " & ".join(tex_escape(c.header) for c in t.columns) + " \\\\", "\\midrule"]
        prev = None
        for g, row in zip(t.groups, t.rows):
            if prev is not None and g.method_family != prev:
                out.append("\\midrule")
            prev = g.method_family
            cells = [(f"\\textbf{{{tex_escape(c.text)}}}" if c.best else tex_escape(c.text)) for c in row]
            out.append(" & ".join(cells) + " \\\\")
        out += _tex_baselines(t) + ["\\bottomrule", "\\end{tabular}"] + _tex_legend(t)
        out += [f"\\par\\footnotesize {tex_escape(n)}" for n in t.notes] + ["\\end{table}", ""]
    if coll.failures:
        out += ["\\begin{table}[t]", "\\centering", "\\small", "\\caption{Runs that did not finish}",
                "\\begin{tabular}{" + "l" * 6 + "}", "\\toprule",
                " & ".join(tex_escape(h) for h in FAIL_HEADERS[:6]) + " \\\\", "\\midrule"]
        for f in coll.failures:
            out.append(" & ".join(tex_escape(x) for x in _fail_row(f)[:6]) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out)


def _tex_baselines(t: Table) -> list[str]:
    if not t.baselines:
        return []
    return ["\\midrule"] + [" & ".join(f"\\textit{{{tex_escape(c.text)}}}" if c.text else "" for c in row) + " \\\\"
                            for row in t.baselines]


def _tex_legend(t: Table) -> list[str]:
    """Why each flag was raised, under the table (a paper cannot hover)."""
    legend = [(m, f) for m, f in t.legend() if f.code not in ("tie", "differs")]
    return [f"\\par\\footnotesize {tex_escape(m)}: \\textbf{{{tex_escape(f.label)}}} --- {tex_escape(f.why)}"
            for m, f in legend]


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in s.lower()).strip("-") or "x"


# ---------------------------------------------------------------- html

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;white-space:nowrap}
th{background:#f4f4f4;cursor:pointer;user-select:none;position:sticky;top:0}
th[data-dir=asc]::after{content:" \\25B2"}th[data-dir=desc]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.best{font-weight:bold;background:#eef8ee}
tr.fam-start td{border-top:2px solid #999}
#filters{position:sticky;top:0;background:#fff;padding:.5em 0;z-index:2}
#filters input,#filters select{margin-right:.5em}
.note{color:#555;font-size:12px}.warn{color:#a40}
figure{display:inline-block;margin:0 1em 1em 0;max-width:640px}figure img{max-width:640px}
figcaption{font-size:12px;color:#444}
body:not(.wide) .detail{display:none}
.badge{display:inline-block;border-radius:3px;padding:0 4px;margin:0 2px 1px 0;font-size:11px;cursor:help;
 background:#fde2b8;color:#6b3b00}.b-baseline,.b-constant{background:#f8c9c4;color:#7a1200}
.ci{color:#666;font-size:11px}td.dim{color:#999}tr.baseline td{font-style:italic;color:#555;background:#fafafa}
.legend{font-size:12px;color:#444;margin-top:0}
td.wrap{white-space:normal;max-width:22em;overflow-wrap:anywhere}
table.sweep{font-size:12px}
"""

_JS = """
(function(){
function apply(){
 var q=document.getElementById('q').value.toLowerCase(),sel={};
 document.querySelectorAll('select[data-key]').forEach(function(s){sel[s.dataset.key]=s.value;});
 document.querySelectorAll('tbody tr').forEach(function(tr){
  var ok=tr.textContent.toLowerCase().indexOf(q)>=0;
  for(var k in sel){if(sel[k]&&tr.dataset[k]!==undefined&&tr.dataset[k]!==sel[k])ok=false;}
  tr.style.display=ok?'':'none';});
 document.querySelectorAll('.block').forEach(function(b){
  var any=Array.prototype.some.call(b.querySelectorAll('tbody tr'),
   function(tr){return tr.style.display!=='none';});
  b.style.display=any?'':'none';});
}
document.getElementById('q').addEventListener('input',apply);
document.querySelectorAll('select[data-key]').forEach(function(s){s.addEventListener('change',apply);});
document.querySelectorAll('th').forEach(function(th){th.addEventListener('click',function(){
 var table=th.closest('table'),idx=Array.prototype.indexOf.call(th.parentNode.children,th);
 var asc=th.dataset.dir!=='asc';
 table.querySelectorAll('th').forEach(function(h){delete h.dataset.dir;});
 th.dataset.dir=asc?'asc':'desc';
 var tb=table.tBodies[0],rows=Array.prototype.slice.call(tb.rows);
 function key(r){var c=r.cells[idx],v=c.dataset.v;
  return (v!==undefined&&v!=='')?parseFloat(v):c.textContent.trim().toLowerCase();}
 rows.sort(function(a,b){var x=key(a),y=key(b),xn=typeof x==='number',yn=typeof y==='number',r;
  if(xn&&yn)r=x-y;else if(xn)r=-1;else if(yn)r=1;else r=x<y?-1:(x>y?1:0);return asc?r:-r;});
 rows.forEach(function(r){r.classList.remove('fam-start');tb.appendChild(r);});
});});
// A shareable view in the URL: #family=additive&size=tiny&q=lora&sort=-trainable (header text;
// a leading '-' sorts descending). Also lets a headless browser test filters and sorting.
var h=new URLSearchParams(location.hash.replace(/^#/,''));
h.forEach(function(v,k){
 var s=document.querySelector('select[data-key="'+k+'"]');if(s)s.value=v;
 if(k==='q')document.getElementById('q').value=v;});
apply();
var srt=h.get('sort');
if(srt){var desc=srt.charAt(0)==='-',name=(desc?srt.slice(1):srt).toLowerCase();
 document.querySelectorAll('th').forEach(function(th){
  if(th.textContent.trim().toLowerCase()===name){th.click();if(desc)th.click();}});}
var w=document.getElementById('wide');
if(w){w.checked=h.get('wide')==='1';document.body.classList.toggle('wide',w.checked);
 w.addEventListener('change',function(){document.body.classList.toggle('wide',w.checked);});}
var widest=0,ws=[];document.querySelectorAll('table').forEach(function(t){widest=Math.max(widest,t.offsetWidth);
 ws.push(t.offsetWidth);});
document.body.setAttribute('data-widest',String(widest));document.body.setAttribute('data-widths',ws.join(' '));
document.body.setAttribute('data-ready','1');
})();
"""


def _e(s: str) -> str:
    return html.escape(s, quote=True)


def _select(key: str, label: str, values: Sequence[str]) -> str:
    opts = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)
    return (f'<select data-key="{key}" aria-label="{_e(label)}">'
            f'<option value="">all {_e(label)}</option>{opts}</select>')


def _html_head(coll: Collection) -> list[str]:
    """Page head, summary, notes and the filter bar (its choices cover failed runs too)."""
    g_all = coll.groups
    models = sorted({g.model_family for g in g_all} | {f.model_family for f in coll.failures})
    sizes = sorted({g.model_size for g in g_all} | {f.model_size for f in coll.failures})
    fams = sorted({g.method_family for g in g_all if g.method_family})
    dsets = sorted({g.dataset for g in g_all} | {f.dataset for f in coll.failures})
    return ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width,initial-scale=1">',
            '<title>peftbench report</title>', f'<style>{_CSS}</style></head><body>',
            '<h1>peftbench report</h1>', f'<p>{_e(_summary(coll))}</p>',
            f'<p class="note">{_e(PARAM_NOTE.replace("*", ""))} {_e(METRIC_NOTE.replace("*", ""))} Flags are '
            'badges: hover one for the reason. Click a header to sort; tick "all columns" for costs.</p>',
            '<div id="filters"><input id="q" type="search" placeholder="filter rows…">',
            _select("model", "models", models), _select("size", "sizes", sizes),
            _select("family", "method families", fams), _select("dataset", "datasets", dsets),
            '<label title="added/changed params, stored bytes, memory, throughput, inference overhead">'
            '<input id="wide" type="checkbox"> all columns</label></div>']


def _html_cell_body(cell: Cell) -> str:
    """Badges carry their reason as a tooltip; an interval goes on its own line so columns stay narrow."""
    if cell.flags and all(f.code not in ("tie", "differs") for f in cell.flags):
        return " ".join(f'<span class="badge b-{f.code}" title="{_e(f.why)}">{_e(f.label)}</span>'
                        for f in cell.flags)
    text, _, iv = cell.text.partition(" [")
    body = _e(text) + (f'<br><span class="ci">[{_e(iv)}</span>' if iv else "")
    if cell.flags:  # a paired comparison: the test, n and p on hover
        body = f'<span title="{_e(cell.flags[0].why)}">{body}</span>'
    return body


def _html_cells(t: Table, row: list[Cell]) -> str:
    tds = []
    for c, cell in zip(t.columns, row):
        classes = ((["num"] if c.numeric else []) + (["best"] if cell.best else []) + (["detail"] if c.detail else [])
                   + (["dim"] if cell.dim else []) + (["wrap"] if c.header == "flags" else []))
        ca = f' class="{" ".join(classes)}"' if classes else ''
        dv = f' data-v="{fmt_raw(cell.value)}"' if cell.value is not None else ''
        tds.append(f'<td{ca}{dv}>{_html_cell_body(cell)}</td>')
    return "".join(tds)


def _html_row(t: Table, g: Group, row: list[Cell], cls: str) -> str:
    """One result row: data-* attributes for the filters, data-v (the raw number) for sorting."""
    attrs = (f' data-model="{_e(g.model_family)}" data-size="{_e(g.model_size)}"'
             f' data-family="{_e(g.method_family)}" data-dataset="{_e(g.dataset)}"')
    return f'<tr{cls}{attrs}>' + _html_cells(t, row) + '</tr>'


def _html_sweeps(t: Table) -> list[str]:
    p = []
    for sw in (t.referee.sweeps if t.referee else []):
        short = sw.key.rsplit(".", 1)[-1]
        p.append(f'<p class="note">Tuning grid of {_e(sw.method)} over <code>{_e(sw.key)}</code> '
                 f'(selected on {_e(sw.metric)}):</p><table class="sweep"><thead><tr><th>{_e(short)}</th>'
                 f'<th>{_e(sw.metric)}</th><th>selection</th></tr></thead><tbody>')
        for r in sweep_rows(sw):
            p.append('<tr>' + "".join(f'<td class="num">{_e(x)}</td>' for x in r[:2])
                     + f'<td>{_e(r[2])}</td></tr>')
        p.append('</tbody></table>')
    return p


def _html_table(t: Table) -> list[str]:
    """One (model, size, dataset) table with its baselines, notes, flag reasons and tuning grids."""
    p = [f'<div class="block"><h3>{_e(t.dataset)}' + (f' ({_e(t.task)})' if t.task else '')
         + '</h3><table><thead><tr>'
         + "".join(f'<th{" class=" + chr(34) + "detail" + chr(34) if c.detail else ""}>{_e(c.header)}</th>'
                   for c in t.columns) + '</tr></thead><tbody>']
    prev = None
    for g, row in zip(t.groups, t.rows):
        cls = ' class="fam-start"' if prev is not None and g.method_family != prev else ''
        prev = g.method_family
        p.append(_html_row(t, g, row, cls))
    attrs = (f' data-model="{_e(t.model_family)}" data-size="{_e(t.model_size)}"'
             f' data-dataset="{_e(t.dataset)}"')
    p += [f'<tr class="baseline"{attrs}>' + _html_cells(t, row) + '</tr>' for row in t.baselines]
    p.append('</tbody></table>')
    for n in t.notes:
        warn = " warn" if n.startswith("WARNING") else ""
        p.append(f'<p class="note{warn}">{_e(n)}</p>')
    legend = [(m, f) for m, f in t.legend() if f.code not in ("tie", "differs")]
    if legend:
        p.append('<ul class="legend">' + "".join(f'<li>{_e(m)}: <b>{_e(f.label)}</b> — {_e(f.why)}</li>'
                                                  for m, f in legend) + '</ul>')
    p += _html_sweeps(t)
    p.append('</div>')
    return p


def _html_failures(coll: Collection) -> list[str]:
    """Runs that did not finish: the error's first line shown, the whole error on hover."""
    p = ['<div class="block"><h2>Runs that did not finish</h2><table><thead><tr>'
         + "".join(f"<th>{_e(h)}</th>" for h in FAIL_HEADERS) + '</tr></thead><tbody>']
    for f in coll.failures:
        attrs = (f' data-model="{_e(f.model_family)}" data-size="{_e(f.model_size)}"'
                 f' data-dataset="{_e(f.dataset)}"')
        row = _fail_row(f)
        row[7] = f.error.strip() or DASH
        cells = []
        for i, x in enumerate(row):
            if i == 7:
                cells.append(f'<td class="wrap" title="{_e(x)}">{_e(_first_line(x))}</td>')
            else:
                cells.append(f'<td{" class=" + chr(34) + "wrap" + chr(34) if i in (6, 8) else ""}>{_e(x)}</td>')
        p.append(f'<tr{attrs}>' + "".join(cells) + '</tr>')
    p.append('</tbody></table></div>')
    return p


def _html_plots(images: Sequence[Path]) -> list[str]:
    p = ['<h2>Plots</h2>']
    for img in images:
        data = base64.b64encode(Path(img).read_bytes()).decode("ascii")
        p.append(f'<figure><img alt="{_e(caption(img))}" src="data:image/png;base64,{data}">'
                 f'<figcaption>{_e(caption(img))}</figcaption></figure>')
    return p


def to_html(coll: Collection, tables: Sequence[Table] | None = None,
            images: Sequence[Path] = ()) -> str:
    """One self-contained page: inline CSS/JS, sortable + filterable tables, base64 plots."""
    tables = build_tables(coll) if tables is None else tables
    p = _html_head(coll)
    for (fam, size), ts in _blocks(tables):
        p.append(f'<div class="block"><h2>{_e(fam)} · {_e(size)}</h2>')
        for t in ts:
            p += _html_table(t)
        p.append('</div>')
    if coll.failures:
        p += _html_failures(coll)
    if coll.skipped:
        p.append(f'<h2>Skipped files</h2><p class="note warn">{len(coll.skipped)} results.json file(s) '
                 'could not be read or failed validation:</p><ul>'
                 + "".join(f'<li><code>{_e(s.rel)}</code>: {_e(s.reason)}</li>' for s in coll.skipped)
                 + '</ul>')
    if images:
        p += _html_plots(images)
    p.append(f'<script>{_JS}</script></body></html>')
    return "\n".join(p) + "\n"
