"""The report as referee: baselines, intervals, paired tests, tie groups, tuning and convergence flags.

Computed once per table (model family × size × dataset) from the records and their per-example
predictions; the renderers only display it. Every check that lacks its data says "n/a" instead of
guessing. docs/report.md explains each statistic.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from peftbench.report import evidence as ev
from peftbench.report import stats
from peftbench.report.collect import Group, Stat, config_items, lower_is_better

DEFAULT_REFERENCE = "full"


@dataclass(frozen=True)
class Flag:
    """A badge on a row: ``label`` is shown, ``why`` is the tooltip / legend sentence."""

    code: str  # baseline | constant | not_converged | edge | flat | weights | tie | na
    label: str
    why: str


@dataclass(frozen=True)
class Interval:
    lo: float
    hi: float
    how: str  # "t" (over seeds) | "bootstrap" (over eval examples)


@dataclass(frozen=True)
class Comparison:
    diff: float  # mean(row) − mean(other), in the metric's units
    p: float
    test: str  # "McNemar" | "paired bootstrap" | "paired t over seeds"
    n: int  # paired examples (or seeds)

    @property
    def significant(self) -> bool:
        return self.p < stats.ALPHA


@dataclass
class Sweep:
    """Rows of one method that differ in exactly one numeric hyper-parameter: a tuning grid."""

    method: str
    key: str
    metric: str
    rows: list[tuple[float, Stat | None, Group]]
    selected: Group | None = None
    edge: str | None = None
    edge_value: float | None = None  # the edge value: the selected one, or one tied with it

    @property
    def flat(self) -> bool:
        """Every value of a grid of three or more scores the same (``stats.flat``)."""
        return stats.flat([v for v, _, _ in self.rows], {v: s.mean for v, s, _ in self.rows if s is not None})


@dataclass
class Verdict:
    intervals: dict[str, Interval] = field(default_factory=dict)
    flags: list[Flag] = field(default_factory=list)
    vs_ref: Comparison | None = None
    is_ref: bool = False
    tie_group: int | None = None
    baseline_p: float | None = None


@dataclass
class TableReferee:
    metric: str | None
    reference: str
    ref_group: Group | None
    verdicts: dict[str, Verdict]  # by Group.method (unique inside a table)
    majority: dict[str, tuple[float, int]]  # metric column → (majority rate, n examples)
    before: dict[str, Stat]  # metric column → the untuned base model's value
    sweeps: list[Sweep]
    notes: list[str]
    hidden: set[str] = field(default_factory=set)  # rows a tuning grid did not select (by Group.method)
    # further references (`--reference full,lora`): name → (its row, every other row's paired test against it)
    also: dict[str, tuple[Group | None, dict[str, Comparison | None]]] = field(default_factory=dict)

    def of(self, g: Group) -> Verdict:
        return self.verdicts.setdefault(g.method, Verdict())


def base_method(g: Group) -> str:
    return g.method.split(" [", 1)[0]


def _ok_runs(g: Group) -> list[dict[str, Any]]:
    return [r for r in g.runs if r.get("status") == "ok"]


def _metric_values(g: Group, metric: str) -> list[float]:
    return [float(r["metrics"][metric]) for r in _ok_runs(g)
            if isinstance((r.get("metrics") or {}).get(metric), (int, float))]


# ---------------------------------------------------------------- intervals

_UNIT_RANGE = ("acc", "f1", "precision", "recall")  # scores in [0, 1]: a t-interval is clipped to it
# scores whose progress is read in points, not relative to a value that may sit near 0
_BOUNDED = (*_UNIT_RANGE, "mcc", "matthews", "pearson", "spearman", "exact_match")


def _is_bounded(metric: str) -> bool:
    """A score on a fixed scale (accuracy, F1, correlations): its changes are read in points."""
    return any(k in ev.base_of(metric).lower() for k in _BOUNDED)


def interval(g: Group, metric: str) -> Interval | None:
    """≥ 2 seeds: the t-interval over seeds; one seed: the percentile bootstrap over eval examples."""
    vals = _metric_values(g, metric)
    if len(vals) >= 2:
        lo_hi = stats.t_interval(vals)
        if lo_hi is None:
            return None
        if any(k in ev.base_of(metric).lower() for k in _UNIT_RANGE) and all(0.0 <= v <= 1.0 for v in vals):
            lo_hi = (max(lo_hi[0], 0.0), min(lo_hi[1], 1.0))
        return Interval(*lo_hi, "t")
    runs = _ok_runs(g)
    ex = ev.examples(runs[0], metric) if len(runs) == 1 else None
    if ex is None:
        return None
    lo_hi = stats.bootstrap_interval(stats.mean_stat(ex.values, ex.weights), len(ex.values))
    return Interval(ex.transform(lo_hi[0]), ex.transform(lo_hi[1]), "bootstrap") if lo_hi else None


# ---------------------------------------------------------------- baselines

def majority(groups: Sequence[Group]) -> tuple[dict[str, tuple[float, int]], list[str]]:
    """Majority-class rate per eval metric column, from the runs' ``eval`` blocks; a note if runs
    disagree (they scored different eval sets)."""
    seen: dict[str, set[tuple[float, int]]] = {}
    for g in groups:
        for r in _ok_runs(g):
            for blk in (r.get("eval") or {}).values():
                if isinstance(blk, dict) and blk.get("majority_rate") is not None and blk.get("metric"):
                    # the majority rate is an accuracy, whatever the split's headline (CoLA's is MCC)
                    col = f"{ev.split_of(str(blk['metric']))}/acc"
                    seen.setdefault(col, set()).add((float(blk["majority_rate"]), int(blk.get("n") or 0)))
    out, notes = {}, []
    for m, vals in sorted(seen.items()):
        out[m] = min(vals)
        if len(vals) > 1:
            notes.append(f"WARNING: runs scored {m} on different eval sets (majority rate, n: "
                         f"{', '.join(f'{a:.4f}, {b}' for a, b in sorted(vals))}); the lowest n is shown")
    return out, notes


def before(groups: Sequence[Group], metrics: Sequence[str]) -> dict[str, Stat]:
    """The untuned base model's ``<metric>_before`` over every run that measured it."""
    out = {}
    for m in metrics:
        st = Stat.of([(r.get("metrics") or {}).get(f"{m}_before") for g in groups for r in _ok_runs(g)])
        if st is not None:
            out[m] = st
    return out


