"""The standard benchmark's protocol pieces (issue 22): a dev split cut from train that is never the
reported split, CoLA's Matthews correlation, workers that split the grid by whole groups, records
committed as they land, and the quick edition end to end (slow: `pytest -m slow`)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from peftbench.cli import suite
from peftbench.cli.suite import Cell, Grid, Task, available_methods, cells, grids, shard_of
from peftbench.data.examples import load_single
from peftbench.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _tsv(path: Path, n: int) -> Path:
    """``label<TAB>text`` rows, labels 0/1/2 interleaved (2 rarer), text = the row number."""
    path.mkdir(parents=True, exist_ok=True)
    rows = [f"{(0, 1, 0, 1, 2)[i % 5]}\trow {i}" for i in range(n)]
    (path / "train.tsv").write_text("\n".join(rows) + "\n")
    (path / "test.tsv").write_text("\n".join(rows[:10]) + "\n")
    return path


def _ds(**kw):
    ds = {"name": "toy", "task": "classification", "label_names": ["a", "b", "c"],
          "local": {"dir": "toy", "format": "tsv", "header": False, "files": {"train": "train.tsv"}, "text": 1,
                    "label": 0}, "train_limit": None, "val_limit": None, "test_limit": None, "subset_seed": 0}
    ds.update(kw)
    return ds


def _rows(split) -> list[int]:
    return [int(t.split()[1]) for t in split.columns["text"]]


def test_validation_and_test_cut_from_train_are_disjoint_ordered_and_stratified(tmp_path):
    _tsv(tmp_path / "toy", 1000)
    out = load_single(_ds(val_fraction=0.1, test_fraction=0.2, val_limit=50), str(tmp_path))
    train, val, test = (_rows(out[s]) for s in ("train", "validation", "test"))
    assert (len(train), len(test)) == (700, 200) and len(val) == 50
    assert max(train) < min(val) and max(val) < min(test)  # [train | validation | test] from the end
    assert test == list(range(800, 1000))
    # a limited held-out split keeps the class shares of its part of the file (2:2:1)
    assert Counter(out["validation"].columns["label"]) == {0: 20, 1: 20, 2: 10}


def test_val_fraction_alone_cuts_where_it_always_did(tmp_path):
    """Existing runs' splits must not move: validation alone is cut at int(n × (1 − val_fraction))."""
    _tsv(tmp_path / "toy", 1001)
    out = load_single(_ds(val_fraction=0.05), str(tmp_path))
    assert len(out["train"]) == int(1001 * 0.95) and "test" not in out


def test_a_file_split_wins_over_its_fraction(tmp_path):
    _tsv(tmp_path / "toy", 100)
    ds = _ds(val_fraction=0.1, test_fraction=0.1)
    ds["local"]["files"]["test"] = "test.tsv"  # the reported split is a file: only validation is cut
    out = load_single(ds, str(tmp_path))
    assert (len(out["train"]), len(out["validation"]), len(out["test"])) == (90, 10, 10)


def test_one_document_is_cut_by_characters(tmp_path):
    (tmp_path / "c").mkdir()
    text = "".join(chr(97 + i % 26) for i in range(1000))
    (tmp_path / "c" / "doc.txt").write_text(text)
    ds = {"name": "doc", "task": "causal_lm", "format": "text", "local": {"dir": "c", "format": "text",
          "files": {"train": "doc.txt"}}, "val_fraction": 0.05, "test_fraction": 0.05}
    out = load_single(ds, str(tmp_path))
    parts = [out[s].columns["text"][0] for s in ("train", "validation", "test")]
    assert [len(p) for p in parts] == [900, 50, 50] and "".join(parts) == text


def test_fractions_that_leave_no_training_data_are_refused():
    from peftbench.config.compose import compose
    from peftbench.config.plan import check_numbers

    cfg = compose(["dataset=wiki_demo", "+dataset.test_fraction=0.95"])
    with pytest.raises(ConfigError, match="leave no training data"):
        check_numbers(cfg)
    with pytest.raises(ConfigError, match="dataset.metric"):
        check_numbers(compose(["dataset=cola", "+dataset.metric=bleu"]))


def test_classification_reports_matthews_correlation_and_can_headline_it():
    import torch

    from peftbench.lit.tasks import make_task

    task = make_task("classification", 2, {"metric": "mcc"})
    assert task.headline == "mcc"
    m = task.metrics()
    preds, target = torch.tensor([1, 1, 1, 0]), torch.tensor([1, 1, 0, 0])
    for metric in m.values():
        metric.update(preds, target)
    # MCC = (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2·1 − 1·0) / sqrt(3·2·1·2)
    assert float(m["mcc"].compute()) == pytest.approx(2 / 12 ** 0.5)
    assert make_task("classification", 2, {}).headline == "acc"
    with pytest.raises(ValueError, match="dataset.metric"):
        make_task("classification", 2, {"metric": "bleu"})


