"""The one-screen summary printed at the end of a run: what trained, what it cost, where it went.

Built from the run record only (the same dict results.json holds), so it shows exactly what was
recorded. Rendered with rich when available (a boxed panel on a terminal, plain text in a log).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, TextIO

from peftbench import results


def _num(x: Any, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.4g}" if abs(x) < 1 else f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def summary_rows(rec: Mapping[str, Any], out: Path | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """Sections of (label, value) rows; every parameter count names its type (DESIGN.md)."""
    from peftbench.measure.params import param_table

    m, meth, ds = rec.get("model") or {}, rec.get("method") or {}, rec.get("dataset") or {}
    run = [("run", f"{m.get('family', '?')} {m.get('size', '?')} + {meth.get('name', '?')} "
                   f"({meth.get('family') or '?'}) on {ds.get('name', '?')}, seed {rec.get('seed')}"),
           ("status", str(rec.get("status")) + (f": {rec['error']}" if rec.get("error") else ""))]
    sections = [("run", run)]
    if rec.get("params"):
        sections.append(("parameters", param_table(rec["params"])))
    mem = rec.get("memory") or {}
    mrows = [(k.removesuffix("_mb").replace("_", " "), f"{v:,.1f}" if isinstance(v, float) else _num(v))
             for k, v in mem.items() if k.startswith("peak") and v is not None]
    if mrows:
        sections.append(("memory (MB)", mrows))
    sp = rec.get("speed") or {}
    keys = ("train_samples_per_s", "train_tokens_per_s", "step_time_median_s", "inference_overhead")
    srows = [(k.replace("_", " "), _num(sp[k])) for k in keys if sp.get(k) is not None]
    if srows:
        sections.append(("throughput", srows))
    if rec.get("metrics"):
        sections.append(("metrics", [(k, f"{v:.4f}" if isinstance(v, float) else str(v))
                                     for k, v in sorted(rec["metrics"].items())]))
    where = []
    if out is not None:
        where.append(("results.json", str(Path(out) / results.FILENAME)))
    adapter = (rec.get("artifacts") or {}).get("adapter_dir")
    if adapter:
        where.append(("adapter", adapter))
        where.append(("export", f"peftbench export {out or Path(adapter).parent} [--merge]"))
    t = (rec.get("timings") or {}).get("total_s")
    if t is not None:
        where.append(("wall time", f"{t:.1f}s"))
    sections.append(("written", where))
    return sections


def render_summary(rec: Mapping[str, Any], out: Path | None = None, stream: TextIO | None = None) -> None:
    """Print the summary to ``stream`` (stdout); rich formatting when rich is installed."""
    stream = stream or sys.stdout
    sections = summary_rows(rec, out)
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:
        lines = []
        for title, rows in sections:
            lines.append(f"-- {title}")
            lines += [f"  {k:<26} {v}" for k, v in rows]
        print("\n".join(lines), file=stream, flush=True)
        return
    table = Table(title="peftbench run summary", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for title, rows in sections:
        table.add_row(f"[cyan]{title}[/cyan]", "")
        for k, v in rows:
            table.add_row(escape(f"  {k}"), escape(v),  # values are text: "[method.r]" is not a markup tag
                          style="red" if title == "run" and k == "status" and rec.get("status") != "ok" else None)
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    # a log file gets full lines (paths must stay copy-pastable); a terminal wraps to its width
    Console(file=stream, soft_wrap=False, width=None if tty else 1000).print(table)
