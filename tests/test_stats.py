"""The report's statistics against values worked out by hand (issue 20's "Done when")."""

from __future__ import annotations

import math

import pytest

from peftbench.report import stats


def test_binomial_tail_matches_counting():
    # P(X ≥ 2), X ~ Bin(4, ½) = (C(4,2) + C(4,3) + C(4,4)) / 16 = 11/16
    assert stats.binom_sf(2, 4, 0.5) == pytest.approx(11 / 16, abs=1e-15)
    assert stats.binom_sf(3, 3, 0.5) == pytest.approx(1 / 8, abs=1e-15)
    assert stats.binom_sf(0, 5, 0.3) == 1.0 and stats.binom_sf(6, 5, 0.3) == 0.0
    # 9 of 10 right vs a 50 % majority: P(X ≥ 9) = (10 + 1) / 1024
    assert stats.above_rate_pvalue(9, 10, 0.5) == pytest.approx(11 / 1024, abs=1e-15)
    # P(X ≥ 1) = 1 − (1 − p)^n
    assert stats.binom_sf(1, 20, 0.1) == pytest.approx(1 - 0.9 ** 20, rel=1e-12)
    # no overflow far in the tail of a large n
    assert 0.0 <= stats.binom_sf(9000, 10000, 0.5) < 1e-300 or stats.binom_sf(9000, 10000, 0.5) == 0.0
    with pytest.raises(ValueError):
        stats.binom_sf(1, 3, 1.5)


def test_student_t_quantiles_have_closed_forms():
    # df = 1 is the Cauchy distribution: q(p) = tan(π (p − ½))
    assert stats.t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-9)
    # df = 2: q(p) = (2p − 1) / sqrt(2 p (1 − p))
    assert stats.t_quantile(0.975, 2) == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025), rel=1e-9)
    assert stats.t_quantile(0.025, 2) == pytest.approx(-stats.t_quantile(0.975, 2))
    # large df tends to the normal quantile 1.959964
    assert stats.t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-5)


def test_t_interval_over_seeds():
    # mean 2, s = 1, n = 3: half-width = q(0.975, 2) / √3
    h = 0.95 / math.sqrt(2 * 0.975 * 0.025) / math.sqrt(3)
    lo, hi = stats.t_interval([1.0, 2.0, 3.0])
    assert (lo, hi) == (pytest.approx(2 - h, rel=1e-9), pytest.approx(2 + h, rel=1e-9))
    assert stats.t_interval([0.5]) is None


def test_mcnemar_on_constructed_tables():
    # exact: b = 3, c = 10 → 2 · P(X ≤ 3 | 13, ½) = 2 (1 + 13 + 78 + 286) / 8192
    assert stats.mcnemar(3, 10) == pytest.approx(2 * 378 / 8192, abs=1e-15)
    # continuity-corrected chi-square above 25 discordant pairs: (|20 − 40| − 1)² / 60 on 1 df
    chi2 = 19 ** 2 / 60
    assert stats.mcnemar(20, 40) == pytest.approx(math.erfc(math.sqrt(chi2 / 2)), rel=1e-12)
    assert stats.mcnemar(20, 40) == pytest.approx(0.014171, abs=1e-6)
    assert stats.mcnemar(0, 0) == 1.0 and stats.mcnemar(5, 5) == 1.0
    assert stats.mcnemar(0, 10) == pytest.approx(2 / 1024)


def test_bootstrap_fixed_seed():
    const = stats.bootstrap_interval(stats.mean_stat([0.7] * 50), 50)
    assert const == (pytest.approx(0.7), pytest.approx(0.7))
    vals = [1.0, 0.0] * 100  # mean 0.5, n = 200: normal approx. 0.5 ± 1.96 · √(0.25 / 200) = ± 0.0693
    a = stats.bootstrap_interval(stats.mean_stat(vals), 200, seed=3)
    assert a == stats.bootstrap_interval(stats.mean_stat(vals), 200, seed=3)  # same seed, same interval
    assert a[0] == pytest.approx(0.5 - 0.0693, abs=0.012) and a[1] == pytest.approx(0.5 + 0.0693, abs=0.012)
    # weighted mean: a token-weighted loss
    w = stats.bootstrap_interval(stats.mean_stat([1.0, 3.0], [3.0, 1.0]), 2, n_boot=50)
    assert 1.0 <= w[0] <= w[1] <= 3.0


def test_paired_bootstrap_pvalue():
    a = [float(i % 7) for i in range(100)]
    assert stats.paired_bootstrap_pvalue(stats.mean_stat(a), stats.mean_stat(a), 100) == 1.0
    b = [x + 1.0 for x in a]  # every example worse by one: never a tie in any resample
    assert stats.paired_bootstrap_pvalue(stats.mean_stat(a), stats.mean_stat(b), 100) == 0.0


def test_paired_t_over_seeds():
    # diffs 1, 2, 3: t = 2 / (1/√3) = 2√3 on 2 df; two-sided p = 1 − 2√3/√(12 + 4)... = 1 − t/√(t² + 2)
    t = 2 * math.sqrt(3)
    assert stats.paired_t_pvalue([1.0, 2.0, 3.0]) == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)
    assert stats.paired_t_pvalue([1.0]) is None


def test_grid_edge_detection():
    assert stats.grid_edge([1e-4, 1e-3], 1e-3) == "high"
    assert stats.grid_edge([1e-3, 1e-4], 1e-4) == "low"
    assert stats.grid_edge([1e-4, 3e-4, 1e-3], 3e-4) is None
    assert stats.grid_edge([1e-3], 1e-3) is None  # a one-point grid has no edge to extend


def test_convergence_flag():
    rising = [[20, 0.6], [40, 0.7], [60, 0.75], [80, 0.8], [100, 0.85]]
    # reference = the curve at step 75, between 60 (0.75) and 80 (0.80): 0.7875
    assert stats.late_gain(rising, lower_better=False) == pytest.approx((0.85 - 0.7875) / 0.7875)
    assert stats.late_gain(rising, lower_better=False, relative=False) == pytest.approx(0.85 - 0.7875)
    flat = [[20, 0.6], [40, 0.84], [60, 0.85], [80, 0.851], [100, 0.852]]
    assert stats.late_gain(flat, lower_better=False) < stats.CONVERGE_TOL
    loss = [[10, 2.0], [100, 1.0]]  # loss halves over the run: at step 75 it is 2 − 65/90, still improving
    ref = 2.0 - 65 / 90
    assert stats.late_gain(loss, lower_better=True) == pytest.approx((ref - 1.0) / ref)
    assert stats.late_gain([[80, 0.5], [100, 0.6]], lower_better=False) == pytest.approx(0.2)  # 75 % before the first point
    assert stats.late_gain([[10, 1.0]], lower_better=True) is None
