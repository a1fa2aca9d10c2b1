"""Correct the Matthews correlation of run records written before ``lit.tasks.MatthewsCorrCoef``.

Until 2026-12-02 the training metric was torchmetrics' MulticlassMatthewsCorrCoef, whose two-class
edge rule gives a small non-zero value where MCC is undefined (0.035 for a constant predictor on
CoLA's dev set; torchmetrics#3355). GLUE (scikit-learn) scores that 0, and so does the metric now.
This rewrites, in place, every ``*/mcc`` value of a record that its saved per-example predictions
determine (``metrics.val/mcc``, ``metrics.test/mcc``); the untuned base's ``*/mcc_before`` and every
point of an MCC validation curve that is exactly torchmetrics' value for a one-class prediction
(a constant predictor there; other points are untouched: the predictions behind them were not
saved), unless a model predicting both classes could score that same value. Each change
is listed in the record's ``corrections``; a record needing none is not rewritten, so a second pass
changes nothing.

    python scripts/fix_mcc_records.py reports/standard-cpu/runs reports/budget-probe/runs
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

WHY = ("MCC is 0 where undefined (GLUE's convention); torchmetrics 1.x's edge rule gave a non-zero value "
       "(scripts/fix_mcc_records.py)")


def _classes(rec: dict[str, Any], labels: list[int]) -> int:
    names = ((rec.get("config") or {}).get("dataset") or {}).get("label_names")
    return len(names) if isinstance(names, list) and names else max(2, 1 + max(labels, default=0))


def _curve_value(v: float) -> float:
    return float(f"{v:.6g}")  # as run/callbacks.py stores curve points


def _old_constant_values(labels: list[int], k: int) -> set[float]:
    """What torchmetrics said for a predictor answering one class for every example of ``labels``."""
    import torch
    from torchmetrics.classification import MulticlassMatthewsCorrCoef

    t = torch.tensor(labels)
    vals = {float(MulticlassMatthewsCorrCoef(num_classes=k)(torch.full_like(t, c), t)) for c in range(k)}
    return {v for v in vals if v != 0.0}


@functools.cache
def _reachable(n1: int, n0: int) -> frozenset[float]:
    """Every curve value (6 significant digits) a two-class predictor that is not constant can reach on
    ``n1`` positives and ``n0`` negatives: a point equal to one of these is ambiguous, left alone."""
    from peftbench.report import stats

    out = set()
    for tp in range(n1 + 1):
        for tn in range(n0 + 1):
            said_1 = tp + n0 - tn
            if 0 < said_1 < n1 + n0:  # predicts both classes
                out.add(_curve_value(stats.matthews_from_counts(tp + tn, [n1 + n0 - said_1, said_1], [n0, n1])))
    return frozenset(out)


def _fix_curve(rec: dict[str, Any], p: dict[str, Any], out: list[dict[str, Any]]) -> None:
    curve = (rec.get("curves") or {}).get("val") or {}
    if curve.get("metric") != "val/mcc" or not curve.get("subset"):
        return
    labels = [int(b) for i, b in sorted(zip(p["ids"], p["label"])) if int(i) < int(curve["subset"])]
    bad = {_curve_value(v) for v in _old_constant_values(labels, _classes(rec, labels))}
    hits = [pt for pt in curve["points"] if pt[1] in bad]
    if hits and _classes(rec, labels) == 2 and bad & _reachable(labels.count(1), labels.count(0)):
        print(f"  left alone: a model predicting both classes can also score {sorted(bad)} on this subset")
        return
    for pt in hits:
        out.append({"key": f"curves.val.points[step={pt[0]}]", "was": pt[1], "now": 0.0, "why": WHY})
        pt[1] = 0.0


def corrections(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The changes ``rec`` needs (applied to it in place)."""
    from peftbench.report import evidence, stats

    out: list[dict[str, Any]] = []
    for split in ("val", "test"):
        p = evidence.predictions(rec, split)
        if p is None or not isinstance(p.get("pred"), list) or not isinstance(p.get("label"), list):
            continue
        labels = [int(y) for y in p["label"]]
        k = _classes(rec, labels)
        metrics = rec.get("metrics") or {}
        old = metrics.get(f"{split}/mcc")
        if old is not None:
            new = stats.matthews(p["pred"], labels, k)
            if abs(new - float(old)) > 1e-6:
                metrics[f"{split}/mcc"] = new
                out.append({"key": f"metrics.{split}/mcc", "was": old, "now": new, "why": WHY})
        before = metrics.get(f"{split}/mcc_before")  # the untuned base: its predictions are not saved
        if before is not None and any(abs(float(before) - v) < 1e-9 for v in _old_constant_values(labels, k)):
            metrics[f"{split}/mcc_before"] = 0.0
            out.append({"key": f"metrics.{split}/mcc_before", "was": before, "now": 0.0, "why": WHY})
        if split == "val":
            _fix_curve(rec, p, out)
    return out


def main(argv: list[str] | None = None) -> int:
    from peftbench import results
    from peftbench.report.evidence import RUN_DIR

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="run-record folders, searched recursively")
    a = ap.parse_args(argv)
    changed = 0
    for f in sorted(p for d in a.folders for p in d.rglob(results.FILENAME)):
        try:
            rec = results.read(f)
            rec[RUN_DIR] = str(f.parent)  # where the evidence reader finds the predictions; not written back
            fixed = corrections(rec)
            del rec[RUN_DIR]
        except (results.SchemaError, KeyError, TypeError, ValueError) as e:
            print(f"{f}: skipped ({e})", file=sys.stderr)
            continue
        if fixed:
            rec["corrections"] = [*(rec.get("corrections") or []), *fixed]
            results.write(f, rec)
            changed += 1
            print(f"{f}: " + "; ".join(f"{c['key']} {c['was']:.6g} → {c['now']:.6g}" for c in fixed))
    print(f"{changed} record(s) corrected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
