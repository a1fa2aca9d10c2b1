"""Golden referee report: a synthetic sweep written here (records + per-example predictions + curves)
with a constant predictor, an edge-selected lr, an unconverged curve and two tied methods must get
exactly the expected flags, in every format. Every expectation is derived from the data below."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest

from peftbench import results
from peftbench.report import build_report, collect
from peftbench.report.referee import compare
from peftbench.report.tables import build_tables, tex_escape, to_csv, to_latex

N = 200
LABELS = [0] * 120 + [1] * 80  # majority class 0: rate 0.6
FLAT = [[25, 0.80], [50, 0.84], [75, 0.85], [100, 0.85]]
RISING = [[25, 0.60], [50, 0.65], [75, 0.70], [100, 0.80]]  # +14 % over the last quarter
# (method, variant lr or None, seed, ids predicted wrong (None: constant class 0), val/acc, curve)
RUNS = [
    ("full", None, 1, range(30), 0.86, FLAT),
    ("full", None, 2, range(100, 130), 0.86, FLAT),
    ("lora", None, 1, range(5, 35), 0.86, FLAT),  # 5 examples each way vs full: a tie
    ("lora", None, 2, range(105, 135), 0.86, FLAT),
    ("bitfit", 1e-4, 1, range(65), 0.66, FLAT),
    ("bitfit", 1e-3, 1, range(60), 0.72, FLAT),  # best on val at the top of its grid: edge
    ("ia3", None, 1, range(40), 0.80, RISING),  # not converged
    ("head_only", None, 1, None, 0.60, FLAT),  # always class 0: constant, ≈ baseline
]


def _write_run(root: Path, i: int, method: str, lr: float | None, seed: int, wrong, val_acc: float, curve) -> None:
    preds = [0] * N if wrong is None else [1 - y if k in set(wrong) else y for k, y in enumerate(LABELS)]
    acc = sum(p == y for p, y in zip(preds, LABELS)) / N
    run = root / f"run{i}"
    (run / "predictions").mkdir(parents=True)
    with gzip.open(run / "predictions" / "test.json.gz", "wt") as f:
        json.dump({"ids": list(range(N)), "label": LABELS, "pred": preds}, f)
    cfg = {"method": {"name": method}, "seed": seed, "optim": {"lr": lr if lr is not None else 1e-3}}
    rec = results.empty_record(
        run_id=f"r{i}", seed=seed, config=cfg, model={"family": "m", "size": "s", "total": 1000},
        method={"name": method, "family": "additive"}, dataset={"name": "toy", "task": "classification"},
        params={"trainable": 10 * (i + 1), "total": 1000}, metrics={"test/acc": acc, "val/acc": val_acc},
        eval={"test": {"n": N, "majority_rate": 0.6, "majority_label": 0, "metric": "test/acc",
                       "predictions": "predictions/test.json.gz"}},
        curves={"val": {"metric": "val/acc", "subset": 64, "points": curve},
                "train_loss": [[s, 1.0 / s] for s, _ in curve]})
    results.write(run, rec)


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    for i, r in enumerate(RUNS):
        _write_run(tmp_path / "sweep", i, *r)
    return tmp_path / "sweep"


def _flags(table) -> dict[str, set[str]]:
    return {g.method: {f.code for f in table.referee.of(g).flags} for g in table.groups}


def test_expected_flags(sweep: Path):
    coll = collect([sweep])
    (t,) = build_tables(coll)
    assert t.referee.metric == "test/acc" and t.referee.ref_group.method == "full"
    # the lr grid's unselected point leaves the table for the grid's selection table
    assert _flags(t) == {"full": set(), "lora": set(), "ia3": {"not_converged"}, "head_only": {"constant", "baseline"},
                         "bitfit [lr=0.001]": {"edge"}}
    assert t.referee.hidden == {"bitfit [lr=0.0001]"}
    v = {g.method: t.referee.of(g) for g in t.groups}
    # lora vs full, two seeds: each sentence's accuracy averaged over the seeds, then a paired bootstrap
    # over the 200 sentences; 5 + 5 sentences go each way in each seed → no difference, p = 1
    assert v["lora"].vs_ref.test == "paired bootstrap" and v["lora"].vs_ref.p == 1.0 and v["lora"].vs_ref.n == N
    assert not v["lora"].vs_ref.significant
    # ia3 vs full (seed 1 only): full alone right on ids 30..39 → exact 2 · ½^10
    assert v["ia3"].vs_ref.p == pytest.approx(2 / 1024)
    assert v["full"].is_ref and v["full"].tie_group == v["lora"].tie_group == 1 and v["ia3"].tie_group == 2
    # one seed → bootstrap over examples around the mean; two seeds → t over seeds
    iv = v["ia3"].intervals["test/acc"]
    assert iv.how == "bootstrap" and iv.lo < 0.8 < iv.hi
    assert v["full"].intervals["test/acc"].how == "t"
    (sw,) = t.referee.sweeps
    assert (sw.method, sw.key, sw.metric, sw.edge) == ("bitfit", "optim.lr", "val/acc", "high")
    assert t.referee.majority == {"test/acc": (0.6, N)}


def test_more_copies_of_a_seed_are_no_more_evidence(tmp_path: Path):
    """Seeds are averaged per example before the test: two or three identical seed pairs give the same
    p-value (pooling seed × example pairs would shrink it with every copy)."""
    def p_of(seeds: int) -> float:
        root = tmp_path / f"s{seeds}"
        for s in range(1, seeds + 1):
            _write_run(root, 2 * s, "full", None, s, range(30), 0.86, FLAT)
            _write_run(root, 2 * s + 1, "lora", None, s, range(6, 42), 0.86, FLAT)
        (t,) = build_tables(collect([root]))
        c = {g.method: t.referee.of(g) for g in t.groups}["lora"].vs_ref
        assert c.test == "paired bootstrap" and c.n == N
        return c.p

    # 6 sentences only lora gets right, 12 only full: McNemar on one seed says p ≈ 0.24; pooled over
    # three copies (18 vs 36) it would say p ≈ 0.02
    from peftbench.report import stats

    assert stats.mcnemar(18, 36) < 0.05 < stats.mcnemar(6, 12)
    assert p_of(2) == p_of(3) > 0.05


def test_a_flat_grid_is_flagged_flat_not_at_its_edge(tmp_path: Path):
    """Three lrs, the same validation score (a plateau, as a constant predictor at every lr gives):
    no edge to extend past; the smallest lr is shown and the flag says the data selected nothing."""
    for i, lr in enumerate((1e-4, 1e-3, 1e-2)):
        _write_run(tmp_path / "sweep", i, "bitfit", lr, 1, range(60), 0.72, FLAT)
    _write_run(tmp_path / "sweep", 3, "full", None, 1, range(30), 0.86, FLAT)
    (t,) = build_tables(collect([tmp_path / "sweep"]))
    assert _flags(t)["bitfit [lr=0.0001]"] == {"flat"}
    res = build_report([tmp_path / "sweep"], tmp_path / "rep", plots=False)
    assert "**lr grid flat**: every lr of the grid {0.0001, 0.001, 0.01} scores the same val/acc (0.72)" in res.markdown
    assert "selected (every value ties)" in res.markdown and "at grid edge" not in res.markdown
    # a point without a score is no evidence of a plateau
    rec = json.loads((tmp_path / "sweep" / "run1" / "results.json").read_text())
    del rec["metrics"]["val/acc"], rec["metrics"]["test/acc"]
    (tmp_path / "sweep" / "run1" / "results.json").write_text(json.dumps(rec))
    (t,) = build_tables(collect([tmp_path / "sweep"]))
    (sw,) = t.referee.sweeps
    assert len(sw.rows) == 3 and sw.rows[1][1] is None and not sw.flat
    # two points only: a tie between them is an edge tie, as before
    (tmp_path / "sweep" / "run2" / "results.json").unlink()
    (t,) = build_tables(collect([tmp_path / "sweep"]))
    assert _flags(t)["bitfit [lr=0.0001]"] == {"edge"}


def test_flags_in_every_format(sweep: Path, tmp_path: Path):
    out = tmp_path / "rep"
    res = build_report([sweep], out, plots=True)
    md = res.markdown
    assert "| _majority class_ | _baseline_ |" in md and "_0.6000 (n=200)_" in md
    assert "head_only — **≈ baseline**" in md and "head_only — **constant predictor**" in md
    assert "ia3 — **not converged**" in md and "bitfit [lr=0.001] — **lr at grid edge**" in md
    assert "Tuning grid of bitfit over `optim.lr`" in md and "selected (at the high edge of the grid)" in md
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO((out / "report.csv").read_text()))}
    assert rows["head_only"]["flags"] == "constant;baseline" and rows["majority class"]["status"] == "baseline"
    assert rows["lora"]["vs_reference_test"] == "paired bootstrap" and rows["ia3"]["vs_reference_test"] == "McNemar"
    assert rows["full"]["vs_reference_test"] == "reference"
    assert rows["ia3"]["test/acc_ci_method"] == "bootstrap"
    assert (rows["bitfit [lr=0.001]"]["tuning"], rows["bitfit [lr=0.0001]"]["tuning"]) == ("selected", "not selected")
    assert "| bitfit [lr=0.0001] |" not in md  # in the tuning grid only
    tex = (out / "report.tex").read_text()
    assert r"\textbf{$\approx$ baseline}" in tex and r"\textit{majority class}" in tex
    page = (out / "report.html").read_text()
    assert 'class="badge b-baseline" title="test/acc 0.6000 (120/200) is not significantly above' in page
    assert 'class="badge b-not_converged"' in page and 'class="badge b-edge"' in page
    names = {p.name for p in res.files}
    assert "curves_toy.png" in names and "metric_vs_trainable_toy.png" in names
    assert "one Pareto front per model" in page  # a caption says what the plot shows


def test_plots_draw_the_tables_rows_not_the_tuned_away_lr_cells(sweep: Path, tmp_path: Path, monkeypatch):
    """A tuned-away lr cell is a selection-table entry, not a result: no panel, point or legend entry."""
    from peftbench.report import plots

    drawn: dict[str, list[str]] = {}
    real = plots._plot_curves

    def spy(plt, coll, out_dir, written, tables=()):
        drawn["curves"] = [g.method for g in coll.groups]
        real(plt, coll, out_dir, written, tables)

    monkeypatch.setattr(plots, "_plot_curves", spy)
    res = build_report([sweep], tmp_path / "rep", formats=(), plots=True)
    assert "bitfit [lr=0.001]" in drawn["curves"] and "bitfit [lr=0.0001]" not in drawn["curves"]
    assert len(drawn["curves"]) == len(res.collection.groups) - 1
    png = next(p for p in res.files if p.name == "curves_toy.png").read_bytes()
    assert png[25] == 3  # IHDR colour type 3: a palette image, a third of RGBA's bytes (reports are committed)


def test_the_memory_plot_follows_a_method_across_selected_lrs_but_keeps_a_study_apart():
    from peftbench.report.plots import _without_lr

    assert _without_lr("lora [lr=0.003]") == _without_lr("lora [lr=0.009]") == "lora"
    assert _without_lr("lora [lr=0.001, r=8]") == "lora [r=8]" != _without_lr("lora [r=16]")
    assert _without_lr("full") == "full"


def test_reference_option_and_old_records(sweep: Path, tmp_path: Path):
    coll = collect([sweep])
    (t,) = build_tables(coll, reference="lora")
    rows = list(csv.DictReader(io.StringIO(to_csv(coll, [t]))))
    assert t.referee.ref_group.method == "lora"
    assert [r["method"] for r in rows if r["vs_reference_test"] == "reference"] == ["lora"]
    (t,) = build_tables(coll, reference="nope")
    assert t.referee.ref_group is None and any("--reference NAME" in n for n in t.notes)
    # LaTeX prints a backtick as an opening quote: the note's code span is set in typewriter instead
    assert r"\texttt{peftbench report --reference NAME}" in to_latex(coll, [t])
    assert tex_escape("`a_b` and ` x") == r"\texttt{a\_b} and \textasciigrave{} x"
    # a record without eval / curves (older peftbench): the checks that need them say n/a
    old = tmp_path / "old"
    rec = json.loads((sweep / "run0" / "results.json").read_text())
    del rec["eval"], rec["curves"]
    results.write(old / "a", rec)
    (t,) = build_tables(collect([old]))
    assert not t.referee.of(t.groups[0]).flags and any("n/a" in n and "`eval`" in n for n in t.notes)
    assert any(n.startswith("convergence: n/a") for n in t.notes)


def test_further_references_are_tested_in_a_note(sweep: Path):
    """`--reference full,lora`: the column stays against full; a note tests every other selected row
    against lora (the literature's LoRA-vs-BitFit question), on the same examples and seeds."""
    (t,) = build_tables(collect([sweep]), "full", ["lora"])
    assert t.referee.ref_group.method == "full"
    (note,) = [n for n in t.notes if n.startswith("vs lora")]
    # ia3 (seed 1) is wrong on 0–39, lora on 5–34: 10 examples only lora gets right, none the other way
    assert "ia3 -0.0500 (p=0.002)" in note and "full ≈ (+0.0000, p=1.000)" in note and "McNemar" in note
    assert "bitfit [lr=0.001]" in note and "bitfit [lr=0.0001]" not in note  # selected rows only
    assert "lora ≈" not in note and "lora -" not in note  # not tested against itself
    (t,) = build_tables(collect([sweep]), "full", ["nope"])
    assert any(n.startswith("vs nope: n/a") for n in t.notes)


def test_paired_bootstrap_on_lm_losses(tmp_path: Path):
    """Per-example token losses: a uniformly lower loss is significant by the paired bootstrap."""
    for i, (m, shift) in enumerate((("full", 0.0), ("lora", 0.5))):
        run = tmp_path / f"lm{i}"
        (run / "predictions").mkdir(parents=True)
        loss = [2.0 + 0.01 * k + shift for k in range(50)]
        with gzip.open(run / "predictions" / "val.json.gz", "wt") as f:
            json.dump({"ids": list(range(50)), "loss": loss, "tokens": [10] * 50}, f)
        results.write(run, results.empty_record(
            run_id=f"lm{i}", seed=1, model={"family": "m", "size": "s"}, method={"name": m, "family": "x"},
            dataset={"name": "lm", "task": "causal_lm"}, metrics={"val/loss": sum(loss) / 50},
            eval={"val": {"n": 50, "majority_rate": None, "majority_label": None, "metric": "val/loss",
                          "predictions": "predictions/val.json.gz"}}))
    g = {x.method: x for x in collect([tmp_path]).groups}
    c = compare(g["lora"], g["full"], "val/loss")
    assert c.test == "paired bootstrap" and c.p == 0.0 and c.diff == pytest.approx(0.5)


def test_cli_reference_option(sweep: Path, tmp_path: Path):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "peftbench.cli.main", "report", str(sweep), "--out", str(tmp_path / "o"),
                        "--no-plots", "--formats", "csv", "--reference", "lora"], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "| vs lora (test/acc) |" in p.stdout
    p = subprocess.run([sys.executable, "-m", "peftbench.cli.main", "report", str(sweep), "--out", str(tmp_path / "x"),
                        "--reference", "nope"], capture_output=True, text=True, check=False)
    assert p.returncode == 2 and "--reference nope: no such method" in p.stderr and not (tmp_path / "x").exists()
    for bad, why in (("full,nope,nope", "no such method 'nope' ("), ("lora,lora", "'lora' repeated"),
                     ("full,", "an empty name"), ("", "an empty name")):
        p = subprocess.run([sys.executable, "-m", "peftbench.cli.main", "report", str(sweep), "--out", str(tmp_path / "x"),
                            "--reference", bad], capture_output=True, text=True, check=False)
        assert p.returncode == 2 and why in p.stderr and not (tmp_path / "x").exists(), (bad, p.stderr[-500:])


