"""The report's statistics, written out so ``peftbench report`` needs no scipy.

Exact binomial tails (log space), Student's t quantile (numeric inversion of its CDF through the
regularized incomplete beta function), percentile bootstrap with a fixed-seed numpy Generator,
McNemar's test (exact below 25 discordant pairs, continuity-corrected chi-square above), grid-edge
detection and the convergence check. numpy is imported inside the functions that resample, so
``import peftbench.report`` stays instant.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any

ALPHA = 0.05
N_BOOT = 2000
BOOT_SEED = 0
CONVERGE_TOL = 0.01  # gain over the last quarter of training that still counts as "improving": 1 % of a
#                     loss or perplexity, 0.01 (one point) of a bounded score


# ---------------------------------------------------------------- binomial

def _log_pmf(i: int, n: int, p: float) -> float:
    return (math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p))


def _pmf_sum(lo: int, hi: int, n: int, p: float) -> float:
    """Σ P(X = i) for i in [lo, hi], X ~ Binomial(n, p), summed in log space (no overflow for large n)."""
    if not 0.0 <= p <= 1.0 or n < 0:
        raise ValueError(f"binomial: need 0 ≤ p ≤ 1 and n ≥ 0, got p={p}, n={n}")
    lo, hi = max(lo, 0), min(hi, n)
    if lo > hi:
        return 0.0
    if p in (0.0, 1.0):  # all mass on X = 0 or X = n
        return 1.0 if lo <= (0 if p == 0.0 else n) <= hi else 0.0
    logs = [_log_pmf(i, n, p) for i in range(lo, hi + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p), summed exactly (the upper tail itself, never 1 − cdf)."""
    return _pmf_sum(k, n, n, p)


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k)."""
    return _pmf_sum(0, k, n, p)


def above_rate_pvalue(correct: int, n: int, rate: float) -> float:
    """One-sided exact binomial test of "accuracy > ``rate``": P(X ≥ correct | n, rate)."""
    return binom_sf(correct, n, rate)


# ---------------------------------------------------------------- Student t

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbeta) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbeta) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t, by bisection on its CDF (monotone, so always converges)."""
    if not 0.0 < q < 1.0 or df <= 0:
        raise ValueError(f"t_quantile: need 0 < q < 1 and df > 0, got q={q}, df={df}")
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def t_interval(values: Sequence[float], conf: float = 1 - ALPHA) -> tuple[float, float] | None:
    """mean ± t_{(1+conf)/2, n−1} · s/√n over seeds; None below two values."""
    if len(values) < 2:
        return None
    m, s = statistics.fmean(values), statistics.stdev(values)
    h = t_quantile(0.5 + conf / 2.0, len(values) - 1) * s / math.sqrt(len(values))
    return (m - h, m + h)


def paired_t_pvalue(diffs: Sequence[float]) -> float | None:
    """Two-sided paired t-test p-value of mean(diffs) = 0; None below two pairs."""
    if len(diffs) < 2:
        return None
    s = statistics.stdev(diffs)
    m = statistics.fmean(diffs)
    if s == 0.0:
        return 1.0 if m == 0.0 else 0.0
    t = m / (s / math.sqrt(len(diffs)))
    return min(1.0, 2.0 * (1.0 - t_cdf(abs(t), len(diffs) - 1)))


# ---------------------------------------------------------------- McNemar

def mcnemar(b: int, c: int, exact: bool | None = None) -> float:
    """Two-sided McNemar p-value from the discordant counts (b: only A right, c: only B right).

    exact (default below 25 discordant pairs): 2·P(X ≤ min(b, c)), X ~ Binomial(b + c, ½);
    otherwise chi-square with continuity correction, (|b − c| − 1)² / (b + c) on 1 df."""
    n = b + c
    if n == 0:
        return 1.0
    if exact is None:
        exact = n < 25
    if exact:
        return min(1.0, 2.0 * binom_cdf(min(b, c), n, 0.5))
    chi2 = max(abs(b - c) - 1.0, 0.0) ** 2 / n
    return math.erfc(math.sqrt(chi2 / 2.0))


# ---------------------------------------------------------------- bootstrap

def _resample(stat: Callable[[Any], Any], n: int, n_boot: int, seed: int) -> Any:
    """``stat(idx)`` for ``n_boot`` index rows drawn with replacement (chunks bound the memory)."""
    import numpy as np

    rng = np.random.Generator(np.random.PCG64(seed))
    out = []
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        out.append(np.asarray(stat(idx), dtype=float))
    return np.concatenate(out)


def mean_stat(values: Sequence[float], weights: Sequence[float] | None = None) -> Callable[[Any], Any]:
    """A statistic for ``bootstrap``: the (weighted) mean of ``values`` over each index row."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    if weights is None:
        return lambda idx: v[idx].mean(axis=1)
    w = np.asarray(weights, dtype=float)
    return lambda idx: (v[idx] * w[idx]).sum(axis=1) / w[idx].sum(axis=1)


def bootstrap_interval(stat: Callable[[Any], Any], n: int, conf: float = 1 - ALPHA, n_boot: int = N_BOOT,
                       seed: int = BOOT_SEED) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``stat`` over ``n`` examples; None for fewer than two."""
    import numpy as np

    if n < 2:
        return None
    s = _resample(stat, n, n_boot, seed)
    lo, hi = np.quantile(s, [(1 - conf) / 2, (1 + conf) / 2])
    return (float(lo), float(hi))


