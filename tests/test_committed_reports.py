"""Every committed report regenerates from its committed run records, byte for byte.

A number under reports/ is believable only if the records it came from sit beside it: each
`reports/<slug>/` written by `peftbench report` holds its runs under `runs/`, and rerunning the
report on them reproduces its tables exactly. Plot files are compared by name only (their bytes depend
on the installed matplotlib, Pillow and fonts); report.html embeds the PNGs, so its comparison does
pin them, as it has to for a page that claims to regenerate byte for byte.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPORTS = Path(__file__).resolve().parents[1] / "reports"
TABLES = ("report.md", "report.csv", "report.tex", "report.html", "failures.csv")
GENERATED = sorted(p.parent for p in REPORTS.glob("*/report.md"))


def test_there_are_generated_reports() -> None:
    assert GENERATED, f"no generated report under {REPORTS}"


@pytest.mark.parametrize("folder", GENERATED, ids=lambda p: p.name)
def test_report_has_its_records(folder: Path) -> None:
    records = list((folder / "runs").rglob("results.json"))
    assert records, f"{folder.name}: no run records committed under {folder.name}/runs/"


@pytest.mark.parametrize("folder", GENERATED, ids=lambda p: p.name)
def test_report_regenerates_byte_for_byte(folder: Path, tmp_path: Path) -> None:
    if not (folder / "runs").is_dir():
        pytest.fail(f"{folder.name}: no runs/ folder to regenerate from")
    out = tmp_path / folder.name
    cmd = [sys.executable, "-m", "peftbench.cli", "report", str(folder / "runs"), "--out", str(out)]
    cmd += (folder / "report-args").read_text().split() if (folder / "report-args").exists() else []
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=folder.parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in TABLES:
        committed = folder / name
        if committed.exists():
            assert (out / name).read_bytes() == committed.read_bytes(), f"{folder.name}/{name} differs"
    if (folder / "report.tex").exists():  # pdflatex without unicode packages: every symbol escaped
        assert (folder / "report.tex").read_text().isascii(), f"{folder.name}/report.tex has non-ASCII characters"
    plots = {p.name for p in (folder / "plots").glob("*")} if (folder / "plots").is_dir() else set()
    assert {p.name for p in (out / "plots").glob("*")} >= plots