def test_predictions_path_outside_the_run_is_not_read(sweep: Path, tmp_path: Path):
    """A record never makes the report read outside its run folder; the checks then say n/a."""
    from peftbench.report import evidence

    rec = json.loads((sweep / "run6" / "results.json").read_text())  # ia3, one seed
    rec["eval"]["test"]["predictions"] = "../run0/predictions/test.json.gz"
    results.write(tmp_path / "evil" / "a", rec)
    (g,) = collect([tmp_path / "evil"]).groups
    assert evidence.predictions(g.runs[0], "test") is None
    (t,) = build_tables(collect([tmp_path / "evil"]))
    assert "test/acc" not in t.referee.of(t.groups[0]).intervals


def test_convergence_tolerance_respects_the_curve_subset(tmp_path: Path):
    """+0.02 accuracy over the last quarter: two examples' worth on a 1000-example subset (flagged),
    about one example on a 64-example subset (noise, not flagged)."""
    from peftbench.report.referee import convergence_flag

    pts = [[25, 0.70], [50, 0.75], [75, 0.78], [100, 0.80]]
    out = {}
    for sub in (64, 1000):
        rec = results.empty_record(run_id=f"c{sub}", seed=1, model={"family": "m", "size": "s"},
                                   method={"name": f"x{sub}", "family": "f"}, dataset={"name": "d"},
                                   metrics={"val/acc": 0.8}, curves={"val": {"metric": "val/acc", "subset": sub,
                                                                             "points": pts}})
        results.write(tmp_path / str(sub), rec)
    for g in collect([tmp_path]).groups:
        out[g.method] = convergence_flag(g)
    assert out["x64"] is None and out["x1000"].code == "not_converged"