# ---- the grid --------------------------------------------------------------------------------------
def test_standard_grid_follows_the_issue_protocol():
    g = grids()["standard_cpu"]
    methods, skipped = available_methods(g.methods)
    assert not skipped and len(g.seeds) >= 3
    for t in g.tasks:
        for m in t.own_methods(methods):
            lrs = g.lr_grid(m, t)
            assert len(lrs) >= 3 and lrs == sorted(lrs), (t.name, m)
        assert t.select.split("/")[0] == "val" and t.report.split("/")[0] == "test", t.name  # dev ≠ reported
        assert t.select.split("/")[1] == t.report.split("/")[1] or "loss" in t.select, t.name
    main = g.tasks[0]
    assert (main.name, main.models, main.methods) == ("sst2", (("minilm", "l6"),), None)  # every method
    names = {t.name for t in g.tasks}
    assert {"sst2", "mr", "cola", "agnews", "alpaca_sft", "wiki_lm"} <= names
    sizes = {(f, s) for t in g.tasks if t.name == "sst2" for f, s in t.models}
    assert sizes == {("minilm", "l6"), ("mpnet", "base"), ("llama", "smollm2_135m")}
    # one budget per task: a method never brings its own steps or batch
    for c in cells(g, methods):
        assert not any(o.startswith(("method.optim", "trainer.accumulate")) for o in c.overrides(g)), c.rel_dir()


def test_workers_share_whole_groups_and_nothing_twice():
    g = grids()["standard_cpu"]
    methods = available_methods(g.methods)[0]
    every = {c.group for c in cells(g, methods)}
    shares = [shard_of(g, methods, k, 2) for k in range(2)]
    assert shares[0] | shares[1] == every and not shares[0] & shares[1]
    weight: dict = {}
    for c in cells(g, methods):
        weight[c.group] = weight.get(c.group, 0.0) + c.task.cost * (2.0 if c.method == "full" else 1.0)
    cost = [sum(weight[grp] for grp in sh) for sh in shares]
    assert max(cost) / min(cost) < 1.3  # balanced by the tasks' cost


def _fake(calls):
    def run(overrides, out, reuse=False):
        seed = int(next(o for o in overrides if o.startswith("seed=")).split("=")[1])
        lr = float(next(o for o in overrides if o.startswith("optim.lr=")).split("=")[1])
        calls.append((out.parts[-5], out.parts[-3], lr, seed))
        done = (out / "results.json").exists()
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text("{}")
        return {"status": "ok", "run_id": str(out), "skipped": done, "metrics": {"val/acc": lr, "test/acc": 0.5}}
    return run


def test_a_task_is_finished_before_the_next_starts_and_only_new_runs_are_committed(monkeypatch, tmp_path):
    calls, done = [], []
    monkeypatch.setattr(suite, "_run", _fake(calls))
    t1, t2 = (Task(n, (), "val/acc", "test/acc", (("m", "s"),)) for n in ("a", "b"))
    g = Grid("g", [t1, t2], ["lora", "bitfit"], seeds=[1, 2], lrs={"default": [1e-3, 1e-2, 1e-1]}, common=())
    suite._run_cells(g, ["lora", "bitfit"], tmp_path, tmp_path, extend=0, on_done=lambda f, r: done.append(f))
    tasks = [c[0] for c in calls]
    assert tasks == sorted(tasks)  # every run of task a (seeds included) before task b's first
    assert [c for c in calls if c[0] == "a" and c[3] == 2] == [("a", "lora", 0.1, 2), ("a", "bitfit", 0.1, 2)]
    assert len(done) == len(calls) == 2 * 2 * 4
    calls.clear(), done.clear()
    keep = {("b", "m", "s", "bitfit")}
    suite._run_cells(g, ["lora", "bitfit"], tmp_path, tmp_path, extend=0, keep=lambda c: c.group in keep,
                     on_done=lambda f, r: done.append(f))
    assert {c[:2] for c in calls} == {("b", "bitfit")}  # a worker's share
    assert len(done) == len(calls)  # finished ones go to the hook too (commit_record skips what is committed)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_commit_record_commits_the_record_and_not_the_weights(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    (repo / ".gitignore").write_text("**/adapter/\n")
    _git(repo, "add", ".gitignore")
    _git(repo, "commit", "-qm", "init")
    (repo / "staged-elsewhere.txt").write_text("not mine")
    _git(repo, "add", "staged-elsewhere.txt")
    run = repo / "runs" / "t" / "lr0.001" / "seed1"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "w.safetensors").write_bytes(b"\0" * 64)
    (run / "results.json").write_text(json.dumps({"status": "ok"}))
    monkeypatch.chdir(repo)
    suite.commit_record(run.relative_to(repo), "g: t/lr0.001/seed1 ok")
    files = _git(repo, "show", "--name-only", "--format=%s", "HEAD").split()
    assert files[0] == "g:" and "runs/t/lr0.001/seed1/results.json" in files
    assert not any("adapter" in f or "staged-elsewhere" in f for f in files)  # only the run's own record
    head = _git(repo, "rev-parse", "HEAD")
    suite.commit_record(run.relative_to(repo), "again")  # nothing new: no empty commit
    assert _git(repo, "rev-parse", "HEAD") == head


