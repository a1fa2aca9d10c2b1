"""Report: golden files, determinism, plots, bad inputs, and the no-torch import rule.

Regenerate the goldens after an intended format change with
    PEFTBENCH_UPDATE_GOLDEN=1 python -m pytest tests/test_report.py
and review the diff of tests/golden/report/ like any other code change.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peftbench import results
from peftbench.errors import ConfigError
from peftbench.report import build_report, collect
from peftbench.report.collect import Stat, size_rank
from peftbench.report.plots import headline_metric, pareto_front
from peftbench.report.tables import fmt_stat

HERE = Path(__file__).parent
RUNS = HERE / "data" / "report_runs"
GOLDEN = HERE / "golden" / "report"
UPDATE = os.environ.get("PEFTBENCH_UPDATE_GOLDEN") == "1"
GOLDEN_FILES = ("report.md", "report.csv", "failures.csv", "report.tex")
CORRUPT = "local_sweep/2024-05-01/12-00-00/7/results.json"
MISMATCH = "local_sweep/2024-05-01/12-00-00/8/results.json"


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    """A private copy, so the default output dir (<dir>/report) never lands in tests/data."""
    dst = tmp_path / "runs"
    shutil.copytree(RUNS, dst)
    return dst


def _all_files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_golden(runs: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    build_report([runs], out, formats=("md", "csv", "tex"), plots=False)
    got = (out / name).read_bytes()
    golden = GOLDEN / name
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(got)
    assert golden.exists(), f"missing golden {golden}; run with PEFTBENCH_UPDATE_GOLDEN=1"
    assert got == golden.read_bytes(), f"{name} differs from {golden}; if intended, regenerate"


def test_markdown_returned_equals_file(runs: Path, tmp_path: Path) -> None:
    res = build_report([runs], tmp_path / "o", formats=("md",), plots=False)
    assert res.markdown == (tmp_path / "o" / "report.md").read_text(encoding="utf-8")
    assert (res.n_ok, res.n_failed) == (6, 2)
    assert sorted(p.relative_to(runs).as_posix() for p in res.skipped) == [CORRUPT, MISMATCH]


def test_regenerate_byte_identical(runs: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    build_report([runs], a)
    build_report([runs], b)
    fa, fb = _all_files(a), _all_files(b)
    assert set(fa) == set(fb)
    assert "report.html" in fa and any(k.endswith(".svg") for k in fa)
    for k in fa:
        assert fa[k] == fb[k], f"{k} is not reproducible"


def test_content(runs: Path, tmp_path: Path) -> None:
    md = build_report([runs], tmp_path / "o", formats=(), plots=False).markdown
    # Blocks per model x size, small first; families in taxonomy order inside a block.
    assert md.index("## gpt2 · tiny") < md.index("## gpt2 · small")
    tiny = md[md.index("## gpt2 · tiny"): md.index("## gpt2 · small")]
    assert tiny.index("| ia3 | additive") < tiny.index("| bitfit | selective") < tiny.index("| lora |")
    for header in ("trainable params", "% trainable", "added params", "changed params", "stored bytes",
                   "train tokens/s", "useful tokens/s", "inference overhead", "peak RSS (MB)"):
        assert f"| {header} |" in md
    # mean ± std (n), best in bold, OOM kept as a row.
    assert "**0.8200 ± 0.0100 (3)**" in md
    assert "| ia3 | additive | 0 |" in tiny and "| OOM |" in tiny
    assert "RuntimeError: Expected all tensors" in md


def test_html_self_contained(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    build_report([runs], out, formats=("html",), plots=True)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<script>" in page and "<style>" in page
    assert 'id="q"' in page and 'data-key="family"' in page and 'data-key="dataset"' in page
    assert "data:image/png;base64," in page
    assert "src=\"http" not in page and "href=\"http" not in page
    assert '<td class="num best"' in page


def test_throughput_is_one_chart_per_dataset(runs: Path, tmp_path: Path) -> None:
    """Two datasets: a throughput chart each (speed compares within a task), none of both together."""
    import json

    recs = sorted(runs.rglob("results.json"))
    for f in recs[: len(recs) // 2]:
        try:
            rec = json.loads(f.read_text())
        except ValueError:  # the fixture's deliberately broken record
            continue
        rec["dataset"]["name"] = "other set"
        f.write_text(json.dumps(rec))
    res = build_report([runs], tmp_path / "o", formats=("md",), plots=True)
    names = {p.name for p in res.files}
    assert "throughput.png" not in names
    speed = sorted(n for n in names if n.startswith("throughput_") and n.endswith(".png"))
    assert speed == ["throughput_other_set.png", "throughput_sst2.png"]
    assert "other set: left, training throughput" in res.markdown


def test_svg_copies_are_a_format(runs: Path, tmp_path: Path) -> None:
    """PNGs always (report.html embeds them); the SVG copies only when ``svg`` is among the formats."""
    names = {p.name for p in build_report([runs], tmp_path / "a", formats=("md",), plots=True).files}
    assert "throughput.png" in names and not any(n.endswith(".svg") for n in names)
    names = {p.name for p in build_report([runs], tmp_path / "b", plots=True).files}  # the default
    assert "throughput.svg" in names


def test_plots_nonempty(runs: Path, tmp_path: Path) -> None:
    res = build_report([runs], tmp_path / "o", formats=("svg",), plots=True)
    names = sorted(p.name for p in res.files)
    for stem in ("metric_vs_trainable_sst2", "memory_vs_size", "throughput"):
        assert f"{stem}.png" in names and f"{stem}.svg" in names
    for p in res.files:
        data = p.read_bytes()
        assert len(data) > 1000
        if p.suffix == ".png":
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert b"<svg" in data and b"<dc:date>" not in data


def test_single_run_and_empty(tmp_path: Path) -> None:
    one = tmp_path / "one" / "0"
    one.mkdir(parents=True)
    shutil.copy(RUNS / "slurm/2024-05-02/09-30-00/.submitit/4242_0/job/results.json", one)
    res = build_report([tmp_path / "one"], None)
    assert res.n_ok == 1 and res.n_failed == 0
    assert (tmp_path / "one" / "report" / "report.html").exists()  # default out dir
    assert any(p.suffix == ".png" for p in res.files)
    assert "0.9100 (1)" in res.markdown  # one seed: no std

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no results.json under"):  # nothing to report: an error, nothing written
        build_report([empty], tmp_path / "eo")
    assert not (tmp_path / "eo").exists()


def test_oom_only_and_minimal_record(tmp_path: Path) -> None:
    """Missing sub-keys everywhere: render dashes, do not crash."""
    rec = results.empty_record(run_id="x", model={"family": "m", "size": "s"},
                               method={"name": "lora", "family": "reparameterized"},
                               dataset={"name": "d"}, metrics={"val/acc": 0.5})
    results.write(tmp_path / "r" / "a", rec)
    res = build_report([tmp_path / "r"], tmp_path / "o")
    assert "| lora | reparameterized | 1 | — | — | — | — | — | 0.5000 (1) |" in res.markdown


def test_corrupt_file_skipped_with_warning(runs: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="peftbench.report"):
        coll = collect([runs])
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert str(runs / CORRUPT) in text and str(runs / MISMATCH) in text
    assert "unreadable" in text and "missing key 'params'" in text
    assert coll.n_ok == 6 and len(coll.skipped) == 2


def test_duplicate_run_id_counted_once(runs: Path, tmp_path: Path) -> None:
    """A resumed sweep may leave the same run twice; seeds must not be double counted."""
    shutil.copytree(runs / "local_sweep", runs / "copy_of_sweep")
    coll = collect([runs])
    assert coll.n_ok == 6
    lora = next(g for g in coll.groups if g.method == "lora" and g.model_size == "tiny")
    assert lora.seeds == (1, 2, 3)


def test_multiple_dirs_and_ordering(runs: Path) -> None:
    coll = collect([runs / "slurm", runs / "local_sweep"])
    assert [(g.model_size, g.method) for g in coll.groups] == [
        ("tiny", "ia3"), ("tiny", "bitfit"), ("tiny", "lora"), ("small", "lora")]


def test_helpers() -> None:
    assert fmt_stat(Stat(0.5, None, 1)) == "0.5000 (1)"
    assert fmt_stat(Stat(123.456, 1.5, 3)) == "123.46 ± 1.50 (3)"
    assert pareto_front([(1, 0.5), (2, 0.4), (3, 0.9), (3, 0.8)], lower_better=False) == [(1, 0.5), (3, 0.9)]
    assert pareto_front([(1, 2.0), (2, 1.0)], lower_better=True) == [(1, 2.0), (2, 1.0)]
    assert sorted(["large", "7b", "tiny", "0.5b", "base"], key=size_rank) == ["tiny", "base", "large",
                                                                             "0.5b", "7b"]


def test_headline_metric(runs: Path) -> None:
    coll = collect([runs])
    assert headline_metric(coll.groups) == "test/acc"


def test_import_does_not_load_heavy_modules() -> None:
    """`peftbench report` must start instantly on a laptop: no torch, Lightning, matplotlib."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import peftbench.report"],
                          capture_output=True, text=True, check=True)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("import time:")]
    assert lines, proc.stderr
    loaded = {ln.rsplit("|", 1)[-1].strip().split(".")[0] for ln in lines}
    for heavy in ("torch", "lightning", "pytorch_lightning", "transformers", "matplotlib", "numpy"):
        assert heavy not in loaded, f"import peftbench.report imported {heavy}"
    assert not any(ln.rstrip().endswith("| torch") for ln in lines)