def test_the_last_quarter_starts_at_three_quarters_not_at_half():
    """150 steps at 4 points validate at 38, 76, 114, 150: the quarter mark 112.5 lies just before
    114 (the old rule, "last point at or before 75 %", started at 76: the last half)."""
    from peftbench.report import stats

    pts = [[38, 0.70], [76, 0.80], [114, 0.85], [150, 0.855]]
    ref = 0.80 + 0.05 * (112.5 - 76) / 38
    assert stats.late_change(pts, lower_better=False) == pytest.approx((0.855 - ref, ref))
    assert stats.late_change([[25, 2.0], [50, 1.5], [75, 1.2], [100, 1.0]], lower_better=True) == pytest.approx((0.2, 1.2))


def _curve_run(root: Path, name: str, seed: int, points, sub: int = 256, **extra) -> None:
    rec = results.empty_record(run_id=f"{name}{seed}", seed=seed, config={"seed": seed}, model={"family": "m", "size": "s"},
                               method={"name": name, "family": "f"}, dataset={"name": "d"}, metrics={"val/acc": 0.8},
                               curves={"val": {"metric": "val/acc", "subset": sub, "points": points}}, **extra)
    results.write(root / f"{name}-{seed}", rec)


def test_several_seeds_are_judged_by_their_mean_curve(tmp_path: Path):
    """Seeds whose last checkpoints wobble both ways (+4 %, -4 %, 0) are converged on average; seeds
    that all still rise by 3 % are not, and the flag says it read their mean."""
    from peftbench.report.referee import convergence_flag

    base = [[38, 0.70], [76, 0.80], [114, 0.84]]
    for seed, end in ((1, 0.874), (2, 0.806), (3, 0.84)):
        _curve_run(tmp_path, "wobbly", seed, [*base, [150, end]])
    for seed in (1, 2, 3):
        _curve_run(tmp_path, "rising", seed, [*base, [150, 0.865]])
    flags = {g.method: convergence_flag(g) for g in collect([tmp_path]).groups}
    assert flags["wobbly"] is None
    assert flags["rising"].code == "not_converged" and "mean of 3 seeds" in flags["rising"].why