def test_a_committed_record_commits_its_report_regenerated_with_it(tmp_path, monkeypatch):
    """main never holds records its committed report does not reproduce, wherever a benchmark stops:
    the record and its regenerated report go in one commit, built from git's records only."""
    import shutil
    from types import SimpleNamespace

    from peftbench.report import build_report

    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (("init", "-q"), ("config", "user.email", "t@example.com"), ("config", "user.name", "t")):
        _git(repo, *args)
    runs = repo / "rep" / "runs"
    shutil.copytree(Path(__file__).resolve().parents[1] / "reports" / "quickstart" / "runs", runs)
    late = next(runs.glob("*method=lora*"))
    shutil.move(late, tmp_path / "late")
    (repo / "rep" / "report-args").write_text("--reference=lora --formats md,csv,html\n")  # as `peftbench report` reads it
    build_report([runs], repo / "rep")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "init")
    shutil.move(tmp_path / "late", late)
    other = runs / "another worker's, not yet staged"
    shutil.copytree(next(runs.glob("*method=full*")), other)
    (repo / "elsewhere.txt").write_text("not mine")
    monkeypatch.chdir(repo)
    suite.committer(SimpleNamespace(name="g"), runs.relative_to(repo))(late.relative_to(repo), {"status": "ok"})
    subject, files = _git(repo, "show", "--name-only", "--format=%s", "HEAD").split("\n", 1)
    assert subject.startswith("g: ") and subject.endswith(" ok")  # one commit: the record and its report
    assert "rep/report.md" in files and "rep/report.html" in files and "results.json" in files
    assert "elsewhere.txt" not in files and "another worker" not in files
    shutil.rmtree(other)
    fresh = build_report([runs], tmp_path / "fresh", formats=("md",), reference="lora")
    assert _git(repo, "show", "HEAD:rep/report.md") == fresh.markdown and "| lora |" in fresh.markdown
    assert "rep/report.tex" not in files  # report-args' --formats honoured
    assert _git(repo, "status", "--porcelain", "rep") == ""  # nothing of the report left uncommitted
    # a report that cannot be regenerated (a reference no record has) never stops the benchmark
    (repo / "rep" / "report-args").write_text("--reference nope\n")
    (repo / "rep" / "plots" / "stale.png").write_bytes(b"x")
    before = (repo / "rep" / "report.md").read_bytes()
    assert suite.refresh_report(runs.relative_to(repo)) == []
    assert (repo / "rep" / "report.md").read_bytes() == before and (repo / "rep" / "plots" / "stale.png").exists()
    (repo / "rep" / "report-args").write_text("--reference lora\n")
    paths = suite.refresh_report(runs.relative_to(repo))
    assert Path("rep/report.tex") in paths and not (repo / "rep" / "plots" / "stale.png").exists()


def test_shard_and_jobs_are_checked(capsys):
    for argv, msg in ((["--shard", "2/2", "--dry-run"], "0 <= K < N"), (["--shard", "x", "--dry-run"], "K/N"),
                      (["--jobs", "0"], "--jobs must be >= 1"), (["--jobs", "2", "--shard", "0/2"], "exclude")):
        with pytest.raises(SystemExit):
            suite.main(argv)
        assert msg in capsys.readouterr().err


@pytest.mark.parametrize("key,bad,why", [
    *(("extend_edges", b, "extend_edges must be an integer >= 0") for b in ("-1", "null", "1.5", "true")),
    # a reference the grid never runs would fail the report after the whole benchmark: refuse it first
    *(("references", b, "references must list distinct methods") for b in ("[]", "[full, full]", "[dora]", "lora"))])
