"""Reports from results.json files: tables (md/csv/tex/html) and plots.

Imports only the stdlib and ``peftbench.results`` so ``peftbench report`` starts instantly
and runs on a laptop without torch; matplotlib is loaded only when plots are drawn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from peftbench.errors import ConfigError
from peftbench.report.collect import Collection, Failure, Group, Skipped, Stat, collect
from peftbench.report.referee import DEFAULT_REFERENCE, base_method
from peftbench.report.tables import build_tables, failures_csv, to_csv, to_html, to_latex, to_markdown

__all__ = [
    "DEFAULT_REFERENCE",
    "Collection",
    "Failure",
    "Group",
    "ReportResult",
    "Skipped",
    "Stat",
    "build_report",
    "build_tables",
    "collect",
    "to_csv",
    "to_html",
    "to_latex",
    "to_markdown",
]

FORMATS = ("md", "csv", "tex", "html", "svg")  # svg: vector copies of the plots (PNGs are always written)


@dataclass
class ReportResult:
    """What build_report made; the CLI prints ``markdown`` and reports counts."""

    markdown: str
    files: list[Path] = field(default_factory=list)
    n_ok: int = 0
    n_failed: int = 0  # every run whose status is not "ok" (failed, diverged, oom, refused, interrupted)
    skipped: list[Path] = field(default_factory=list)
    collection: Collection | None = None


def _write(path: Path, text: str, files: list[Path]) -> None:
    # newline="\n": identical bytes on every OS, so committed reports do not churn.
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    files.append(path)


def build_report(
    dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None = None,
    formats: Sequence[str] = FORMATS,
    plots: bool = True,
    reference: str | None = None,
) -> ReportResult:
    """Collect every results.json under ``dirs`` and write the report into ``out``.

    ``out`` defaults to ``<first dir>/report/``; ``reference`` names the method every other row is
    tested against (paired, on the same eval examples; default full fine-tuning, where present); a
    comma list ("full,lora") adds tests against the others in a note under each table. Prints nothing: unreadable files are logged
    as warnings (logger ``peftbench.report.collect``) and listed in ``result.skipped``.
    """
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise ValueError("build_report needs at least one directory")
    missing = [str(d) for d in dirs if not d.exists()]
    if missing:  # a typo must not write an empty report beside the folder it meant
        raise ConfigError(f"no such folder: {', '.join(missing)}", option="dirs")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown report format(s) {unknown}; choose from {list(FORMATS)}")
    out_dir = Path(out) if out is not None else (dirs[0] if dirs[0].is_dir() else dirs[0].parent) / "report"

    coll = collect(dirs)
    if not coll.n_files:  # nothing to report: say so, write nothing
        raise ConfigError(f"no results.json under {', '.join(map(str, dirs))}", option="dirs")
    refs = [r.strip() for r in (DEFAULT_REFERENCE if reference is None else reference).split(",")]
    names = sorted({base_method(g) for g in coll.groups})
    problems = ["an empty name"] * any(not r for r in refs)
    problems += [f"'{r}' repeated" for r in dict.fromkeys(r for r in refs if r and refs.count(r) > 1)]
    if reference is not None:
        problems += [f"no such method '{r}'" for r in dict.fromkeys(refs) if r and r not in names]
    if problems:
        raise ConfigError(f"--reference {reference}: {'; '.join(problems)} (methods in these runs: {', '.join(names)})",
                          option="reference")
    tables = build_tables(coll, refs[0], refs[1:])
    files: list[Path] = []
    images: list[Path] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    if plots and coll.groups:
        from peftbench.report.plots import make_plots

        written = make_plots(coll, out_dir / "plots", tables, svg="svg" in formats)
        files += written
        images = [p for p in written if p.suffix == ".png"]
    md = to_markdown(coll, tables, [p.relative_to(out_dir).as_posix() for p in images])
    if "md" in formats:
        _write(out_dir / "report.md", md, files)
    if "csv" in formats:
        _write(out_dir / "report.csv", to_csv(coll, tables), files)
        _write(out_dir / "failures.csv", failures_csv(coll), files)
    if "tex" in formats:
        _write(out_dir / "report.tex", to_latex(coll, tables), files)
    if "html" in formats:
        _write(out_dir / "report.html", to_html(coll, tables, images), files)
    return ReportResult(markdown=md, files=files, n_ok=coll.n_ok, n_failed=len(coll.failures),
                        skipped=[s.path for s in coll.skipped], collection=coll)