def test_a_bounded_score_near_zero_is_judged_in_points_not_relative_to_zero(tmp_path: Path):
    """CoLA's MCC of a near-constant predictor creeps from 0.010 to 0.018: +80 % relative, but under
    one point of MCC (0.006 over the last quarter), which is no sign of an unfinished run; a loss is still judged relative."""
    from peftbench.report.referee import convergence_flag

    def run(name: str, metric: str, points) -> None:
        rec = results.empty_record(run_id=name, seed=1, config={"seed": 1}, model={"family": "m", "size": "s"},
                                   method={"name": name, "family": "f"}, dataset={"name": "d"},
                                   metrics={metric: points[-1][1]},
                                   curves={"val": {"metric": metric, "subset": 400, "points": points}})
        results.write(tmp_path / name, rec)

    run("mcc_creep", "val/mcc", [[50, 0.0], [100, 0.010], [150, 0.018]])
    run("mcc_rise", "val/mcc", [[50, 0.0], [100, 0.10], [150, 0.18]])
    run("loss_drop", "val/loss", [[50, 0.30], [100, 0.20], [150, 0.1985]])  # 0.6 % relative: converged
    run("loss_fall", "val/loss", [[50, 0.30], [100, 0.20], [150, 0.19]])   # 3.8 % relative from 0.1975
    flags = {g.method: convergence_flag(g) for g in collect([tmp_path]).groups}
    assert flags["mcc_creep"] is None and flags["loss_drop"] is None
    assert flags["mcc_rise"].code == "not_converged" and "6.0 points" in flags["mcc_rise"].why
    assert "tolerance 1 point" in flags["mcc_rise"].why
    assert flags["loss_fall"].code == "not_converged" and "3.8%" in flags["loss_fall"].why