def test_results_files_are_valid_json_except_bad_ones() -> None:
    """Guard the fixtures themselves: exactly the two intended bad files are bad."""
    bad = []
    for p in sorted(RUNS.rglob("results.json")):
        try:
            results.validate(json.loads(p.read_text()))
        except (ValueError, results.SchemaError):
            bad.append(p.relative_to(RUNS).as_posix())
    assert bad == [CORRUPT, MISMATCH]


def test_different_configurations_are_never_averaged_as_seeds(tmp_path):
    """`method.r=2,16 seed=1,2` is two rows of two seeds, each labelled by what differs — not one
    "lora" row of four; a different budget is a different row too; seeds alone never split a row."""
    import copy
    import json

    from peftbench.report.collect import collect

    src = sorted(RUNS.rglob("results.json"))
    base = next(r for r in (json.loads(p.read_text()) for p in src) if r["status"] == "ok" and r["method"]["name"] == "lora")
    n = 0
    for r, steps in ((2, 100), (16, 100), (16, 200)):
        for seed in (1, 2):
            rec = copy.deepcopy(base)
            rec["config"] = {**rec["config"], "seed": seed, "method": {"name": "lora", "r": r},
                             "trainer": {"max_steps": steps}, "dataset": {"subset_seed": seed},
                             "paths": {"output_dir": f"/somewhere/{n}"}}
            rec.update(seed=seed, run_id=f"id{n}")
            rec["params"] = {**rec["params"], "trainable": 100 * r}
            (tmp_path / str(n)).mkdir()
            (tmp_path / str(n) / "results.json").write_text(json.dumps(rec))
            n += 1
    groups = {g.method: g for g in collect([tmp_path]).groups}
    assert set(groups) == {"lora [r=2, max_steps=100]", "lora [r=16, max_steps=100]", "lora [r=16, max_steps=200]"}
    for label, g in groups.items():
        assert g.seeds == (1, 2), label
        assert g.params["trainable"].std == 0  # one configuration's count, not a mix of two
    assert groups["lora [r=2, max_steps=100]"].params["trainable"].mean == 200