def test_a_bad_grid_key_is_refused(tmp_path, key, bad, why):
    p = tmp_path / "g.yaml"
    p.write_text(f"methods: [full, lora]\nseeds: [1]\nlrs: {{default: [1.0e-3]}}\n{key}: {bad}\ntasks: []\n")
    with pytest.raises(ConfigError, match=why):
        suite.load_grid(p)


def test_the_untuned_method_alone_scores_the_model_before_training(tmp_path):
    """A task with no majority class (SFT) gets its base-model row from one method's runs, measured
    before fit; the other methods' runs (and their run ids) are untouched."""
    g = grids()["standard_cpu"]
    alpaca = dataclasses.replace(next(t for t in g.tasks if t.name == "alpaca_sft"), untuned="full")
    g = dataclasses.replace(g, tasks=[alpaca])
    by_method = {c.method: c.overrides(g) for c in cells(g, available_methods(g.methods)[0])}
    assert set(by_method) == {"full", "lora", "ia3", "houlsby", "prefix_tuning"}
    assert "measure.before=true" in by_method["full"]
    assert not any("measure.before" in o for m, ov in by_method.items() if m != "full" for o in ov)
    p = tmp_path / "g.yaml"
    # not one the task runs / not a name / not a method of the grid (the task runs the grid's)
    for own, bad in ((" methods: [full],", "dora"), (" methods: [full],", "[full]"), ("", "vera")):
        p.write_text(f"methods: [full, dora]\nseeds: [1]\nlrs: {{default: [1.0e-3]}}\n"
                     f"tasks: [{{name: t, models: {{m: [s]}}, select: val/loss, report: test/ppl, overrides: [],"
                     f"{own} untuned: {bad}}}]\n")
        with pytest.raises(ConfigError, match="untuned must name one method the task runs"):
            suite.load_grid(p)


def test_the_front_page_never_replaces_a_hand_written_reading(tmp_path):
    """A relaunch of a finished benchmark rewrites its generated front page, not what a person wrote."""
    page, text = suite.front_page(tmp_path, "# generated v1")
    assert page == tmp_path / "README.md" and text.startswith("# generated v1\n") and suite.READING_MARK in text
    page.write_text(text + "\n## Reading\n\nLoRA ties full.\n")
    page, text = suite.front_page(tmp_path, "# generated v2")
    assert page.name == "README.md" and text.startswith("# generated v2\n") and text.endswith("## Reading\n\nLoRA ties full.\n")
    assert "v1" not in text
    page.write_text("# A reading written by hand\n")
    page, text = suite.front_page(tmp_path, "# generated v3")
    assert page == tmp_path / "benchmark.md" and text == "# generated v3"