@pytest.mark.parametrize("metric", ["acc", "mcc"])
def test_a_curve_that_stopped_before_the_end_is_completed_from_the_predictions(tmp_path: Path, metric: str):
    """Records whose last validation came before the final step (114 of 150) end their curve with the
    final model's value on the same subset (its first rows), read from the per-example predictions."""
    from peftbench.report import evidence, stats

    n, sub = 20, 8
    labels = [k % 2 for k in range(n)]
    preds = [1 - y if k in (0, 3, 12) else y for k, y in enumerate(labels)]  # 2 of the first 8 wrong
    run = tmp_path / "r"
    (run / "predictions").mkdir(parents=True)
    with gzip.open(run / "predictions" / "val.json.gz", "wt") as f:
        json.dump({"ids": list(range(n)), "label": labels, "pred": preds}, f)
    rec = results.empty_record(
        run_id="r", seed=1, config={"seed": 1}, model={"family": "m", "size": "s"}, method={"name": "x", "family": "f"},
        dataset={"name": "d"}, metrics={f"val/{metric}": 0.5},
        eval={"val": {"n": n, "majority_rate": 0.5, "majority_label": 0, "metric": f"val/{metric}",
                      "predictions": "predictions/val.json.gz"}},
        curves={"val": {"metric": f"val/{metric}", "subset": sub, "points": [[38, 0.1], [76, 0.2], [114, 0.3]]},
                "train_loss": [[50, 1.0], [100, 0.8], [150, 0.7]]})
    results.write(run, rec)
    (g,) = collect([tmp_path]).groups
    name, pts = evidence.val_curve(g.runs[0])
    want = 6 / 8 if metric == "acc" else stats.matthews(preds[:sub], labels[:sub])
    assert name == f"val/{metric}" and pts[:3] == [[38, 0.1], [76, 0.2], [114, 0.3]] and pts[3] == [150, pytest.approx(want)]
    assert metric == "acc" or want == pytest.approx(0.5)  # 2 of 8 wrong, one of each class: MCC 0.5