CHANCE_ZERO = ("mcc", "matthews")  # correlation metrics: chance (and any constant predictor) is 0


def baseline_flags(g: Group, metric: str, maj: dict[str, tuple[float, int]], v: Verdict) -> None:
    """≈ baseline: the mean accuracy is not significantly above the majority rate (exact one-sided
    binomial test on the n eval examples); plus "constant predictor" when predictions show one class."""
    split = ev.split_of(metric)
    if any(ev.is_constant(r, split) for r in _ok_runs(g)):
        v.flags.append(Flag("constant", "constant predictor",
                            f"predicts one class for every {split} example (from its saved predictions)"))
    if ev.base_of(metric) in CHANCE_ZERO and metric in g.metrics:
        iv = v.intervals.get(metric)
        if iv is not None and iv.lo <= 0.0:  # a constant (or random) predictor scores 0
            v.flags.append(Flag("baseline", "≈ baseline",
                                f"{metric} {g.metrics[metric].mean:.4f}: its 95% interval [{iv.lo:.4f}, {iv.hi:.4f}] "
                                "includes 0, the score of a constant or random predictor"))
        return
    if metric not in maj or metric not in g.metrics:
        return
    rate, n = maj[metric]
    if n < 1:
        return
    acc = g.metrics[metric].mean
    k = round(acc * n)
    v.baseline_p = stats.above_rate_pvalue(k, n, rate)
    if v.baseline_p >= stats.ALPHA:
        v.flags.append(Flag("baseline", "≈ baseline",
                            f"{metric} {acc:.4f} ({k}/{n}) is not significantly above the majority-class rate "
                            f"{rate:.4f} (exact one-sided binomial p = {v.baseline_p:.3g} ≥ {stats.ALPHA})"))


# ---------------------------------------------------------------- paired comparison