def test_references_default_to_full_without_requiring_it(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("methods: [lora]\nseeds: [1]\nlrs: {default: [1.0e-3]}\ntasks: []\n")
    assert suite.load_grid(p).references == ("full",)  # no key, no full: the report says n/a, the grid loads
    assert grids()["standard_cpu"].references == ("full", "lora")


def test_a_reference_whose_runs_all_failed_does_not_cost_the_finished_report(tmp_path):
    """The report comes after every run: a listed reference with no ok run is left out, not a crash."""
    from peftbench import results

    g = tmp_path / "g.yaml"
    g.write_text("methods: [full, lora, bitfit]\nseeds: [1]\nlrs: {default: [1.0e-3]}\nreferences: [full, lora, bitfit]\n"
                 "tasks: [{name: t, models: {m: [s]}, select: val/acc, report: test/acc, overrides: []}]\n")
    grid = suite.load_grid(g)
    runs, report = tmp_path / "runs", tmp_path / "report"

    def manifest(failed: set[str]) -> dict:
        records = {}
        for i, method in enumerate(grid.methods):
            cell = suite.Cell(grid.tasks[0], "m", "s", method, 1e-3, 1)
            ok = method not in failed
            rec = results.empty_record(
                run_id=f"r{i}", seed=1, status="ok" if ok else "failed", model={"family": "m", "size": "s"},
                method={"name": method, "family": "x"}, dataset={"name": "d"},
                metrics={"test/acc": 0.7 + 0.01 * i, "val/acc": 0.7} if ok else {})
            results.write(runs / cell.rel_dir(), rec)
            records[cell] = rec
        return suite.build_manifest(grid, "x", list(grid.methods), [], {}, records, runs, 0.0)

    report.mkdir()
    (report / "report-args").write_text("--reference stale\n")
    suite.write_report(manifest({"full"}), runs, report)
    assert (report / "report-args").read_text() == "--reference lora,bitfit --formats md,csv,tex,html\n"
    md = (report / "report.md").read_text()
    assert "_vs bitfit (test/acc, row − bitfit" in md and "no ok 'full' row" not in md  # the references kept
    suite.write_report(manifest({"full", "lora", "bitfit"}), runs, report)
    # back to the default reference: a stale --reference would regenerate wrongly
    assert (report / "report-args").read_text() == "--formats md,csv,tex,html\n"


def test_the_grid_names_its_edge_rounds_and_the_flag_overrides_them(capsys):
    """Every invocation (and each --jobs worker) must extend alike, or a relaunch selects differently."""
    assert grids()["standard_cpu"].extend_edges == 2 and grids()["standard_quick"].extend_edges == 1
    for argv, rounds in (([], 2), (["--extend-edges", "0"], 0)):
        assert suite.main(["--grid", "standard_cpu", "--only", "mr", "--dry-run", *argv]) == 0
        assert f"up to {rounds} more lr(s)" in capsys.readouterr().out.splitlines()[-1]


def test_ladder_paths_in_overrides_are_relative_to_the_repo(monkeypatch, tmp_path):
    """The ladder's path enters the run id: a benchmark resumed from another clone must find its runs."""
    monkeypatch.chdir(tmp_path)
    g = grids()["standard_cpu"]
    t = next(t for t in g.tasks if t.name == "wiki_lm")
    c = Cell(t, "gpt2_local", "s", "lora", 1e-3, 1)
    own = [o for o in c.overrides(g, Path("outputs/suite/pretrained")) if o.startswith("model.sizes")]
    assert own == ["model.sizes.s.local=outputs/suite/pretrained/gpt2_local-s-1200steps"]


@pytest.mark.slow
def test_quick_edition_end_to_end_with_two_workers_and_a_resume(tmp_path):
    """The CI edition through the same code path: two workers, records beside the report, the report
    regenerated from the records alone, and a relaunch that runs nothing again."""
    env = {**os.environ, "PEFTBENCH_DATA_DIR": os.environ.get("PEFTBENCH_DATA_DIR", str(REPO.parent / "shared" / "data")),
           "HF_HUB_OFFLINE": "1"}
    report, out = tmp_path / "report", tmp_path / "out"
    cmd = [sys.executable, "-m", "peftbench.cli.suite", "--quick", "--jobs", "2", "--report", str(report), "--out", str(out)]
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    m = json.loads((report / "manifest.json").read_text())
    assert m["statuses"] and set(m["statuses"].values()) == {"ok"}
    runs = report / "runs"
    records = {p: p.read_bytes() for p in runs.rglob("results.json")}
    # phase 2 ran the second seed at the selected lr only
    for row in m["selection"]:
        seeds = [k for k in m["run_ids"] if k.startswith(f"{row['task']}/{row['model']}-{row['size']}/{row['method']}/")
                 and k.endswith("seed2")]
        assert seeds == [f"{row['task']}/{row['model']}-{row['size']}/{row['method']}/lr{row['best_lr']:g}/seed2"]
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.read_bytes() for p in runs.rglob("results.json")} == records  # nothing re-run or rewritten
    # the grid's references (lora, bitfit): a column and a note, and the arguments that regenerate them
    assert (report / "report-args").read_text() == "--reference lora,bitfit --formats md,csv,tex,html\n"
    # committed beside its records: PNG plots (report.html embeds them), not their SVG copies
    assert list((report / "plots").glob("*.png")) and not list((report / "plots").glob("*.svg"))
    md = (report / "report.md").read_text()
    assert "| vs lora (" in md and "_vs bitfit [lr=" in md
    # the LM task's `untuned: lora`: its runs scored the model before training, the table's baseline row
    assert "| _base model (untuned)_ |" in md
    regen = subprocess.run([sys.executable, "-m", "peftbench.cli", "report", str(runs), "--out", str(tmp_path / "r2"),
                            *(report / "report-args").read_text().split()],
                           cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert regen.returncode == 0, regen.stderr[-2000:]
    assert (tmp_path / "r2" / "report.md").read_bytes() == (report / "report.md").read_bytes()


def _mcc_run(root: Path, i: int, method: str, seed: int, mcc: float, acc: float) -> None:
    from peftbench import results

    rec = results.empty_record(
        run_id=f"r{i}", seed=seed, config={"method": {"name": method}, "seed": seed, "dataset": {"metric": "mcc"}},
        model={"family": "m", "size": "s", "total": 1000}, method={"name": method, "family": "selective"},
        dataset={"name": "cola", "task": "classification"}, params={"trainable": 10, "total": 1000},
        metrics={"test/acc": acc, "test/mcc": mcc, "val/acc": acc, "val/mcc": mcc},
        eval={"test": {"n": 500, "majority_rate": 0.69, "majority_label": 1, "metric": "test/mcc",
                       "predictions": "predictions/test.json.gz"}})
    results.write(root / f"run{i}", rec)  # no predictions file: the report copes (intervals over seeds)


def test_a_declared_metric_heads_the_table_and_mcc_near_zero_is_flagged(tmp_path):
    """CoLA's runs declare dataset.metric=mcc: the table is judged on test/mcc (not acc, which the
    generic preference would pick), the majority rate stays an accuracy, and an MCC whose interval
    over seeds includes 0 is flagged ≈ baseline."""
    from peftbench.report import collect
    from peftbench.report.tables import build_tables

    for i, (method, seed, mcc) in enumerate([("full", 1, 0.40), ("full", 2, 0.42), ("full", 3, 0.38),
                                             ("ia3", 1, 0.02), ("ia3", 2, -0.03), ("ia3", 3, 0.05)]):
        _mcc_run(tmp_path / "sweep", i, method, seed, mcc, 0.7)
    (t,) = build_tables(collect([tmp_path / "sweep"]))
    assert t.referee.metric == "test/mcc"
    assert t.referee.majority == {"test/acc": (0.69, 500)}
    flags = {g.method: {f.code for f in t.referee.of(g).flags} for g in t.groups}
    assert flags == {"full": set(), "ia3": {"baseline"}}


def test_the_pass_after_the_workers_collects_their_records_and_trains_nothing(monkeypatch, tmp_path):
    """After --jobs workers, the parent walks the grid with reuse: a record of the exact run is taken
    whatever its status (a worker's failure is reported, not re-run by an unthrottled parent)."""
    import peftbench.train as train_mod
    from peftbench import results
    from peftbench.config.compose import compose
    from peftbench.run import record

    overrides = ["model=bert", "model_size=tiny", "method=lora", "dataset=sst2", "seed=1"]
    out = tmp_path / "cell"
    rid = results.run_id(record.container(compose(overrides, output_dir=str(out))))
    rec = results.empty_record(run_id=rid, seed=1, config={"seed": 1}, model={"family": "bert", "size": "tiny"},
                               method={"name": "lora", "family": "reparameterized"},
                               dataset={"name": "sst2", "task": "classification"})
    rec.update(status="failed", error="diverged")
    results.write(out, rec)
    monkeypatch.setattr(train_mod, "train", lambda cfg: pytest.fail("the collecting pass trained"))
    got = suite._run(overrides, out, reuse=True)
    assert (got["status"], got["skipped"], got["error"]) == ("failed", True, "diverged")
    # another configuration's record in the folder is not taken for this one
    with pytest.raises(pytest.fail.Exception, match="trained"):
        suite._run([*overrides[:-1], "seed=2"], out, reuse=True)


def test_seeds_run_at_the_winner_cannot_move_the_selection(tmp_path):
    """The lr grid ran on seed 1; seeds 2 and 3 ran at its winner and scored lower there. Both the
    suite and the report still compare the lrs on seed 1 alone (the seeds every lr has)."""
    from peftbench import results
    from peftbench.report import collect
    from peftbench.report.referee import sweeps

    t = Task("t", (), "val/acc", "test/acc", (("m", "s"),))
    g = Grid("g", [t], ["lora"], seeds=[1, 2, 3], lrs={"default": [1e-3, 3e-3]}, common=())
    val = {(1e-3, 1): 0.80, (3e-3, 1): 0.84, (3e-3, 2): 0.70, (3e-3, 3): 0.72}
    recs = {Cell(t, "m", "s", "lora", lr, seed): {"status": "ok", "metrics": {"val/acc": v}} for (lr, seed), v in val.items()}
    (row,) = suite.select(g, recs)
    assert row["best_lr"] == 3e-3 and row["lr_scores"] == {"0.001": 0.80, "0.003": 0.84}
    for i, ((lr, seed), v) in enumerate(val.items()):
        rec = results.empty_record(
            run_id=f"r{i}", seed=seed, config={"method": {"name": "lora"}, "seed": seed, "optim": {"lr": lr}},
            model={"family": "m", "size": "s", "total": 1000}, method={"name": "lora", "family": "reparameterized"},
            dataset={"name": "toy", "task": "classification"}, params={"trainable": 10, "total": 1000},
            metrics={"val/acc": v, "test/acc": v})
        results.write(tmp_path / f"run{i}", rec)
    coll = collect([tmp_path])
    (sw,) = sweeps(coll.groups, "test/acc")
    sel = next(v for v, _, grp in sw.rows if grp is sw.selected)
    assert sel == 3e-3 and [round(st.mean, 4) for _, st, _ in sw.rows] == [0.80, 0.84]


def test_an_lr_with_no_scored_run_does_not_undo_the_common_seed_rule():
    """A grid point that failed on every seed has nothing to compare; it must not empty the common
    seeds and let the winner's later seeds back into the comparison (a guard on the shared rule:
    the suite's own copy of it already behaved so)."""
    from peftbench.report.stats import common_seeds

    assert common_seeds([{1, 2, 3}, {1}, set()]) == {1} and common_seeds([set(), set()]) == set()
    t = Task("t", (), "val/acc", "test/acc", (("m", "s"),))
    g = Grid("g", [t], ["lora"], seeds=[1, 2, 3], lrs={"default": [1e-3, 3e-3, 1e-2]}, common=())
    val = {(1e-3, 1): 0.80, (3e-3, 1): 0.79, (3e-3, 2): 0.90, (3e-3, 3): 0.90}
    recs = {Cell(t, "m", "s", "lora", lr, seed): {"status": "ok", "metrics": {"val/acc": v}} for (lr, seed), v in val.items()}
    recs[Cell(t, "m", "s", "lora", 1e-2, 1)] = {"status": "failed", "metrics": {}}
    (row,) = suite.select(g, recs)
    assert row["best_lr"] == 1e-3 and row["lr_scores"] == {"0.001": 0.80, "0.003": 0.79}


def test_a_validation_tie_with_an_edge_value_extends_that_edge(tmp_path):
    """1e-3 and the top value 3e-3 tie on validation (0.865 on 400 sentences is common): the lower
    lr is selected, but the optimum may lie beyond 3e-3, so the suite extends the grid there and the
    report flags the edge, naming the tied value."""
    from peftbench import results
    from peftbench.report import collect
    from peftbench.report.referee import edge_flag, sweeps

    t = Task("t", (), "val/acc", "test/acc", (("m", "s"),))
    g = Grid("g", [t], ["lora"], seeds=[1], lrs={"default": [3e-4, 1e-3, 3e-3]}, common=())
    val = {3e-4: 0.80, 1e-3: 0.865, 3e-3: 0.865}
    recs = {Cell(t, "m", "s", "lora", lr, 1): {"status": "ok", "metrics": {"val/acc": v}} for lr, v in val.items()}
    (row,) = suite.select(g, recs)
    assert row["best_lr"] == 1e-3 and row["edge"] == "high"
    assert suite.next_lr(list(val), "high") == pytest.approx(9e-3)
    # an extension below the grid that ties is run last but, as in the report, wins the tie
    (row,) = suite.select(g, {**recs, Cell(t, "m", "s", "lora", 1e-4, 1): {"status": "ok", "metrics": {"val/acc": 0.865}}})
    assert row["best_lr"] == 1e-4
    for i, (lr, v) in enumerate(val.items()):
        rec = results.empty_record(
            run_id=f"r{i}", seed=1, config={"method": {"name": "lora"}, "seed": 1, "optim": {"lr": lr}},
            model={"family": "m", "size": "s", "total": 1000}, method={"name": "lora", "family": "reparameterized"},
            dataset={"name": "toy", "task": "classification"}, params={"trainable": 10, "total": 1000},
            metrics={"val/acc": v, "test/acc": v})
        results.write(tmp_path / f"run{i}", rec)
    (sw,) = sweeps(collect([tmp_path]).groups, "test/acc")
    assert sw.edge == "high" and "ties on val/acc with lr=0.003, the largest value" in edge_flag(sw).why


def test_a_bad_override_in_the_grid_is_refused_before_any_run(monkeypatch, tmp_path, capsys):
    bad = Task("sst2", ("dataset=sst2", "trainer.max_steps=1.5"), "val/acc", "test/acc", (("bert", "tiny"),))
    typo = Task("mr", ("dataset=mrr",), "val/acc", "test/acc", (("bert", "tiny"),))
    for task, why in ((bad, "trainer.max_steps"), (typo, "mrr")):
        g = Grid("mine", [task], ["lora"], seeds=[1], lrs={"default": [1e-3]}, common=())
        monkeypatch.setattr(suite, "grids", lambda g=g: {"mine": g, "standard_cpu": g})
        monkeypatch.setattr(suite, "_run", lambda *a, **k: pytest.fail("a run started"))
        assert suite.main(["--grid", "mine", "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "refused before any run" in err and f"task {task.name}" in err and why in err


def test_sizes_cuts_the_grid_to_some_sizes_and_refuses_unknown_ones(capsys):
    """--sizes l reruns one ladder size (its pretraining and cells), never the others'."""
    assert suite.main(["--grid", "gpt2_modes", "--sizes", "l", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = [ln.split(":")[0] for ln in lines if not ln.startswith("#")]
    assert runs and all("gpt2_local-l" in r for r in runs)
    assert any(r.startswith("pretrain gpt2_local-l") for r in runs)
    with pytest.raises(SystemExit):
        suite.main(["--grid", "gpt2_modes", "--sizes", "xl", "--dry-run"])
    assert "no size ['xl']" in capsys.readouterr().err


def test_missing_ladder_weights_are_rebuilt_only_when_a_cell_of_that_size_would_train(monkeypatch, tmp_path):
    """A clone with every record of a size but not its weights (never committed) writes its report
    without pretraining again; one unfinished cell of that size (a phase-1 lr, an edge extension, a
    seed at the selected lr) and the rebuild happens."""
    g = dataclasses.replace(suite.only_sizes(grids()["gpt2_modes"], {"s"}), pretrain={"s": 7})
    runs = tmp_path / "runs"
    trained: list[str] = []
    missing: tuple[str, ...] = ()

    def run(overrides, out, reuse=False):
        trained.append(str(out))
        if out.parent.name == "pretrain-rebuild":  # the rebuild saves the weights the cells load
            weights = Path(next(o for o in overrides if o.startswith("save_model=")).split("=", 1)[1])
            weights.mkdir(parents=True, exist_ok=True)
            (weights / "config.json").write_text("{}")
        return {"status": "ok", "run_id": "r", "metrics": {"val/ppl": 9.0}, "skipped": out.parent.name == "pretrain"}

    def finished(overrides, out):
        if missing and all(m in str(out) for m in missing):
            raise suite._Unfinished(str(out))
        return {"status": "ok", "metrics": {"val/loss": 1.0, "test/ppl": 2.0}}  # a tie: the smallest lr wins

    monkeypatch.setattr(suite, "_run", run)
    monkeypatch.setattr(suite, "_finished", finished)
    # the tie selects the low edge: extended (9e-05 first), then seeds 2 and 3 at the last extension
    for i, missing in enumerate([(), ("/qlora/lr0.001/seed1",), ("/qlora/lr9e-05/seed1",), ("/qlora/", "/seed2")]):
        trained.clear()
        suite._pretrain_ladder(g, runs, tmp_path / f"pretrained{i}")
        assert trained[0] == str(runs / "pretrain" / "gpt2_local-s-7steps")  # its record: skipped
        assert (len(trained) == 2 and "pretrain-rebuild" in trained[1]) == bool(missing), missing


def test_preflight_refuses_a_method_the_model_cannot_take_before_anything_trains(tmp_path):
    """Prefix tuning on MPNet (no past key/values) is refused by task and method, not three
    refused runs later; the ladder's sizes, not pretrained yet, are checked on their architecture."""
    sst2 = Task("sst2", ("dataset=sst2",), "val/acc", "test/acc", (("mpnet", "tiny"),))
    lm = Task("wiki_lm", ("dataset=wiki_demo",), "val/loss", "test/ppl", (("gpt2_local", "s"),))
    g = Grid("g", [sst2], ["lora", "prefix_tuning"], seeds=[1], lrs={"default": [1e-3]}, common=())
    with pytest.raises(suite.ConfigError, match=r"task sst2 \(mpnet-tiny, prefix_tuning\).*past_key_values"):
        suite.preflight(g, tmp_path)
    suite.preflight(dataclasses.replace(g, methods=["lora", "prompt_tuning"]), tmp_path)
    ladder = Grid("g", [lm], ["lora", "prefix_tuning"], seeds=[1], lrs={"default": [1e-3]}, pretrain={"s": 5}, common=())
    suite.preflight(ladder, tmp_path)  # tmp_path holds no weights: the ladder is pretrained after the preflight


def test_the_dry_pass_says_what_train_would_do_without_training(tmp_path):
    """No record: the cell would train. Its own finished record: skipped. Another configuration's
    finished run in its folder: train refuses it, so it needs no weights either."""
    from peftbench import results
    from peftbench.run import record

    g = grids()["gpt2_modes"]
    c = next(cells(suite.only_sizes(g, {"s"}), ["lora"]))
    out, overrides = tmp_path / c.rel_dir(), c.overrides(g, tmp_path)
    with pytest.raises(suite._Unfinished):
        suite._finished(overrides, out)
    rid = results.run_id(record.container(suite._compose(overrides, out)))
    for run_id, status in ((rid, "ok"), ("another", "refused")):
        results.write(out, results.empty_record(
            run_id=run_id, seed=1, config={}, model={"family": "gpt2_local", "size": "s"},
            method={"name": "lora", "family": "reparameterized"}, dataset={"name": "wiki_demo", "task": "causal_lm"}))
        assert suite._finished(overrides, out)["status"] == status
