"""Correct the Matthews correlation of run records written before ``lit.tasks.MatthewsCorrCoef``.

Until 2026-12-02 the training metric was torchmetrics' MulticlassMatthewsCorrCoef, whose two-class
edge rule gives a small non-zero value where MCC is undefined (0.035 for a constant predictor on
CoLA's dev set; torchmetrics#3355). GLUE (scikit-learn) scores that 0, and so does the metric now.
This rewrites, in place, every ``*/mcc`` value of a record that its saved per-example predictions
determine (``metrics.val/mcc``, ``metrics.test/mcc``), and every point of an MCC validation curve
that is exactly torchmetrics' value for a one-class prediction of the curve's subset (a constant
predictor there; other points are untouched: the predictions behind them were not saved). Each change
is listed in the record's ``corrections``; a record needing none is not rewritten, so a second pass
changes nothing.

    python scripts/fix_mcc_records.py reports/standard-cpu/runs reports/budget-probe/runs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

WHY = ("MCC is 0 where undefined (GLUE's convention); torchmetrics 1.x's edge rule gave a non-zero value "
       "(scripts/fix_mcc_records.py)")
TOL = 5e-7  # curve points are stored rounded to 6 decimals


def _classes(rec: dict[str, Any]) -> int | None:
    names = ((rec.get("config") or {}).get("dataset") or {}).get("label_names")
    return len(names) if isinstance(names, list) and names else None


def _old_constant_values(labels: list[int], k: int) -> list[float]:
    """What torchmetrics said for a predictor answering one class for every example of ``labels``."""
    import torch
    from torchmetrics.classification import MulticlassMatthewsCorrCoef

    t = torch.tensor(labels)
    return [float(MulticlassMatthewsCorrCoef(num_classes=k)(torch.full_like(t, c), t)) for c in range(k)]


def corrections(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The changes ``rec`` needs (applied to it in place)."""
    from peftbench.report import evidence, stats

    out: list[dict[str, Any]] = []
    for split in ("val", "test"):
        key, p = f"{split}/mcc", evidence.predictions(rec, split)
        old = (rec.get("metrics") or {}).get(key)
        if old is None or p is None or not isinstance(p.get("pred"), list):
            continue
        new = stats.matthews(p["pred"], p["label"], _classes(rec))
        if abs(new - float(old)) > 1e-6:
            rec["metrics"][key] = new
            out.append({"key": f"metrics.{key}", "was": old, "now": new, "why": WHY})
    curve = (rec.get("curves") or {}).get("val") or {}
    p = evidence.predictions(rec, "val")
    if curve.get("metric") == "val/mcc" and p is not None and curve.get("subset"):
        labels = [int(b) for i, b in sorted(zip(p["ids"], p["label"])) if int(i) < int(curve["subset"])]
        bad = [v for v in _old_constant_values(labels, _classes(rec) or 2) if abs(v) > TOL]
        for pt in curve["points"]:
            if any(abs(pt[1] - v) < TOL for v in bad):
                out.append({"key": f"curves.val.points[step={pt[0]}]", "was": pt[1], "now": 0.0, "why": WHY})
                pt[1] = 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    from peftbench import results
    from peftbench.report.evidence import RUN_DIR

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="run-record folders, searched recursively")
    a = ap.parse_args(argv)
    changed = 0
    for f in sorted(p for d in a.folders for p in d.rglob(results.FILENAME)):
        rec = results.read(f)
        rec[RUN_DIR] = str(f.parent)  # where the evidence reader finds the predictions; not written back
        fixed = corrections(rec)
        del rec[RUN_DIR]
        if fixed:
            rec["corrections"] = [*(rec.get("corrections") or []), *fixed]
            results.write(f, rec)
            changed += 1
            print(f"{f}: " + "; ".join(f"{c['key']} {c['was']:.6g} → {c['now']:.6g}" for c in fixed))
    print(f"{changed} record(s) corrected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