def _pairs(a: Group, b: Group) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Runs paired by seed; without a common seed, in seed order (still paired on the examples)."""
    ra, rb = _ok_runs(a), _ok_runs(b)
    by_seed = {r["seed"]: r for r in rb}
    pairs = [(r, by_seed[r["seed"]]) for r in ra if r["seed"] in by_seed]
    return pairs or list(zip(ra, rb))


def _aligned(pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]], metric: str) -> tuple[list, list, bool] | None:
    """Per-example values of both sides, aligned on example ids, each the mean over the seed pairs
    that scored the example. Averaged, not concatenated: k seeds of one example are not k independent
    examples (they share its difficulty), and a test over the concatenation would count them as such."""
    acc: dict[Any, list[float]] = {}  # id → [sum a, sum b, weight a, weight b, pairs]
    binary = True
    for ra, rb in pairs:
        ea, eb = ev.examples(ra, metric), ev.examples(rb, metric)
        if ea is None or eb is None:
            return None
        binary = binary and ea.binary and eb.binary
        ib = {i: k for k, i in enumerate(eb.ids)}
        for k, i in enumerate(ea.ids):
            if i in ib:
                j = ib[i]
                t = acc.setdefault(i, [0.0, 0.0, 0.0, 0.0, 0])
                t[0] += ea.values[k]
                t[1] += eb.values[j]
                t[2] += ea.weights[k] if ea.weights else 1.0
                t[3] += eb.weights[j] if eb.weights else 1.0
                t[4] += 1
    xa = [(t[0] / t[4], t[2] / t[4]) for t in acc.values()]
    xb = [(t[1] / t[4], t[3] / t[4]) for t in acc.values()]
    return (xa, xb, binary and len(pairs) == 1) if xa else None


def compare(a: Group, b: Group, metric: str) -> Comparison | None:
    """Paired test of ``a`` vs ``b`` on ``metric`` over the examples both scored: McNemar on
    right/wrong with one seed; otherwise a paired bootstrap over examples, each example's value the
    mean over the paired seeds; a paired t-test over seeds when no predictions exist; else None."""
    va, vb = _metric_values(a, metric), _metric_values(b, metric)
    if not va or not vb:
        return None
    diff = statistics.fmean(va) - statistics.fmean(vb)
    pairs = _pairs(a, b)
    al = _aligned(pairs, metric) if pairs else None
    if al is not None:
        xa, xb, binary = al
        if binary:  # one seed pair: right/wrong per example
            only_a = sum(1 for (x, _), (y, _) in zip(xa, xb) if x > y)
            only_b = sum(1 for (x, _), (y, _) in zip(xa, xb) if y > x)
            return Comparison(diff, stats.mcnemar(only_a, only_b), "McNemar", len(xa))
        sa = stats.mean_stat([x for x, _ in xa], [w for _, w in xa])
        sb = stats.mean_stat([x for x, _ in xb], [w for _, w in xb])
        p = stats.paired_bootstrap_pvalue(sa, sb, len(xa))
        return None if p is None else Comparison(diff, p, "paired bootstrap", len(xa))
    by_seed = {r["seed"]: r["metrics"].get(metric) for r in _ok_runs(b)}
    diffs = [float(r["metrics"][metric]) - float(by_seed[r["seed"]]) for r in _ok_runs(a)
             if isinstance(r["metrics"].get(metric), (int, float)) and isinstance(by_seed.get(r["seed"]), (int, float))]
    p = stats.paired_t_pvalue(diffs)
    return None if p is None else Comparison(diff, p, "paired t over seeds", len(diffs))


def tie_groups(groups: Sequence[Group], metric: str) -> dict[str, int]:
    """The honest ranking: group 1 = the best row and every row not significantly different from it;
    then the best of the rest, and so on. Rows no test can compare get no group."""
    lower = lower_is_better(metric)
    ranked = sorted((g for g in groups if metric in g.metrics and g.status == "ok"),
                    key=lambda g: g.metrics[metric].mean, reverse=not lower)
    if len(ranked) < 2:
        return {}
    out: dict[str, int] = {}
    rank = 0
    while ranked:
        top, rest = ranked[0], ranked[1:]
        tests = {g.method: compare(g, top, metric) for g in rest}
        if rest and all(c is None for c in tests.values()) and not out:
            return {}  # nothing here is comparable: say n/a rather than invent a ranking
        rank += 1
        out[top.method] = rank
        ranked = []
        for g in rest:
            c = tests[g.method]
            if c is not None and not c.significant:
                out[g.method] = rank
            else:
                ranked.append(g)
    return out


# ---------------------------------------------------------------- tuning

def _numeric(v: str) -> float | None:
    try:
        x = float(v)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def sweeps(groups: Sequence[Group], headline: str) -> list[Sweep]:
    """Rows of one method whose configs differ in exactly one numeric key form a grid; the selected
    value is the best mean on the validation twin of the headline metric (the held-out split stays
    unused for selection) and is flagged when it sits at an edge of the grid."""
    by_method: dict[str, list[Group]] = {}
    for g in groups:
        if g.status == "ok" and g.runs:
            by_method.setdefault(base_method(g), []).append(g)
    out = []
    for method, gs in by_method.items():
        if len(gs) < 2:
            continue
        items = [config_items(g.runs[0]) for g in gs]
        keys = sorted({k for it in items for k in it})
        differ = [k for k in keys if len({it.get(k) for it in items}) > 1]
        vals = [_numeric(it.get(differ[0], "null")) for it in items] if len(differ) == 1 else []
        if not vals or any(v is None for v in vals) or len(set(vals)) != len(vals):
            continue
        metric = _selection_metric(gs, headline)
        common = stats.common_seeds(_seeds(g, metric) for g in gs)
        rows = sorted(((v, _on_seeds(g, metric, common), g) for v, g in zip(vals, gs)), key=lambda t: t[0])
        scored = [t for t in rows if t[1] is not None]
        sw = Sweep(method, differ[0], metric, rows)
        if scored:
            best = (min if lower_is_better(metric) else max)(scored, key=lambda t: t[1].mean)
            hit = stats.tied_edge([t[0] for t in rows], {t[0]: t[1].mean for t in scored}, best[0])
            sw.selected, sw.edge, sw.edge_value = best[2], *(hit or (None, None))
        out.append(sw)
    return out


def _seeds(g: Group, metric: str) -> set[int]:
    return {int(r.get("seed", 0)) for r in g.runs if r.get("status") == "ok" and metric in (r.get("metrics") or {})}


def _on_seeds(g: Group, metric: str, seeds: set[int]) -> Stat | None:
    """``metric`` over the seeds every grid point has: a grid tuned on seed 1 whose winner then ran
    more seeds is still compared on seed 1 alone, so adding seeds cannot move the selection. No
    common seed: the mean over all."""
    if not seeds:
        return g.metrics.get(metric)
    return Stat.of([r["metrics"][metric] for r in g.runs if r.get("status") == "ok"
                    and int(r.get("seed", 0)) in seeds and metric in (r.get("metrics") or {})])


def _selection_metric(gs: Sequence[Group], headline: str) -> str:
    val = f"val/{ev.base_of(headline)}"
    return val if all(val in g.metrics for g in gs) else headline


def edge_flag(sw: Sweep) -> Flag:
    short = sw.key.rsplit(".", 1)[-1]
    grid = ", ".join(f"{v:g}" for v, _, _ in sw.rows)
    sel = next(v for v, _, g in sw.rows if g is sw.selected)
    side = "largest" if sw.edge == "high" else "smallest"
    at = sel if sw.edge_value is None else sw.edge_value
    if sw.flat:  # a plateau: no direction to extend in, nothing was selected
        value = next(s.mean for _, s, _ in sw.rows if s is not None)
        return Flag("flat", f"{short} grid flat",
                    f"every {short} of the grid {{{grid}}} scores the same {sw.metric} ({value:.4g}): "
                    f"the data select none ({short}={sel:g}, the smallest, is shown); the {short} is not the "
                    f"limit here")
    what = f"is the {side} value" if at == sel else f"ties on {sw.metric} with {short}={at:g}, the {side} value,"
    return Flag("edge", f"{short} at grid edge",
                f"selected {short}={sel:g} (best {sw.metric}) {what} of the grid {{{grid}}}: "
                f"the optimum may lie beyond it; extend the grid")


# ---------------------------------------------------------------- base weights

def _weights(gs: Sequence[Group]) -> set[str]:
    """The base-weight digests of these rows' runs. A run on a per-seed base stage is left out: its
    base is trained from its own seed (like a from-config model's init), so its seeds differ by design."""
    return {str(r["model"]["weights"]) for g in gs for r in _ok_runs(g)
            if (r.get("model") or {}).get("weights") and not (r.get("stages") or {}).get("base")}


def _short(digests: set[str]) -> str:
    def one(d: str) -> str:  # 12 hex digits, or a hub id with its commit's first 7
        if d.startswith("hub:") and "@" in d:
            repo, commit = d[4:].rsplit("@", 1)
            return f"{repo}@{commit[:7]}"
        return d.split(":", 1)[-1][:12]
    return " / ".join(sorted(one(d) for d in digests))


def weights_flag(g: Group, ref: Group | None, grid: Sequence[Group] = ()) -> Flag | None:
    """Runs compared as one configuration must start from one model: a path names where the weights
    were, the digest (``model.weights``) what they were. Runs without a digest (older records,
    from-config models, per-seed base stages) are not judged."""
    own = _weights([g])
    if len(own) > 1:
        return Flag("weights", "mixed base weights",
                    f"its seeds started from {len(own)} different base weights ({_short(own)}): "
                    "the row averages different models")
    tuned = _weights(grid)
    if own and len(tuned | own) > 1:
        return Flag("weights", "grid on other weights",
                    f"its tuning grid ran on other base weights ({_short(tuned - own)}) than it "
                    f"({_short(own)}): the selection compared different models")
    theirs = _weights([ref]) if ref is not None and ref is not g else set()
    if own and len(theirs) == 1 and own != theirs:  # a mixed reference is flagged itself, not its rivals
        assert ref is not None
        return Flag("weights", "other base weights",
                    f"started from other base weights ({_short(own)}) than {ref.method} ({_short(theirs)}): "
                    "the comparison mixes two base models")
    return None


# ---------------------------------------------------------------- convergence

def _curve_noise(rec: dict[str, Any], metric: str) -> float:
    """The smallest change a curve on a capped subset of m examples can resolve: two examples, 2/m of
    an accuracy-like score, about 4/m of a correlation (MCC ≈ 2·acc − 1 on balanced classes); 0 for
    a loss (a mean over many tokens)."""
    sub = ((rec.get("curves") or {}).get("val") or {}).get("subset")
    if not isinstance(sub, int) or sub <= 0:
        return 0.0
    base = ev.base_of(metric).lower()
    if any(k in base for k in CHANCE_ZERO):
        return 4.0 / sub
    return 2.0 / sub if _is_bounded(metric) else 0.0


def convergence_flag(g: Group, tol: float = stats.CONVERGE_TOL) -> Flag | None | bool:
    """A "not converged" flag when the validation curve (else the train loss) still improved by more
    than ``tol`` over the last quarter of training (relative for a loss or perplexity, in points for a
    bounded score: MCC near 0 would make any wobble a large relative gain); False when no run has
    curves. Several seeds are read through their mean curve: one seed's curve on a capped subset
    wobbles by a few examples between checkpoints, and the worst of three wobbles would flag a
    converged config."""
    series: dict[str, list[tuple[list[list[float]], int, float]]] = {}
    for r in _ok_runs(g):
        vc = ev.val_curve(r)
        name, pts = vc if vc else ("train loss", ev.train_curve(r))
        if pts and len(pts) >= 2:
            series.setdefault(name, []).append((pts, int(r["seed"]), _curve_noise(r, name)))
    if not series:
        return False
    worst: tuple[float, str, bool] | None = None
    for name, runs in series.items():
        lower = name == "train loss" or lower_is_better(name)
        points = name != "train loss" and _is_bounded(name)
        mean = stats.mean_curve([pts for pts, _, _ in runs]) if len(runs) > 1 else None
        cands = [(mean, f"mean of {len(runs)} seeds", max(n for _, _, n in runs))] if mean else \
            [(pts, f"seed {seed}", noise) for pts, seed, noise in runs]
        for pts, who, noise in cands:
            gain = stats.late_gain(pts, lower, relative=not points)
            # noise (two subset examples) is non-zero only for bounded scores, i.e. in the gain's units
            # (a group whose seeds recorded different curves compares gains in two units: rare, and the
            # flag names the curve it read)
            if gain is not None and gain > max(tol, noise) and (worst is None or gain > worst[0]):
                amount = f"{100 * gain:.1f} points" if points else f"{100 * gain:.1f}%"
                worst = (gain, f"{name} ({who}) still improved by {amount}", points)
    if worst is None:
        return None
    limit = f"{100 * tol:.0f} point" if worst[2] else f"{100 * tol:.0f}%"
    return Flag("not_converged", "not converged",
                f"{worst[1]} over the last quarter of training (tolerance {limit}): the budget was too "
                f"short to compare end points")


# ---------------------------------------------------------------- one table

def _pick_reference(groups: Sequence[Group], reference: str, metric: str | None) -> Group | None:
    cands = [g for g in groups if base_method(g) == reference and g.status == "ok"
             and metric is not None and metric in g.metrics]
    if not cands:
        return None
    assert metric is not None
    return (min if lower_is_better(metric) else max)(cands, key=lambda g: g.metrics[metric].mean)


def _na_notes(groups: Sequence[Group], metric: str | None, maj: dict[str, Any], any_curves: bool) -> list[str]:
    notes = []
    runs = [r for g in groups for r in _ok_runs(g)]
    if runs and not any(isinstance(r.get("eval"), dict) for r in runs):
        notes.append("≈ baseline, bootstrap intervals and per-example paired tests: n/a (these records carry no "
                     "`eval` block and no predictions: recorded by an older peftbench)")
    elif metric is not None and ev.base_of(metric) in ("acc", "accuracy") and metric not in maj:
        notes.append(f"≈ baseline: n/a for {metric} (no majority-class rate recorded for its split)")
    if runs and not any_curves:
        notes.append("convergence: n/a (no `curves` in these records)")
    return notes


TUNED = ("optim.",)  # a sweep over these keys is tuning: only its selected row stays in the table


def tuned_away(sweeps_: Sequence[Sweep]) -> set[str]:
    """Rows of an optimizer-hyper-parameter grid that the selection did not pick: shown in the grid's
    selection table, not as results (other sweeps, e.g. over a rank, stay rows: they are a study)."""
    return {g.method for sw in sweeps_ if sw.selected is not None and sw.key.startswith(TUNED)
            for _, _, g in sw.rows if g is not sw.selected}


def judge(groups: Sequence[Group], metric: str | None, reference: str = DEFAULT_REFERENCE,
          also: Sequence[str] = ()) -> TableReferee:
    """Every check for one table; ``metric`` is its headline metric (None: nothing to compare).
    Tuning grids are resolved first, so references, paired tests and ties see selected rows only.
    ``also``: further references, each paired-tested against every other selected row."""
    metrics = sorted({m for g in groups for m in g.metrics})
    maj, notes = majority(groups)
    found = sweeps(groups, metric) if metric is not None else []
    hidden = tuned_away(found)
    groups = [g for g in groups if g.method not in hidden]
    ref = _pick_reference(groups, reference, metric)
    tr = TableReferee(metric, reference, ref, {}, maj, before(groups, metrics), found, [], hidden)
    any_curves = False
    for g in groups:
        v = tr.of(g)
        for m in metrics:
            iv = interval(g, m) if g.status == "ok" else None
            if iv is not None:
                v.intervals[m] = iv
        if g.status != "ok":
            continue
        if metric is not None:
            baseline_flags(g, metric, maj, v)
        cf = convergence_flag(g)
        any_curves = any_curves or cf is not False
        if isinstance(cf, Flag):
            v.flags.append(cf)
        if ref is not None and metric is not None:
            v.is_ref = g is ref
            v.vs_ref = None if v.is_ref else compare(g, ref, metric)
    grids = {sw.selected.method: [g for _, _, g in sw.rows] for sw in found  # tuning grids, not studies
             if sw.selected is not None and sw.key.startswith(TUNED)}
    for g in groups:
        wf = weights_flag(g, ref, grids.get(g.method, ())) if g.status == "ok" else None
        if wf is not None:
            tr.of(g).flags.append(wf)
    if metric is not None:
        for name, rank in tie_groups(groups, metric).items():
            tr.verdicts[name].tie_group = rank
        for sw in tr.sweeps:
            if sw.selected is not None and sw.edge:
                tr.of(sw.selected).flags.append(edge_flag(sw))
    for name in also if metric is not None else ():
        other = _pick_reference(groups, name, metric)
        tr.also[name] = (other, {g.method: compare(g, other, metric) for g in groups
                                 if other is not None and g is not other and g.status == "ok"})
    tr.notes = notes + _na_notes(groups, metric, maj, any_curves)
    return tr