def paired_bootstrap_pvalue(stat_a: Callable[[Any], Any], stat_b: Callable[[Any], Any], n: int,
                            n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> float | None:
    """Two-sided p-value that stat_a − stat_b = 0, resampling the same examples for both:
    2·min(share of resamples with diff ≤ 0, share with diff ≥ 0), capped at 1."""
    import numpy as np

    if n < 2:
        return None
    d = _resample(lambda idx: np.asarray(stat_a(idx)) - np.asarray(stat_b(idx)), n, n_boot, seed)
    return float(min(1.0, 2.0 * min(np.mean(d <= 0), np.mean(d >= 0))))


def matthews(pred: Sequence[int], label: Sequence[int], num_classes: int | None = None) -> float:
    """Matthews correlation as the training metric computes it (``lit.tasks.MatthewsCorrCoef``:
    Gorodkin's R_K, the binary MCC for two classes; 0 where undefined, GLUE's convention);
    ``num_classes`` defaults to the largest label seen + 1."""
    k = num_classes or max(2, 1 + max(int(x) for x in [*pred, *label]))
    correct = sum(int(a) == int(b) for a, b in zip(pred, label))
    p = [sum(1 for a in pred if int(a) == c) for c in range(k)]
    t = [sum(1 for b in label if int(b) == c) for c in range(k)]
    return matthews_from_counts(correct, p, t)


def matthews_from_counts(correct: int, pred_counts: Sequence[int], label_counts: Sequence[int]) -> float:
    """Gorodkin's R_K from the diagonal of the confusion matrix and its column and row sums; 0 where
    undefined (one class predicted, or one class in the labels)."""
    n = sum(label_counts)
    cov = correct * n - sum(pc * tc for pc, tc in zip(pred_counts, label_counts))
    den = (n * n - sum(v * v for v in pred_counts)) * (n * n - sum(v * v for v in label_counts))
    return cov / math.sqrt(den) if den else 0.0


# ---------------------------------------------------------------- tuning and convergence

def common_seeds(seed_sets: Iterable[Iterable[int]]) -> set[int]:
    """The seeds every grid point has a scored run on (a point with none is left out: it has nothing
    to compare). The suite and the report both compare a grid's points on these alone, so seeds run
    later at the winner cannot move the selection; empty when there is none in common."""
    sets = [set(s) for s in seed_sets]
    sets = [s for s in sets if s]
    return set.intersection(*sets) if sets else set()


def grid_edge(grid: Sequence[float], selected: float) -> str | None:
    """'low' / 'high' when ``selected`` is the smallest / largest of a grid of ≥ 2 values, else None:
    the optimum may lie beyond that edge."""
    vals = sorted({float(v) for v in grid})
    if len(vals) < 2 or float(selected) not in vals:
        return None
    if float(selected) == vals[0]:
        return "low"
    if float(selected) == vals[-1]:
        return "high"
    return None


def flat(grid: Sequence[float], scores: dict[float, float]) -> bool:
    """Every value of a grid of three or more is scored, and all score the same: a plateau (a constant
    predictor at every lr) selects nothing, and its edge is no direction to extend in."""
    return len(grid) >= 3 and all(v in scores for v in grid) and len({scores[v] for v in grid}) == 1


def tied_edge(grid: Sequence[float], scores: dict[float, float], selected: float) -> tuple[str, float] | None:
    """(edge, value) when the selected value, or one tied with it on the selection score, is at an
    edge of the grid: a tie with an edge value leaves the optimum possibly beyond that edge too."""
    top = scores.get(selected)
    for v in [selected, *sorted(scores)]:
        edge = grid_edge(grid, v) if scores.get(v) == top else None
        if edge:
            return edge, float(v)
    return None


def late_change(points: Sequence[Sequence[float]], lower_better: bool) -> tuple[float, float] | None:
    """(improvement, earlier value) over the last quarter of training: from the curve's value at 75 %
    of the final step (linear between the points around it; the first point when it comes later) to
    the final point, in the better direction. None below two points."""
    pts = sorted((float(s), float(v)) for s, v in points)
    if len(pts) < 2:
        return None
    last_step, last = pts[-1]
    at = 0.75 * last_step
    ref = pts[0][1]
    for (s0, v0), (s1, v1) in zip(pts, pts[1:]):
        if s0 <= at <= s1:
            ref = v0 + (v1 - v0) * (at - s0) / (s1 - s0) if s1 > s0 else v1
            break
    return ((ref - last) if lower_better else (last - ref), ref)


def mean_curve(curves: Sequence[Sequence[Sequence[float]]]) -> list[list[float]] | None:
    """The pointwise mean of several seeds' curves over the steps all of them measured, or None when
    they end at different steps or share fewer than two (the caller then reads each curve alone)."""
    if not curves or any(not c for c in curves):
        return None
    shared = set.intersection(*({float(s) for s, _ in c} for c in curves))
    if len(shared) < 2 or len({max(float(s) for s, _ in c) for c in curves}) > 1:
        return None
    by_step = [{float(s): float(v) for s, v in c} for c in curves]
    return [[s, statistics.fmean(c[s] for c in by_step)] for s in sorted(shared)]


def late_gain(points: Sequence[Sequence[float]], lower_better: bool, relative: bool = True) -> float | None:
    """``late_change``'s improvement: relative to |earlier value| (a loss, a perplexity), or in the
    metric's own units (``relative=False``: a bounded score such as accuracy or MCC, whose value near
    0 would turn a small absolute change into a huge relative one)."""
    ch = late_change(points, lower_better)
    if ch is None:
        return None
    return ch[0] / max(abs(ch[1]), 1e-12) if relative else ch[0]
