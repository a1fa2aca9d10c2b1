"""report.html in a real headless Chromium (Debian's `chromium` package): the page's script runs,
every table renders its rows, the URL-hash filters and sorting work, and a screenshot is drawn.
Skips when chromium is not installed (CI installs it: apt-get install -y chromium)."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "report_runs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'chromium-profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


class _Tables(HTMLParser):
    """Tables as rendered: header texts and, per body row, its attributes and cells' data-v."""

    def __init__(self):
        super().__init__()
        self.tables: list[dict] = []
        self._in_th = self._in_body = False
        self.ready = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body" and a.get("data-ready") == "1":
            self.ready = True
            self.widest = int(a.get("data-widest") or 0)
        if tag == "table":
            self.tables.append({"headers": [], "rows": []})
        elif tag == "th":
            self._in_th = True
            self.tables[-1]["headers"].append("")
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.tables[-1]["rows"].append({"attrs": a, "v": []})
        elif tag == "td" and self._in_body:
            self.tables[-1]["rows"][-1]["v"].append(a.get("data-v"))

    def handle_endtag(self, tag):
        if tag == "th":
            self._in_th = False
        elif tag == "tbody":
            self._in_body = False

    def handle_data(self, data):
        if self._in_th:
            self.tables[-1]["headers"][-1] += data


def _visible(row) -> bool:
    return "display: none" not in (row["attrs"].get("style") or "")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from peftbench.report import build_report

    out = tmp_path_factory.mktemp("report")
    res = build_report([DATA], out, formats=("html",), plots=True)
    return out / "report.html", res.collection


def _dom(tmp: Path, page: Path, hash_: str = "") -> _Tables:
    p = _chromium(tmp, "--dump-dom", page.resolve().as_uri() + hash_)
    assert p.returncode == 0, p.stderr[-2000:]
    parsed = _Tables()
    parsed.feed(p.stdout)
    assert parsed.ready, "the page's script did not run to the end"
    return parsed


def test_every_table_renders_its_rows(report, tmp_path):
    from peftbench.report import build_tables

    page, coll = report
    html = page.read_text()
    assert "<script src" not in html and "<link" not in html  # self-contained
    assert html.count("data:image/png;base64,") >= 1  # plots embedded
    dom = _dom(tmp_path, page)
    expected = []
    for t in build_tables(coll):  # a result table (rows + baseline rows), then its tuning grids
        expected += [len(t.rows) + len(t.baselines)] + [len(sw.rows) for sw in t.referee.sweeps]
    expected += [len(coll.failures)] if coll.failures else []
    got = [len(t["rows"]) for t in dom.tables]
    assert got == expected and sum(got) >= 6
    assert all(_visible(r) for t in dom.tables for r in t["rows"])


def test_hash_filters_by_method_family_and_sorts(report, tmp_path):
    page, coll = report
    fam = sorted({g.method_family for g in coll.groups})[0]
    dom = _dom(tmp_path, page, f"#family={fam}&sort=-trainable%20params")
    shown = [r for t in dom.tables for r in t["rows"] if _visible(r) and "data-family" in r["attrs"]]
    assert shown and all(r["attrs"]["data-family"] == fam for r in shown)
    hidden = [r for t in dom.tables for r in t["rows"] if not _visible(r)]
    assert len(hidden) == sum(1 for g in coll.groups if g.method_family != fam)
    for t in dom.tables:
        if "trainable params" in t["headers"]:
            i = t["headers"].index("trainable params")
            vals = [float(r["v"][i]) for r in t["rows"] if r["v"][i] is not None]
            assert vals == sorted(vals, reverse=True)


def test_hash_filters_by_model_size_and_dataset(report, tmp_path):
    page, coll = report
    g = coll.groups[0]
    dom = _dom(tmp_path, page, f"#model={g.model_family}&size={g.model_size}&dataset={g.dataset}")
    shown = [r for t in dom.tables for r in t["rows"] if _visible(r)]
    assert shown
    for r in shown:
        assert (r["attrs"]["data-model"], r["attrs"]["data-size"], r["attrs"]["data-dataset"]) == \
            (g.model_family, g.model_size, g.dataset)


def test_screenshot(report, tmp_path):
    page, _ = report
    shot = tmp_path / "report.png"
    p = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", page.resolve().as_uri())
    assert p.returncode == 0, p.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # a blank page compresses to a few KB; tables and plots do not


def _dom_sized(tmp: Path, page: Path, hash_: str = "") -> _Tables:
    p = _chromium(tmp, "--window-size=1280,1600", "--dump-dom", page.resolve().as_uri() + hash_)
    assert p.returncode == 0, p.stderr[-2000:]
    parsed = _Tables()
    parsed.feed(p.stdout)
    assert parsed.ready
    return parsed


@pytest.fixture(scope="module")
def referee_report(tmp_path_factory):
    """The synthetic sweep of test_report_referee (flags of every kind, a tuning grid, baselines)."""
    from peftbench.report import build_report
    from tests.test_report_referee import RUNS, _write_run

    root = tmp_path_factory.mktemp("referee")
    for i, r in enumerate(RUNS):
        _write_run(root / "sweep", i, *r)
    build_report([root / "sweep"], root / "out", formats=("html",), plots=True)
    return root / "out" / "report.html"


def test_fits_a_laptop_screen_and_wide_columns_collapse(report, referee_report, tmp_path):
    """Issue 24: at 1280 px no table is wider than the window; "all columns" (#wide=1) shows the costs."""
    widest = {}
    for page in (report[0], referee_report):
        widest[page] = _dom_sized(tmp_path, page).widest
        assert 0 < widest[page] <= 1280 - 40, f"{page}: widest table {widest[page]}px"
    assert _dom_sized(tmp_path, report[0], "#wide=1").widest > widest[report[0]]


def test_flags_are_badges_with_reasons(referee_report, tmp_path):
    dom = _chromium(tmp_path, "--dump-dom", referee_report.resolve().as_uri())
    assert dom.returncode == 0
    html = dom.stdout
    for code, why in (("baseline", "not significantly above the majority-class rate"),
                      ("constant", "predicts one class for every test example"),
                      ("not_converged", "still improved by"), ("edge", "the optimum may lie beyond it")):
        i = html.index(f'class="badge b-{code}"')
        assert why in html[i: i + 400], code
    parsed = _Tables()
    parsed.feed(html)
    main = parsed.tables[0]
    assert {"tie group", "flags"} <= set(main["headers"]) and any(h.startswith("vs full") for h in main["headers"])
    assert main["rows"][-1]["attrs"].get("class") == "baseline"  # the majority-class row