@pytest.mark.parametrize("pred,label,k,undefined", [
    ([1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0], [1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0], 2, False),  # ordinary binary
    ([0] * 10, [0] * 7 + [1] * 3, 2, True),       # constant predictor: 0 (torchmetrics 1.x says 0.035-ish)
    ([1, 1, 1], [0, 1, 0], 2, True), ([0, 0], [0, 0], 2, True), ([1, 1], [0, 0], 2, True),  # one class only
    ([0, 1, 2, 2, 1, 0, 2], [0, 1, 1, 2, 1, 2, 2], 3, False), ([2] * 5, [0, 1, 2, 2, 1], 3, True)])  # multiclass
def test_matthews_is_the_training_metric_and_zero_where_undefined(pred, label, k, undefined):
    """A curve point completed from predictions must sit on the curve the training metric drew; where
    MCC is undefined both say 0 (GLUE's convention), elsewhere both agree with torchmetrics."""
    import torch
    from torchmetrics.classification import MulticlassMatthewsCorrCoef

    from peftbench.lit.tasks import MatthewsCorrCoef
    from peftbench.report import stats

    ours = float(MatthewsCorrCoef(num_classes=k)(torch.tensor(pred), torch.tensor(label)))
    assert stats.matthews(pred, label, k) == pytest.approx(ours, abs=1e-6)
    if undefined:
        assert ours == 0.0
    else:
        assert ours == pytest.approx(float(MulticlassMatthewsCorrCoef(num_classes=k)(torch.tensor(pred),
                                                                                       torch.tensor(label))), abs=1e-6)
        assert ours != 0.0