def test_report_refusals_and_hostile_records(tmp_path):
    """A missing folder is an error (exit 2, nothing written beside it); a record nested deeper than
    Python's stack, or with schema version 0 or -5, is skipped with its reason, not a crash; a
    dataset name with a line break cannot inject a heading into report.md."""
    import copy

    from peftbench.report import build_report

    p = subprocess.run([sys.executable, "-m", "peftbench.cli.main", "report", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no such folder" in p.stderr
    assert not (tmp_path / "report").exists()

    runs = tmp_path / "runs"
    good = next(r for r in (json.loads(f.read_text()) for f in sorted(RUNS.rglob("results.json"))) if r["status"] == "ok")
    for name, rec in (("deep", None), ("v0", {**good, "schema_version": 0}), ("vneg", {**good, "schema_version": -5}),
                      ("inject", copy.deepcopy(good))):
        (runs / name).mkdir(parents=True)
        if rec is None:
            (runs / name / "results.json").write_text("[" * 100_000 + "]" * 100_000)
            continue
        if name == "inject":
            rec["dataset"]["name"] = "sst2\n## injected heading"
        (runs / name / "results.json").write_text(json.dumps(rec))
    res = build_report([runs], tmp_path / "rep", formats=("md",), plots=False)
    assert sorted(Path(s).parent.name for s in res.skipped) == ["deep", "v0", "vneg"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "\n## injected heading" not in md and "sst2 ## injected heading" in md