@pytest.mark.parametrize("ones", [11, 12])
def test_fix_mcc_records_corrects_an_old_record_once(tmp_path: Path, ones: int):
    """A record written with torchmetrics' edge rule (a constant predictor scored 0.035-ish) is
    corrected from its saved predictions, curve point included, and a second pass changes nothing.
    With 12 of the curve's 16 rows positive, a model predicting both classes can score the old
    constant value too (0.288675): that curve point is ambiguous and stays."""
    import importlib.util

    import torch
    from torchmetrics.classification import MulticlassMatthewsCorrCoef

    spec = importlib.util.spec_from_file_location("fix_mcc", Path(__file__).parents[1] / "scripts" / "fix_mcc_records.py")
    fix = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fix)
    labels = [1] * ones + [0] * (16 - ones) + [1, 1, 1, 0] * 6  # the curve's 16-row subset first
    old = float(MulticlassMatthewsCorrCoef(num_classes=2)(torch.ones(40, dtype=torch.long), torch.tensor(labels)))
    sub = float(MulticlassMatthewsCorrCoef(num_classes=2)(torch.ones(16, dtype=torch.long), torch.tensor(labels[:16])))
    assert old != 0.0
    run = tmp_path / "r"
    (run / "predictions").mkdir(parents=True)
    with gzip.open(run / "predictions" / "val.json.gz", "wt") as f:
        json.dump({"ids": list(range(40)), "label": labels, "pred": [1] * 40}, f)
    rec = results.empty_record(
        run_id="r", seed=1, config={"seed": 1}, model={"family": "m", "size": "s"}, method={"name": "x", "family": "f"},
        dataset={"name": "d"}, metrics={"val/mcc": old, "val/acc": 0.75},
        eval={"val": {"n": 40, "majority_rate": 0.75, "majority_label": 1, "metric": "val/mcc",
                      "predictions": "predictions/val.json.gz"}},
        curves={"val": {"metric": "val/mcc", "subset": 16, "points": [[5, 0.25], [10, float(f"{sub:.6g}")]]}})
    results.write(run, rec)
    assert fix.main([str(tmp_path)]) == 0
    got = results.read(run / "results.json")
    fixed = ones == 11
    assert got["metrics"]["val/mcc"] == 0.0
    assert got["curves"]["val"]["points"] == [[5, 0.25], [10, 0.0 if fixed else float(f"{sub:.6g}")]]
    assert [c["key"] for c in got["corrections"]] == ["metrics.val/mcc", *(["curves.val.points[step=10]"] * fixed)]
    before = (run / "results.json").read_bytes()
    fix.main([str(tmp_path)])
    assert (run / "results.json").read_bytes() == before


def test_a_constant_predictor_s_mcc_is_zero_through_the_lightning_module_s_metric():
    """Accumulated over batches as validation does (update, update, compute): still 0, not an eps value."""
    import torch

    from peftbench.lit.tasks import Classification

    mcc = Classification(2, headline="mcc").metrics()["mcc"]
    for labels in ([1] * 200 + [0] * 56, [1] * 88 + [0] * 56):
        mcc.update(torch.ones(len(labels), dtype=torch.long), torch.tensor(labels))
    assert float(mcc.compute()) == 0.0


def test_the_last_quarter_is_read_at_three_quarters_of_the_final_step():
    """Five points (20 % apart): the reference is the value at 75 %, between the 60 % and 80 % points."""
    from peftbench.report import stats

    pts = [[20, 0.5], [40, 0.6], [60, 0.7], [80, 0.8], [100, 0.81]]
    assert stats.late_change(pts, lower_better=False) == pytest.approx((0.035, 0.775))


def test_seeds_that_end_at_different_steps_are_read_one_by_one(tmp_path: Path):
    """No mean over curves that end at different steps (it would end before some seed's training
    did): each seed is judged alone, and the flag names the seed."""
    from peftbench.report.referee import convergence_flag

    _curve_run(tmp_path, "mixed", 1, [[38, 0.70], [76, 0.80], [114, 0.84], [150, 0.845]])
    _curve_run(tmp_path, "mixed", 2, [[38, 0.70], [76, 0.80], [114, 0.90]])
    (g,) = collect([tmp_path]).groups
    flag = convergence_flag(g)
    assert flag.code == "not_converged" and "(seed 2)" in flag.why
